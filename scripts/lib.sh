# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Shared by scale.sh, churn.sh, bench.sh and bench_csum.sh: the tracker in a topology's
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

# conntrack_on PREFIX: br_netfilter hands bridged IPv4 and IPv6 to the ip
# and ip6 hooks, and an nftables ct state rule (inet: both families) makes
# nf_conntrack track every flow.  The chain's counter of INVALID packets:
# `nft list chain inet xdpct xfwd`.  Neighbour discovery and MLD pass as
# untracked, as the kernel leaves them.
conntrack_on() {
	local p=$1
	ip netns exec "${p}fw" sysctl -qw net.bridge.bridge-nf-call-iptables=1
	ip netns exec "${p}fw" sysctl -qw net.bridge.bridge-nf-call-ip6tables=1
	ip netns exec "${p}fw" nft -f - <<NFT
table inet xdpct {
	chain xfwd {
		type filter hook forward priority 0; policy accept;
		ct state invalid counter drop
		ct state new,established counter accept
	}
}
NFT
}

# The benchmarks' rows (bench.sh, bench_csum.sh): each appends
# "label<TAB>test<TAB>value<TAB>extra" to $RES, on topology $P, with
# scratch files in $OUT and runs of $SECS seconds.

# set_mtu MTU: all four veth ends of topology $P.
set_mtu() {
	local i
	for i in 1 2; do
		ip -n "${P}ns$i" link set eth0 mtu "$1"
		ip -n "${P}fw" link set "${P}veth$i" mtu "$1"
	done
}

# One iperf3 run to ns2's IPv4 address; appends
# "path<TAB>test<TAB>value<TAB>extra" to RES.
iperf() { # path test args...
	iperf_to 10.0.0.2 "$@"
}

# The same to ns2's IPv6 address.
iperf6() { # path test args...
	iperf_to fd00::2 "$@"
}

iperf_to() { # address path test args...
	local dst=$1 path=$2 test=$3
	shift 3
	local json=$OUT/iperf.json
	ip netns exec "${P}ns1" iperf3 -c "$dst" -t "$SECS" -J "$@" >"$json" || true
	/usr/bin/python3 - "$json" "$path" "$test" >>"$RES" <<'EOF'
import json, sys
path, test = sys.argv[2], sys.argv[3]
try:
    end = json.load(open(sys.argv[1]))["end"]
except Exception:
    print(f"{path}\t{test}\t0\tfailed"); sys.exit()
if "sum_received" in end:  # TCP
    print(f"{path}\t{test}\t{end['sum_received']['bits_per_second'] / 1e9:.3f}\t"
          f"{end['sum_sent'].get('retransmits', 0)}")
else:  # UDP: the receiver's rate and loss
    s = end["sum"]
    print(f"{path}\t{test}\t{s['bits_per_second'] / 1e9:.3f}\t{s['lost_percent']:.2f}")
EOF
}

# small_run BIN LABEL TEST THREADS SPORT [FAMILY]: one flood of the
# smallest TCP frames (plain ACKs of 1000 established connections: 64 bytes
# with IPv4, 74 with IPv6, FAMILY 6) from the generator in ${P}ns1 to the
# sinks in ${P}ns2; the row's value is Mpps delivered, extra the loss %.
small_run() {
	local bin=$1 label=$2 test=$3 threads=$4 sport=$5 family=${6:-4}
	local addrs=(--client 10.0.0.1 --server 10.0.0.2)
	[ "$family" = 6 ] && addrs=(--client fd00::1 --server fd00::2)
	"$bin" handshake --client-ns "${P}ns1" --server-ns "${P}ns2" -q \
		"${addrs[@]}" --sport "$sport" \
		--count 1000 --flood $((3000 * threads)) --rate max \
		--threads "$threads" >"$OUT/small.txt"
	awk -v path="$label" -v test="$test" '$2 == "DATA" {
		printf "%s\t%s\t%.3f\t%.2f\n", path, test, $6 / $8 / 1e6, ($4 - $6) * 100 / $4
	}' "$OUT/small.txt" >>"$RES"
}
