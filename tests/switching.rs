//! End-to-end switching between real kernel stacks: namespaces joined by TAPs of a running
//! switch. Needs root; skips with a reason otherwise (fails instead under VSWITCH_REQUIRE_PRIV=1).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vswitch_core::{DropReason, TableConfig};
use vswitch_datapath::SwitchConfig;
use vswitch_testkit::{
    Attach, EchoOptions, SwitchLab, ping, ping_with, require_cpus, require_root, tcp_transfer,
};

fn config() -> SwitchConfig {
    SwitchConfig {
        threads: 2,
        ..SwitchConfig::default()
    }
}

/// Polls `cond` every 100 ms for up to `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

#[test]
fn two_hosts_ping_and_move_50_mb_over_tcp_intact() {
    if !require_root("two_hosts_ping_and_move_50_mb_over_tcp_intact") {
        return;
    }
    let lab = SwitchLab::new(2, config(), Attach::Tap { offload: true }).expect("lab");
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert!(ping(&a.ns, b.addr, 3).all_replied(), "a -> b");
    assert!(ping(&b.ns, a.addr, 3).all_replied(), "b -> a");
    let size = 50 << 20;
    let t = tcp_transfer(&a.ns, &b.ns, b.addr, 5001, size).expect("transfer");
    assert_eq!(t.sent, size);
    assert_eq!(t.received, size, "bytes lost or added");
    assert_eq!(t.sent_digest, t.received_digest, "bytes corrupted");
    // Every payload byte crossed the switch: a's port received it, b's port sent it.
    assert!(lab.port_stats(0).rx_bytes > size);
    assert!(lab.port_stats(1).tx_bytes > size);
}

#[test]
fn veth_ports_ping_and_move_50_mb_over_tcp_intact() {
    if !require_root("veth_ports_ping_and_move_50_mb_over_tcp_intact") {
        return;
    }
    // The veth ends carry GSO segments and partial checksums: the packet sockets must pass them.
    let lab = SwitchLab::new(2, config(), Attach::Veth).expect("lab");
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert!(ping(&a.ns, b.addr, 3).all_replied(), "a -> b");
    assert!(ping(&b.ns, a.addr, 3).all_replied(), "b -> a");
    let size = 50 << 20;
    let t = tcp_transfer(&b.ns, &a.ns, a.addr, 5003, size).expect("transfer");
    assert_eq!(t.received, size, "bytes lost or added");
    assert_eq!(t.sent_digest, t.received_digest, "bytes corrupted");
    assert!(lab.port_stats(1).rx_bytes > size);
    assert!(lab.port_stats(0).tx_bytes > size);
}

#[test]
fn tcp_is_intact_without_offloads_too() {
    if !require_root("tcp_is_intact_without_offloads_too") {
        return;
    }
    let lab = SwitchLab::new(2, config(), Attach::Tap { offload: false }).expect("lab");
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let t = tcp_transfer(&a.ns, &b.ns, b.addr, 5004, 20 << 20).expect("transfer");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
}

#[test]
fn a_veth_port_whose_namespace_is_deleted_is_removed() {
    if !require_root("a_veth_port_whose_namespace_is_deleted_is_removed") {
        return;
    }
    let mut lab = SwitchLab::new(3, config(), Attach::Veth).expect("lab");
    assert!(ping(&lab.hosts[0].ns, lab.hosts[2].addr, 1).all_replied());
    drop(lab.hosts.pop()); // the veth pair dies with the namespace
    let gone = &lab.switch.ports()[2];
    assert!(
        eventually(Duration::from_secs(5), || gone.is_gone()),
        "port not removed"
    );
    assert!(ping(&lab.hosts[0].ns, lab.hosts[1].addr, 3).all_replied());
}

#[test]
fn four_hosts_reach_each_other_all_pairs_both_ways() {
    if !require_root("four_hosts_reach_each_other_all_pairs_both_ways") {
        return;
    }
    let lab = SwitchLab::new(4, config(), Attach::Tap { offload: true }).expect("lab");
    for (i, from) in lab.hosts.iter().enumerate() {
        for (j, to) in lab.hosts.iter().enumerate() {
            if i != j {
                assert!(
                    ping(&from.ns, to.addr, 2).all_replied(),
                    "host {i} can't reach host {j}"
                );
            }
        }
    }
    let stats = lab.switch.table_stats();
    assert_eq!(stats.learned, 4, "one entry per host");
    assert_eq!(lab.switch.fdb().len(), 4);
}

