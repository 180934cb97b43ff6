# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Shared by scale.sh, churn.sh and bench.sh: the tracker in a topology's
# middle namespace, and the kernel's own conntrack on a bridge there.
# Source it; it sets and uses $tracker.

tracker=

# start_tracker BIN PREFIX LOG [ARGS...]: run xdp-conntrack on PREFIXveth1/2
# inside PREFIXfw, pinned under /sys/fs/bpf/PREFIX; wait until it forwards.
start_tracker() {
	local bin=$1 p=$2 log=$3
	shift 3
	"$bin" -1 "${p}veth1" -2 "${p}veth2" --netns "${p}fw" --pin-path "/sys/fs/bpf/$p" \
		-q "$@" 2>"$log" &
	tracker=$!
	for _ in $(seq 200); do
		grep -q forwarding "$log" && return 0
		kill -0 "$tracker" 2>/dev/null || break
		sleep 0.1
	done
	cat "$log" >&2
	return 1
}

# stop_tracker: SIGINT, then wait for it to detach and unpin.
stop_tracker() {
	if [ -n "$tracker" ] && kill -0 "$tracker" 2>/dev/null; then
		kill -INT "$tracker"
		wait "$tracker" || true
	fi
	tracker=
}

# bridge_up PREFIX: join PREFIXveth1/2 with a bridge br0 in PREFIXfw.  A
# veth without XDP takes redirected (XDP_TX'ed) frames only with GRO on.
bridge_up() {
	local p=$1 i
	ip -n "${p}fw" link add br0 type bridge
	for i in 1 2; do
		ip netns exec "${p}fw" ethtool -K "${p}veth$i" gro on >/dev/null
		ip -n "${p}fw" link set "${p}veth$i" master br0
	done
	ip -n "${p}fw" link set br0 up
}

# conntrack_on PREFIX: br_netfilter hands bridged IPv4 to the ip hooks, and
# an nftables ct state rule makes nf_conntrack track every flow.  The
# chain's counter of INVALID packets: `nft list chain ip xdpct xfwd`.
conntrack_on() {
	local p=$1
	ip netns exec "${p}fw" sysctl -qw net.bridge.bridge-nf-call-iptables=1
	ip netns exec "${p}fw" nft -f - <<NFT
table ip xdpct {
	chain xfwd {
		type filter hook forward priority 0; policy accept;
		ct state invalid counter drop
		ct state new,established counter accept
	}
}
NFT
}
