//! Offloads and software segmentation between real kernel stacks: TCP stays byte-exact when a
//! port with offloads (which hands the switch 64 KiB GSO frames) talks to one without (which
//! must get wire-sized frames with complete checksums), over IPv4 and IPv6, in both directions.
//! (Re-cutting for a smaller egress MTU is tested in `vswitch_core::gso`: a kernel sender can't
//! be made to send only GSO frames larger than the receiver's MTU, and the others are rightly
//! dropped as oversize, as the kernel bridge does.)
//! Needs root; skips with a reason otherwise (fails instead under VSWITCH_REQUIRE_PRIV=1).

use std::net::{IpAddr, Ipv6Addr};

use vswitch_core::DropReason;
use vswitch_datapath::SwitchConfig;
use vswitch_testkit::{Attach, SwitchLab, require_root, tcp_transfer};

fn config() -> SwitchConfig {
    SwitchConfig {
        threads: 2,
        ..SwitchConfig::default()
    }
}

const SIZE: u64 = 16 << 20;

/// Mean size of the frames a port received: above the 1514-byte wire limit only if GSO frames
/// came in.
fn mean_rx_frame(lab: &SwitchLab, port: usize) -> u64 {
    let s = lab.port_stats(port);
    s.rx_bytes / s.rx_packets.max(1)
}

/// A switch with host 0 on a TAP with offloads and host 1 on one without.
fn offload_and_plain() -> SwitchLab {
    SwitchLab::with_attachments(
        config(),
        &[
            Attach::Tap { offload: true },
            Attach::Tap { offload: false },
        ],
    )
    .expect("lab")
}

#[test]
fn tcp_is_exact_between_an_offload_tap_and_a_plain_tap_over_ipv4_and_ipv6() {
    if !require_root("tcp_is_exact_between_an_offload_tap_and_a_plain_tap_over_ipv4_and_ipv6") {
        return;
    }
    let lab = offload_and_plain();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let a6: Ipv6Addr = "fd77::1".parse().unwrap();
    let b6: Ipv6Addr = "fd77::2".parse().unwrap();
    a.add_ipv6(a6).expect("IPv6 on a");
    b.add_ipv6(b6).expect("IPv6 on b");
    let cases: [(&str, IpAddr, IpAddr); 2] = [
        ("IPv4", a.addr.into(), b.addr.into()),
        ("IPv6", a6.into(), b6.into()),
    ];
    for (i, (family, a_addr, b_addr)) in cases.into_iter().enumerate() {
        let port = 5101 + 2 * i as u16;
        let to_plain = tcp_transfer(&a.ns, &b.ns, b_addr, port, SIZE).expect("a -> b");
        assert_eq!(
            to_plain.received, SIZE,
            "{family} offload -> plain: bytes lost"
        );
        assert_eq!(
            to_plain.sent_digest, to_plain.received_digest,
            "{family} offload -> plain: bytes changed"
        );
        let from_plain = tcp_transfer(&b.ns, &a.ns, a_addr, port + 1, SIZE).expect("b -> a");
        assert_eq!(
            from_plain.received, SIZE,
            "{family} plain -> offload: bytes lost"
        );
        assert_eq!(
            from_plain.sent_digest, from_plain.received_digest,
            "{family} plain -> offload: bytes changed"
        );
    }
    assert!(
        mean_rx_frame(&lab, 0) > 1514,
        "the offload port should have handed the switch GSO frames (mean {} bytes)",
        mean_rx_frame(&lab, 0)
    );
    let plain = lab.port_stats(1);
    assert!(
        plain.tx_bytes / plain.tx_packets.max(1) <= 1514,
        "the plain port must only get wire-sized frames"
    );
    assert!(
        plain.tx_packets >= 2 * SIZE / 1500,
        "two transfers' worth of segments went out of the plain port ({} frames)",
        plain.tx_packets
    );
    for reason in [DropReason::GsoUnsupported, DropReason::Oversize] {
        assert_eq!(plain.drops(reason), 0, "{reason:?} on the plain port");
    }
}

#[test]
fn udp_gso_trains_are_cut_into_their_datagrams_for_a_plain_tap() {
    use nix::sys::socket::{setsockopt, sockopt::UdpGsoSegment};
    use std::net::UdpSocket;
    if !require_root("udp_gso_trains_are_cut_into_their_datagrams_for_a_plain_tap") {
        return;
    }
    let lab = offload_and_plain();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let receiver =
        b.ns.run(|| UdpSocket::bind((b.addr, 5201)))
            .expect("enter")
            .expect("bind");
    receiver
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .expect("timeout");
    // Room for every datagram: they are read only after the last is sent.
    setsockopt(
        &receiver,
        nix::sys::socket::sockopt::RcvBufForce,
        &(8 << 20),
    )
    .expect("rcvbuf");
    // Resolve b's MAC first, so no train waits for ARP.
    assert!(vswitch_testkit::ping(&a.ns, b.addr, 1).all_replied());
    // 20 trains of 8 datagrams of 1000 bytes, each train handed to the kernel in one send.
    let (trains, per_train, size) = (20usize, 8usize, 1000usize);
    a.ns.run(|| {
        let sock = UdpSocket::bind((a.addr, 0)).expect("bind");
        setsockopt(&sock, UdpGsoSegment, &(size as i32)).expect("UDP_SEGMENT");
        sock.connect((b.addr, 5201)).expect("connect");
        for t in 0..trains {
            let train: Vec<u8> = (0..per_train * size)
                .map(|i| (t * 31 + i / size) as u8)
                .collect();
            sock.send(&train).expect("send train");
        }
    })
    .expect("enter");
    let mut got = Vec::new();
    let mut buf = [0u8; 65_536];
    while let Ok(n) = receiver.recv(&mut buf) {
        if n == size {
            got.push(buf[0]);
            assert!(buf[..n].iter().all(|&x| x == buf[0]), "a datagram mixed up");
        }
        if got.len() == trains * per_train {
            break;
        }
    }
    let want: Vec<u8> = (0..trains)
        .flat_map(|t| (0..per_train).map(move |d| (t * 31 + d) as u8))
        .collect();
    assert_eq!(got, want, "every datagram, whole and in order");
    assert!(
        mean_rx_frame(&lab, 0) > 1514,
        "the offload port should have handed the switch UDP GSO trains (mean {} bytes)",
        mean_rx_frame(&lab, 0)
    );
    assert_eq!(lab.port_stats(1).drops(DropReason::GsoUnsupported), 0);
}