#[test]
fn learned_unicast_does_not_reach_a_third_port() {
    if !require_root("learned_unicast_does_not_reach_a_third_port") {
        return;
    }
    let lab = SwitchLab::new(3, config(), Attach::Tap { offload: true }).expect("lab");
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert!(ping(&a.ns, b.addr, 2).all_replied() && ping(&b.ns, a.addr, 2).all_replied());
    let before = lab.port_stats(2);
    let b_before = lab.port_stats(1);
    let t = tcp_transfer(&a.ns, &b.ns, b.addr, 5002, 5 << 20).expect("transfer");
    assert_eq!(t.received_digest, t.sent_digest);
    let after = lab.port_stats(2);
    assert_eq!(
        after.tx_packets, before.tx_packets,
        "unicast leaked to the third port"
    );
    assert!(lab.port_stats(1).tx_bytes > b_before.tx_bytes + (5 << 20));
}

#[test]
fn broadcast_reaches_every_other_port_but_not_the_sender() {
    if !require_root("broadcast_reaches_every_other_port_but_not_the_sender") {
        return;
    }
    let lab = SwitchLab::new(4, config(), Attach::Tap { offload: true }).expect("lab");
    let before: Vec<_> = (0..4).map(|i| lab.port_stats(i)).collect();
    // Nobody has 10.77.0.99: host 0 broadcasts ARP requests for it.
    assert!(ping(&lab.hosts[0].ns, Ipv4Addr::new(10, 77, 0, 99), 1).none_replied());
    for (i, before) in before.iter().enumerate().skip(1) {
        assert!(
            lab.port_stats(i).tx_packets > before.tx_packets,
            "ARP broadcast missed port {i}"
        );
    }
    assert_eq!(
        lab.port_stats(0).tx_packets,
        before[0].tx_packets,
        "flooded back to the sender"
    );
    assert!(lab.port_stats(0).rx_packets > before[0].rx_packets);
}

#[test]
fn silent_macs_age_out_and_unicast_floods_again() {
    if !require_root("silent_macs_age_out_and_unicast_floods_again") {
        return;
    }
    let cfg = SwitchConfig {
        table: TableConfig {
            ageing_time: Duration::from_secs(2),
            ..TableConfig::default()
        },
        ..config()
    };
    let lab = SwitchLab::new(3, cfg, Attach::Tap { offload: true }).expect("lab");
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert!(ping(&a.ns, b.addr, 1).all_replied());
    let fdb = lab.switch.fdb();
    let mac_b = b.mac().expect("mac");
    let entry = fdb
        .iter()
        .find(|row| row.key.mac.to_string() == mac_b)
        .expect("b learned");
    assert_eq!(
        entry.port,
        lab.switch.ports()[1].name(),
        "b learned on its own port"
    );
    // Both age out. (A host's ARP probe may learn one again meanwhile; it ages out in turn.)
    assert!(
        eventually(Duration::from_secs(15), || lab.switch.table_stats().aged
            >= 2
            && lab.switch.fdb().is_empty()),
        "entries not aged after 15 s: {:?}",
        lab.switch.fdb()
    );
    // a still knows b's MAC (ARP cache) and sends unicast; the switch no longer does: it floods.
    let before = lab.port_stats(2);
    assert!(ping(&a.ns, b.addr, 1).all_replied());
    assert!(
        lab.port_stats(2).tx_packets > before.tx_packets,
        "unknown unicast was not flooded"
    );
}

