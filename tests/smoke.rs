//! The smallest end-to-end run: load, attach, one TCP handshake, dump,
//! detach.  CI runs it inside Debian 12's 6.1 kernel as well
//! (`scripts/test-kernels.sh --smoke stable`); here it runs with the rest.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

#[test]
fn load_attach_one_tcp_handshake_dump_detach() {
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).start();
    assert!(xdp_attached(&topo, 1) && xdp_attached(&topo, 2));

    let listener = tcp_listener(&topo);
    let server_addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = tcp_accept(&listener);
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("server read");
        s.write_all(&buf).expect("server echo");
        // Kept open until the dump: a close would move the state on.
        s
    });
    let mut client =
        tcp_connect(&topo, server_addr, Duration::from_secs(5)).expect("connecting through");
    client.write_all(b"hello").expect("client write");
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).expect("reading the echo");
    assert_eq!(&echo, b"hello");
    let server_end = server.join().expect("server thread");

    let client_addr = client.local_addr().unwrap();
    let e = dump_flow(&tracker.pin_path, "tcp", client_addr, server_addr)
        .unwrap_or_else(|| panic!("no tcp entry for {client_addr} -> {server_addr} in the dump"));
    assert!(e.in_state("ESTABLISHED") && e.assured, "{e:?}");

    drop((client, server_end));
    let pins = tracker.pin_path.clone();
    assert_eq!(tracker.stop().code(), Some(0));
    assert!(!xdp_attached(&topo, 1) && !xdp_attached(&topo, 2));
    assert!(!pins.exists(), "{} survives the exit", pins.display());
}
