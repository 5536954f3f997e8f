//! TUN ports against real kernel stacks: the kernel of one namespace sends IP packets into a
//! TUN the switch owns, and reaches a host on a TAP port at Ethernet level. Needs root.

use std::net::{Ipv4Addr, Ipv6Addr};

use vswitch_datapath::{PacketPort, PortDevice, Switch, SwitchConfig, Tap, TunConfig, TunPort};
use vswitch_testkit::{Host, ping, require_root, tcp_checksum_errors, tcp_transfer, unique_name};

#[test]
fn a_tun_device_pings_and_moves_tcp_with_a_host_on_a_tap_port() {
    if !require_root("a_tun_device_pings_and_moves_tcp_with_a_host_on_a_tap_port") {
        return;
    }
    tun_to_tap(true);
    tun_to_tap(false);
}

/// With `offload`, TCP crosses the TUN port as segments of up to 64 KiB (virtio-net headers,
/// partial checksums); without, MTU-sized packets. Both must deliver every byte with checksums
/// that the receivers' stacks accept.
fn tun_to_tap(offload: bool) {
    let tun_name = unique_name("vsu");
    let tun = TunPort::open(
        &TunConfig::parse(&format!("{tun_name}=10.77.6.9/24")).expect("spec"),
        offload,
    )
    .expect("tun");
    let tap_name = unique_name("vsa");
    let tap = Tap::open_queues(&tap_name, true, 2).expect("tap");
    let ports: Vec<(String, Box<dyn PortDevice>)> = vec![
        (tun_name.clone(), Box::new(tun)),
        (tap_name.clone(), Box::new(tap)),
    ];
    let switch = Switch::start(
        SwitchConfig {
            threads: 2,
            ..SwitchConfig::default()
        },
        ports,
    )
    .expect("switch");
    // The TUN's kernel side is a host of its own: its packets go through the switch's TUN port.
    let behind_tun = Host::with_link(&tun_name, Ipv4Addr::new(10, 77, 6, 9)).expect("tun host");
    let on_tap = Host::with_link(&tap_name, Ipv4Addr::new(10, 77, 6, 1)).expect("tap host");
    let report = ping(&behind_tun.ns, on_tap.addr, 5);
    assert!(report.all_replied(), "TUN -> TAP: {report}");
    let report = ping(&on_tap.ns, behind_tun.addr, 5);
    assert!(
        report.all_replied(),
        "TAP -> TUN (ARP answered by the port): {report}"
    );
    for (from, to, port) in [(&behind_tun, &on_tap, 5701), (&on_tap, &behind_tun, 5702)] {
        let caught = tcp_checksum_errors(&to.ns);
        let t = tcp_transfer(&from.ns, &to.ns, to.addr, port, 16 << 20).expect("tcp");
        assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
        assert_eq!(
            tcp_checksum_errors(&to.ns),
            caught,
            "offload {offload}: bad checksums"
        );
    }
    let port = switch.port(&tun_name).expect("port");
    let malformed = || -> u64 {
        let counters: std::collections::HashMap<String, u64> =
            port.device().counters().into_iter().collect();
        counters["tun_malformed"]
    };
    assert_eq!(malformed(), 0);
    // Hostile packets into the TUN, written raw by a packet socket on its kernel side: short,
    // of a wrong version, and longer by their header than they are. Each is counted and
    // dropped; the port goes on.
    let raw = behind_tun
        .ns
        .run(|| PacketPort::open(&tun_name))
        .expect("enter")
        .expect("packet socket on the TUN");
    let mut wrong_length = vec![0x45u8; 40];
    wrong_length[2..4].copy_from_slice(&400u16.to_be_bytes());
    for bad in [vec![0x45, 0, 0], vec![0x55; 40], wrong_length] {
        let mut wire = vec![0u8; vswitch_core::VNET_HDR_LEN];
        wire.extend_from_slice(&bad);
        raw.send(&wire).expect("inject");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while malformed() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(malformed(), 3, "each hostile packet counted once");
    assert!(
        ping(&behind_tun.ns, on_tap.addr, 3).all_replied(),
        "and the port goes on"
    );
    let stats = port.counters().snapshot();
    let (rx_avg, tx_avg) = (
        stats.rx_bytes / stats.rx_packets,
        stats.tx_bytes / stats.tx_packets,
    );
    if offload {
        assert!(
            rx_avg > 4000 && tx_avg > 4000,
            "GSO both ways: {rx_avg} and {tx_avg} bytes per frame"
        );
    } else {
        assert!(
            rx_avg <= 1514 && tx_avg <= 1514,
            "MTU-sized: {rx_avg} and {tx_avg} bytes per frame"
        );
    }
    // The TAP host learned the port's own MAC for the TUN's address.
    let mac = port.capabilities().mac.expect("mac");
    assert!(switch.fdb().iter().any(|r| r.key.mac == mac));
}

/// IPv6: the TUN port resolves its next hop by neighbour discovery and answers solicitations
/// for its address, and the switch's own address (a station port) answers ICMPv6 echo; the
/// kernels on both sides are the oracle (they accept only valid ND and echo replies).
#[test]
fn ipv6_through_a_tun_port_and_to_the_switchs_own_address() {
    if !require_root("ipv6_through_a_tun_port_and_to_the_switchs_own_address") {
        return;
    }
    let tun_name = unique_name("vsu");
    let tun = TunPort::open(
        &TunConfig::parse(&format!("{tun_name}=10.77.7.9/24+fd77::9/64")).expect("spec"),
        true,
    )
    .expect("tun");
    let tap_name = unique_name("vsa");
    let tap = Tap::open_queues(&tap_name, true, 2).expect("tap");
    let station = vswitch_datapath::StationPort::new(
        vswitch_datapath::local_mac("ipv6 test self"),
        vec![("fd77::fe".parse().expect("ip"), 64)],
    )
    .expect("station");
    let ports: Vec<(String, Box<dyn PortDevice>)> = vec![
        (tun_name.clone(), Box::new(tun)),
        (tap_name.clone(), Box::new(tap)),
        ("self".into(), Box::new(station)),
    ];
    let switch = Switch::start(SwitchConfig::default(), ports).expect("switch");
    let behind_tun = Host::with_link(&tun_name, Ipv4Addr::new(10, 77, 7, 9)).expect("tun host");
    let on_tap = Host::with_link(&tap_name, Ipv4Addr::new(10, 77, 7, 1)).expect("tap host");
    let (v6_tun, v6_tap, v6_self): (Ipv6Addr, Ipv6Addr, Ipv6Addr) = (
        "fd77::9".parse().expect("ip"),
        "fd77::1".parse().expect("ip"),
        "fd77::fe".parse().expect("ip"),
    );
    behind_tun.add_ipv6(v6_tun).expect("v6");
    on_tap.add_ipv6(v6_tap).expect("v6");
    // The TAP side asks first: only the port's own advertisement can answer it.
    let report = ping(&on_tap.ns, v6_tun, 5);
    assert!(
        report.all_replied(),
        "TAP -> TUN over IPv6 (NS answered by the port): {report}"
    );
    let report = ping(&behind_tun.ns, v6_tap, 5);
    assert!(
        report.all_replied(),
        "TUN -> TAP over IPv6 (NS sent by the port): {report}"
    );
    let report = ping(&on_tap.ns, v6_self, 5);
    assert!(
        report.all_replied(),
        "TAP -> the switch's own IPv6 address: {report}"
    );
    let t = tcp_transfer(&on_tap.ns, &behind_tun.ns, v6_tun, 5711, 4 << 20).expect("tcp");
    assert_eq!(
        (t.received, t.received_digest),
        (t.sent, t.sent_digest),
        "TCP over IPv6"
    );
    drop(switch);
}