#[test]
fn a_raised_mtu_takes_effect_with_the_first_frame_that_needs_it() {
    if !require_root("a_raised_mtu_takes_effect_with_the_first_frame_that_needs_it") {
        return;
    }
    // A housekeeping tick (1 s) must not be what lets the first jumbo frame through.
    for attach in [Attach::Tap { offload: true }, Attach::Veth] {
        let lab = SwitchLab::new(2, config(), attach).expect("lab");
        let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
        assert!(ping(&a.ns, b.addr, 1).all_replied());
        if attach == Attach::Veth {
            // The switch's own veth ends need the MTU too, as on a bridge.
            let nl = &mut vswitch_netns::Netlink::open().expect("netlink");
            for port in lab.switch.ports() {
                nl.set_mtu(port.name(), 9000).expect("outer mtu");
            }
        }
        a.set_mtu(9000).expect("mtu");
        b.set_mtu(9000).expect("mtu");
        let jumbo = EchoOptions {
            count: 3,
            payload: 8972,
            interval: Duration::from_millis(10),
            ..EchoOptions::default()
        };
        let report = ping_with(&a.ns, b.addr, jumbo);
        // The switch dropped none for size, either way (before the fix all three were dropped
        // as oversize until the next housekeeping tick). One probe may still be lost to the
        // sender's own route catching up with its new MTU on a loaded machine.
        for port in 0..2 {
            assert_eq!(
                lab.port_stats(port).drops(DropReason::Oversize),
                0,
                "{attach:?}: port {port}"
            );
        }
        assert!(report.received >= 2, "{attach:?}: {report}");
    }
}

#[test]
fn frames_over_the_egress_mtu_are_dropped_and_counted() {
    if !require_root("frames_over_the_egress_mtu_are_dropped_and_counted") {
        return;
    }
    let lab = SwitchLab::new(3, config(), Attach::Tap { offload: true }).expect("lab");
    let (a, b, c) = (&lab.hosts[0], &lab.hosts[1], &lab.hosts[2]);
    a.set_mtu(9000).expect("mtu");
    b.set_mtu(9000).expect("mtu");
    assert!(
        eventually(Duration::from_secs(5), || lab.switch.ports()[..2]
            .iter()
            .all(|p| p.mtu() == 9000)),
        "switch did not see the new MTUs"
    );
    // 8000 bytes of payload with DF: fits MTU 9000, not 1500.
    let jumbo = EchoOptions {
        count: 2,
        payload: 8000,
        ..EchoOptions::default()
    };
    assert!(
        ping_with(&a.ns, b.addr, jumbo).all_replied(),
        "jumbo a -> b"
    );
    assert!(
        ping(&a.ns, c.addr, 1).all_replied(),
        "a -> c with small frames"
    );
    let before = lab.port_stats(2).drops(DropReason::Oversize);
    assert!(
        ping_with(&a.ns, c.addr, jumbo).none_replied(),
        "c's MTU is 1500"
    );
    assert!(lab.port_stats(2).drops(DropReason::Oversize) >= before + 2);
}

#[test]
fn a_port_whose_namespace_is_deleted_is_removed_and_the_rest_keeps_forwarding() {
    if !require_root("a_port_whose_namespace_is_deleted_is_removed_and_the_rest_keeps_forwarding") {
        return;
    }
    let mut lab = SwitchLab::new(3, config(), Attach::Tap { offload: true }).expect("lab");
    assert!(ping(&lab.hosts[0].ns, lab.hosts[2].addr, 1).all_replied());
    drop(lab.hosts.pop()); // deletes the namespace and with it the TAP
    let gone = &lab.switch.ports()[2];
    assert!(
        eventually(Duration::from_secs(5), || gone.is_gone()),
        "port not removed"
    );
    assert!(
        lab.switch.fdb().iter().all(|row| row.port != gone.name()),
        "MACs of the removed port remain"
    );
    assert!(ping(&lab.hosts[0].ns, lab.hosts[1].addr, 3).all_replied());
    assert!(ping(&lab.hosts[1].ns, lab.hosts[0].addr, 3).all_replied());
}

