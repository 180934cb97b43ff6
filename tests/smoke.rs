//! The harness itself: the seed handshake through BPF_PROG_TEST_RUN.

mod common;

use std::net::Ipv4Addr;

use common::*;
use xdp_conntrack::packet::{tcp, tcp_flags::*, Endpoint, Ether};
use xdp_conntrack::table::{key_for, IPPROTO_TCP};

#[test]
fn seed_handshake_reaches_established_assured() {
    let h = Harness::default_config();
    let e = Ether::default();
    let c = Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 23420);
    let s = Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080);
    let key = key_for(IPPROTO_TCP, (c.addr, c.port), (s.addr, s.port));
    assert_eq!(h.run(&tcp(&e, c, s, SYN, 100, 0, b"")), XDP_REDIRECT);
    assert_eq!(h.entry(&key).unwrap().0.state, 1);
    assert_eq!(
        h.run(&tcp(&e, s, c, SYN | ACK, 200, 101, b"")),
        XDP_REDIRECT
    );
    assert_eq!(h.entry(&key).unwrap().0.state, 2);
    assert_eq!(h.run(&tcp(&e, c, s, ACK, 101, 201, b"")), XDP_REDIRECT);
    let (conn, _) = h.entry(&key).unwrap();
    assert_eq!(conn.state, 3);
    assert!(conn.assured && conn.seen_reply);
    assert_eq!((conn.src, conn.sport), (c.addr, c.port));
}