#[test]
fn taps_get_a_queue_per_worker() {
    if !require_root("taps_get_a_queue_per_worker") {
        return;
    }
    use vswitch_datapath::{PortDevice, Tap};
    let name = vswitch_testkit::unique_name("vsq");
    let tap = Tap::open_queues(&name, true, 2).expect("tap");
    assert_eq!(tap.capabilities().rx_queues, 2);
    let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/tun_flags")).expect("sysfs");
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).expect("hex");
    assert_ne!(flags & 0x0100, 0, "IFF_MULTI_QUEUE not set: {flags:#x}");
    assert_ne!(flags & 0x4000, 0, "IFF_VNET_HDR not set: {flags:#x}");
    drop(tap);
    assert!(
        !std::path::Path::new("/sys/class/net").join(&name).exists(),
        "TAP left behind"
    );
}

/// An IPv4/UDP frame from port `sport`, enough for the kernel's flow hash.
fn udp_frame(sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; vswitch_core::VNET_HDR_LEN];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&[0x13, 0x88, 0, 8, 0, 0]);
    f
}

#[test]
fn a_dev_port_spreads_flows_over_its_sockets_and_reads_each_frame_once() {
    use vswitch_datapath::{PacketPort, PortDevice, Steering};
    if !require_root("a_dev_port_spreads_flows_over_its_sockets_and_reads_each_frame_once") {
        return;
    }
    let (a, b) = (
        vswitch_testkit::unique_name("vsf"),
        vswitch_testkit::unique_name("vsf"),
    );
    vswitch_netns::Netlink::open()
        .and_then(|mut nl| nl.add_veth(&a, &b, None))
        .expect("veth");
    let _guard = vswitch_netns::LinkGuard::new(&a);
    let port = PacketPort::open_queues(&a, 2, Steering::Flow).expect("open a");
    let sender = PacketPort::open(&b).expect("open b");
    assert_eq!(port.capabilities().rx_queues, 2);
    // The pair's carrier comes up a moment after both ends are up.
    assert!(
        eventually(Duration::from_secs(3), || sender
            .send(&udp_frame(999))
            .is_ok()),
        "the veth pair never came up"
    );
    std::thread::sleep(Duration::from_millis(100));
    for q in 0..2 {
        while port.recv(q, &mut vec![0u8; 65_536]).is_ok() {}
    }
    let flows = 200u16;
    for sport in 0..flows {
        sender.send(&udp_frame(1000 + sport)).expect("send");
    }
    // Read both sockets until every frame came (or 2 s passed), then once more for duplicates.
    let mut per_queue = [0u32; 2];
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last_pass = false;
    loop {
        for (q, count) in per_queue.iter_mut().enumerate() {
            while let Ok(n) = port.recv(q, &mut buf) {
                // Only our frames: IPv6 router solicitations and the like may come by too.
                if n > 40 && buf[10 + 23] == 17 {
                    *count += 1;
                }
            }
        }
        if last_pass {
            break;
        }
        last_pass = per_queue[0] + per_queue[1] >= u32::from(flows) || Instant::now() > deadline;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        per_queue[0] + per_queue[1],
        u32::from(flows),
        "each frame read exactly once: {per_queue:?}"
    );
    assert!(
        per_queue.iter().all(|&c| c > u32::from(flows) / 10),
        "flows spread over both sockets: {per_queue:?}"
    );
}

#[test]
fn flow_steering_moves_tcp_intact_over_taps_and_veths() {
    if !require_root("flow_steering_moves_tcp_intact_over_taps_and_veths") {
        return;
    }
    let config = SwitchConfig {
        steering: vswitch_datapath::Steering::Flow,
        ..config()
    };
    for attach in [Attach::Tap { offload: true }, Attach::Veth] {
        let lab = SwitchLab::new(2, config.clone(), attach).expect("lab");
        let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
        assert!(ping(&a.ns, b.addr, 2).all_replied(), "{attach:?}: a -> b");
        let t = tcp_transfer(&a.ns, &b.ns, b.addr, 5021, 16 << 20).expect("transfer");
        assert_eq!(
            (t.received, t.received_digest),
            (t.sent, t.sent_digest),
            "{attach:?}"
        );
    }
}

/// From `host` (address 10.77.`net`.1), 20 broadcast datagrams from CPU 0 to port 7000 and 20
/// from CPU 1 to port 7001: broadcasts need no ARP.
fn send_from_each_cpu(host: &vswitch_testkit::Host, net: u8) {
    use std::net::UdpSocket;
    for cpu in 0..2u16 {
        host.ns
            .run(|| {
                let mut set = nix::sched::CpuSet::new();
                set.set(usize::from(cpu)).expect("cpu set");
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin");
                let sock = UdpSocket::bind((Ipv4Addr::new(10, 77, net, 1), 0)).expect("bind");
                sock.set_broadcast(true).expect("broadcast");
                for _ in 0..20 {
                    sock.send_to(b"steer", (Ipv4Addr::new(10, 77, net, 255), 7000 + cpu))
                        .expect("send");
                }
            })
            .expect("enter");
    }
}

/// How many of [`send_from_each_cpu`]'s datagrams each of `device`'s two queues holds, by
/// sending CPU: `[queue][cpu]`.
fn datagrams_by_queue_and_cpu(device: &dyn vswitch_datapath::PortDevice) -> [[u32; 2]; 2] {
    std::thread::sleep(Duration::from_millis(100));
    let mut seen = [[0u32; 2]; 2];
    let mut buf = vec![0u8; 65_536];
    for (queue, row) in seen.iter_mut().enumerate() {
        while let Ok(n) = device.recv(queue, &mut buf) {
            // virtio-net header, Ethernet, IPv4 without options, then the UDP ports.
            let f = &buf[10..n];
            if f.len() >= 38 && f[12..14] == [0x08, 0x00] && f[23] == 17 {
                let port = u16::from_be_bytes([f[36], f[37]]);
                if let Some(cpu) = port.checked_sub(7000).filter(|&c| c < 2) {
                    row[usize::from(cpu)] += 1;
                }
            }
        }
    }
    seen
}

/// A two-queue TAP steered by CPU, moved into a host with address 10.77.`net`.1.
fn steered_tap(net: u8) -> (vswitch_datapath::Tap, vswitch_testkit::Host) {
    use vswitch_datapath::{CpuSteering, Tap};
    let name = vswitch_testkit::unique_name("vsq");
    let tap = Tap::open_queues(&name, true, 2).expect("tap");
    tap.steer_by_cpu().expect("steering program");
    let host = vswitch_testkit::Host::with_link(&name, std::net::Ipv4Addr::new(10, 77, net, 1))
        .expect("host");
    (tap, host)
}

#[test]
fn cpu_steering_puts_what_each_cpu_sends_in_that_cpus_queue() {
    if !require_root("cpu_steering_puts_what_each_cpu_sends_in_that_cpus_queue")
        || !require_cpus(
            "cpu_steering_puts_what_each_cpu_sends_in_that_cpus_queue",
            2,
        )
    {
        return;
    }
    let (tap, host) = steered_tap(9);
    send_from_each_cpu(&host, 9);
    assert_eq!(
        datagrams_by_queue_and_cpu(&tap),
        [[20, 0], [0, 20]],
        "[queue][sending cpu]"
    );
}

/// Sends `count` datagrams on `sock` (connected, so its frames carry the socket's flow hash)
/// from a thread on `cpu`.
fn send_flow_from(sock: &std::net::UdpSocket, cpu: usize, count: usize) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu).expect("cpu set");
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin");
            for _ in 0..count {
                sock.send(b"flow").expect("send");
            }
        });
    });
}

/// Reads `device`'s two queues empty and counts the datagrams to port 7100 in each.
fn flow_datagrams_per_queue(device: &dyn vswitch_datapath::PortDevice) -> [u32; 2] {
    let mut seen = [0u32; 2];
    let mut buf = vec![0u8; 65_536];
    for (queue, count) in seen.iter_mut().enumerate() {
        while let Ok(n) = device.recv(queue, &mut buf) {
            let f = &buf[10..n];
            if f.len() >= 38 && f[12..14] == [0x08, 0x00] && f[23] == 17 && f[36..38] == [27, 188] {
                *count += 1;
            }
        }
    }
    seen
}

#[test]
fn cpu_steering_moves_a_flow_off_its_queue_only_once_that_queue_was_drained() {
    use vswitch_datapath::CpuSteering;
    if !require_root("cpu_steering_moves_a_flow_off_its_queue_only_once_that_queue_was_drained")
        || !require_cpus(
            "cpu_steering_moves_a_flow_off_its_queue_only_once_that_queue_was_drained",
            2,
        )
    {
        return;
    }
    let (tap, host) = steered_tap(7);
    // A fresh flow per attempt: an attempt whose pause overran 10 ms, after
    // which a flow moves regardless, proves nothing and is tried again.
    for _ in 0..5 {
        // One socket: one flow (its hash), whichever CPU sends.
        let sock = host
            .ns
            .run(|| std::net::UdpSocket::bind("10.77.7.1:0"))
            .expect("enter")
            .expect("bind");
        sock.set_broadcast(true).expect("broadcast");
        sock.connect("10.77.7.255:7100").expect("connect");
        send_flow_from(&sock, 0, 5);
        let paused = Instant::now();
        std::thread::sleep(Duration::from_millis(3));
        send_flow_from(&sock, 1, 5);
        if paused.elapsed() >= Duration::from_millis(10) {
            let _ = flow_datagrams_per_queue(&tap);
            continue;
        }
        // No worker said queue 0 was drained: the flow's first frames may still be there, so
        // what CPU 1 sends must queue up behind them.
        assert_eq!(
            flow_datagrams_per_queue(&tap),
            [10, 0],
            "an undrained queue keeps its flow"
        );
        // A worker reports queue 0 drained (as after reading it empty): the flow may follow
        // its sender to CPU 1's queue.
        tap.queue_drained(0, vswitch_datapath::steering_clock_ns());
        std::thread::sleep(Duration::from_millis(3));
        send_flow_from(&sock, 1, 5);
        assert_eq!(
            flow_datagrams_per_queue(&tap),
            [0, 5],
            "a drained queue lets the flow go"
        );
        return;
    }
    panic!("every pause overran 10 ms: the machine is too loaded to check this");
}

#[test]
fn cpu_steering_on_a_dev_port_reads_what_each_cpu_sends_from_that_cpus_socket() {
    use std::net::UdpSocket;
    use vswitch_datapath::{CpuSteering, PacketPort, Steering};
    if !require_root("cpu_steering_on_a_dev_port_reads_what_each_cpu_sends_from_that_cpus_socket")
        || !require_cpus(
            "cpu_steering_on_a_dev_port_reads_what_each_cpu_sends_from_that_cpus_socket",
            2,
        )
    {
        return;
    }
    let (outer, inner) = (
        vswitch_testkit::unique_name("vsr"),
        vswitch_testkit::unique_name("vsr"),
    );
    vswitch_netns::Netlink::open()
        .and_then(|mut nl| nl.add_veth(&outer, &inner, None))
        .expect("veth");
    let _guard = vswitch_netns::LinkGuard::new(&outer);
    let port = PacketPort::open_queues(&outer, 2, Steering::Cpu).expect("open");
    port.steer_by_cpu()
        .expect("a steering program on the fanout group");
    let host = vswitch_testkit::Host::with_link(&inner, Ipv4Addr::new(10, 77, 8, 1)).expect("host");
    assert!(
        eventually(Duration::from_secs(3), || host
            .ns
            .run(|| UdpSocket::bind("10.77.8.1:0")
                .and_then(|s| {
                    s.set_broadcast(true)?;
                    s.send_to(b"up?", "10.77.8.255:6999")
                })
                .is_ok())
            .unwrap_or(false)),
        "the veth pair never came up"
    );
    let _ = datagrams_by_queue_and_cpu(&port); // what came before
    send_from_each_cpu(&host, 8);
    assert_eq!(
        datagrams_by_queue_and_cpu(&port),
        [[20, 0], [0, 20]],
        "[socket][sending cpu]"
    );
}

/// A raw-frame endpoint inside `host`: a packet socket on its interface (which carries
/// virtio-net headers, all zero here).
fn raw_endpoint(host: &vswitch_testkit::Host) -> vswitch_datapath::PacketPort {
    host.ns
        .run(|| vswitch_datapath::PacketPort::open(&host.ifname))
        .expect("enter")
        .expect("packet socket")
}

/// The first frame `endpoint` receives within 3 s that carries `marker`, without its
/// virtio-net header.
fn receive_marked(endpoint: &vswitch_datapath::PacketPort, marker: &[u8]) -> Option<Vec<u8>> {
    use vswitch_datapath::PortDevice;
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        match endpoint.recv(0, &mut buf) {
            Ok(n) if buf[10..n].windows(marker.len()).any(|w| w == marker) => {
                return Some(buf[10..n].to_vec());
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

#[test]
fn vlan_tags_cross_tap_and_veth_ports_intact() {
    use vswitch_datapath::PortDevice;
    if !require_root("vlan_tags_cross_tap_and_veth_ports_intact") {
        return;
    }
    // The kernel takes the tag out of every frame a veth receives (into the skb) before a
    // packet socket sees it; the switch must put it back, as `tun` does for TAPs.
    let lab = SwitchLab::with_attachments(
        config(),
        &[Attach::Veth, Attach::Veth, Attach::Tap { offload: true }],
    )
    .expect("lab");
    let endpoints: Vec<_> = lab.hosts.iter().map(raw_endpoint).collect();
    for (from, tag) in [(0usize, [0x81, 0x00, 0x00, 42]), (2, [0x88, 0xa8, 0x20, 7])] {
        let marker = format!("vlan test from host {from}");
        let mut frame = vec![0u8; 10]; // virtio-net header: nothing to offload
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x10 + from as u8]);
        frame.extend_from_slice(&tag);
        frame.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        frame.extend_from_slice(marker.as_bytes());
        frame.resize(10 + 64, 0);
        endpoints[from].send(&frame).expect("send");
        for (to, endpoint) in endpoints.iter().enumerate().filter(|&(to, _)| to != from) {
            let got = receive_marked(endpoint, marker.as_bytes())
                .unwrap_or_else(|| panic!("host {to} got nothing from host {from}"));
            assert_eq!(got[12..16], tag, "the tag, host {from} -> host {to}");
            assert_eq!(
                got[..],
                frame[10..10 + got.len()],
                "host {from} -> host {to}"
            );
        }
    }
}

/// Sends `count` 64-byte broadcast datagrams to port 7300 from `host` (10.77.`net`.1), as fast
/// as one thread can.
fn flood_from(host: &vswitch_testkit::Host, net: u8, count: usize) {
    host.ns
        .run(|| {
            let sock = std::net::UdpSocket::bind((std::net::Ipv4Addr::new(10, 77, net, 1), 0))?;
            sock.set_broadcast(true)?;
            for _ in 0..count {
                sock.send_to(
                    &[0u8; 64],
                    (std::net::Ipv4Addr::new(10, 77, net, 255), 7300),
                )?;
            }
            Ok::<(), std::io::Error>(())
        })
        .expect("enter")
        .expect("flood");
}

/// Reads `device`'s first queue empty and counts the datagrams to port 7300.
fn flood_datagrams_read(device: &dyn vswitch_datapath::PortDevice) -> u64 {
    let mut buf = vec![0u8; 65_536];
    let mut seen = 0;
    while let Ok(n) = device.recv(0, &mut buf) {
        let f = &buf[10..n];
        if f.len() >= 38 && f[23] == 17 && f[36..38] == [0x1c, 0x84] {
            seen += 1;
        }
    }
    seen
}

#[test]
fn frames_a_full_tap_ring_or_socket_buffer_drops_are_counted() {
    use vswitch_datapath::{PacketPort, PortDevice, Tap};
    if !require_root("frames_a_full_tap_ring_or_socket_buffer_drops_are_counted") {
        return;
    }
    // A TAP nobody reads: its ring holds txqueuelen frames, the rest are dropped.
    let name = vswitch_testkit::unique_name("vsk");
    let tap = Tap::open(&name, true).expect("tap");
    let host = vswitch_testkit::Host::with_link(&name, std::net::Ipv4Addr::new(10, 77, 6, 1))
        .expect("host");
    flood_from(&host, 6, 3000);
    let read = flood_datagrams_read(&tap);
    let dropped = tap.ring_drops().expect("ring drops");
    assert!(read > 0 && dropped > 0, "read {read}, dropped {dropped}");
    assert_eq!(
        read + dropped,
        3000,
        "every datagram was either queued or dropped"
    );

    // A packet socket nobody reads: its 16 MiB buffer fills, the rest are dropped.
    let (outer, inner) = (
        vswitch_testkit::unique_name("vsk"),
        vswitch_testkit::unique_name("vsk"),
    );
    vswitch_netns::Netlink::open()
        .and_then(|mut nl| nl.add_veth(&outer, &inner, None))
        .expect("veth");
    let _guard = vswitch_netns::LinkGuard::new(&outer);
    let port = PacketPort::open(&outer).expect("packet port");
    let host = vswitch_testkit::Host::with_link(&inner, std::net::Ipv4Addr::new(10, 77, 5, 1))
        .expect("host");
    let _ = (port.status().kernel_drops, flood_datagrams_read(&port)); // before the flood
    flood_from(&host, 5, 60_000);
    let read = flood_datagrams_read(&port);
    let dropped = port.status().kernel_drops.expect("socket drops");
    assert!(read > 0 && dropped > 0, "read {read}, dropped {dropped}");
    // Every datagram was queued or dropped at the socket, but for the few the veth's backlog
    // may drop first should the kernel defer its softirq work (that's no socket's count).
    assert!(
        (59_000..=60_000).contains(&(read + dropped)),
        "read {read} + dropped {dropped} of 60 000"
    );
    assert_eq!(
        port.status().kernel_drops.expect("again"),
        dropped,
        "the total stays (the kernel resets its own count on every read)"
    );
}

#[test]
fn a_switch_counts_what_the_kernel_dropped_before_it_could_read() {
    if !require_root("a_switch_counts_what_the_kernel_dropped_before_it_could_read") {
        return;
    }
    // One thread floods 64-byte broadcasts; the switch writes each into three TAPs, so it
    // can't keep up with a sender that pays for one. The first TAP drops the excess in its
    // ring, and the switch's counters for that port say so.
    let lab = SwitchLab::new(4, config(), Attach::Tap { offload: true }).expect("lab");
    let a = &lab.hosts[0];
    a.ns.run(|| {
        let sock = std::net::UdpSocket::bind((a.addr, 0)).expect("bind");
        sock.set_broadcast(true).expect("broadcast");
        for _ in 0..300_000 {
            let _ = sock.send_to(&[0u8; 64], "10.77.0.255:7300");
        }
    })
    .expect("enter");
    let flooded = || lab.port_stats(0).kernel_drops > 0;
    assert!(
        eventually(Duration::from_secs(5), flooded),
        "no kernel drops counted on the flooded port: {:?}",
        lab.port_stats(0)
    );
    for quiet in 1..4 {
        let drops = lab.port_stats(quiet).kernel_drops;
        assert_eq!(drops, 0, "quiet port {quiet} dropped nothing");
    }
}

#[test]
fn every_host_pings_the_switchs_own_address() {
    if !require_root("every_host_pings_the_switchs_own_address") {
        return;
    }
    let lab = SwitchLab::new(3, config(), Attach::Tap { offload: true }).expect("lab");
    let station = vswitch_datapath::StationPort::new(
        vswitch_core::MacAddr([0x02, 0x5f, 0, 0, 0, 1]),
        vec![(std::net::IpAddr::V4(Ipv4Addr::new(10, 77, 0, 254)), 24)],
    )
    .expect("station");
    lab.switch
        .add_port("self".into(), Box::new(station))
        .expect("add");
    for host in &lab.hosts {
        let report = ping(&host.ns, Ipv4Addr::new(10, 77, 0, 254), 3);
        assert!(report.all_replied(), "{}: {report}", host.addr);
    }
    let port = lab.switch.port("self").expect("port");
    let counters: std::collections::HashMap<String, u64> =
        port.device().counters().into_iter().collect();
    assert_eq!(counters["echoes_answered"], 9, "{counters:?}");
    lab.switch.sync_counters();
    assert!(
        port.counters().snapshot().tx_packets >= 9,
        "counted as a port"
    );
    // An address it doesn't stand for is nobody's.
    assert!(ping(&lab.hosts[0].ns, Ipv4Addr::new(10, 77, 0, 253), 1).none_replied());
}
