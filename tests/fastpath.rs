//! The in-kernel fast path for `dev:` ports and relayed TAPs against real kernel stacks: it
//! forwards known unicast, counts it exactly, delivers every frame once while the switch changes
//! its mind, and gives way at once to pipelines and captures. Each check runs with `--datapath
//! userspace` too, as the reference. Needs root.

use std::time::{Duration, Instant};

use vswitch_core::{DropReason, MacAddr, PortStats};
use vswitch_datapath::{Capture, Datapath, Direction, Hook, SwitchConfig};
use vswitch_testkit::{
    Attach, EchoOptions, SwitchLab, ping, ping_with, relays_of, require_root, tcp_transfer,
};

fn lab(n: usize, datapath: Datapath) -> SwitchLab {
    lab_of(n, datapath, Attach::Veth)
}

fn lab_of(n: usize, datapath: Datapath, attach: Attach) -> SwitchLab {
    let config = SwitchConfig {
        threads: 2,
        datapath,
        ..SwitchConfig::default()
    };
    SwitchLab::new(n, config, attach).expect("lab")
}

/// Both ways to give a host a port the kernel can carry.
const CARRIED: [Attach; 2] = [Attach::Veth, Attach::RelayedTap];

/// Where the checks under runtime changes run: veth ports with either attachment of the
/// classifier, and relayed TAPs.
const UNDER_CHANGE: [(Datapath, Attach); 3] = [
    (Datapath::Auto, Attach::Veth),
    (Datapath::ClsBpf, Attach::Veth),
    (Datapath::Auto, Attach::RelayedTap),
];

fn mac_of(host: &vswitch_testkit::Host) -> MacAddr {
    host.mac().expect("mac").parse().expect("a MAC")
}

/// `count` echoes 1 ms apart; a reply counts as lost only after 5 s, so a loaded machine's
/// scheduling delays aren't taken for losses.
fn flood(count: u32) -> EchoOptions {
    EchoOptions {
        count,
        interval: Duration::from_millis(1),
        timeout: Duration::from_secs(5),
        ..EchoOptions::default()
    }
}

fn delta(after: PortStats, before: PortStats) -> (u64, u64, u64, u64) {
    (
        after.rx_packets - before.rx_packets,
        after.tx_packets - before.tx_packets,
        after.fast_rx_packets - before.fast_rx_packets,
        after.fast_tx_packets - before.fast_tx_packets,
    )
}

#[test]
fn known_unicast_between_veth_ports_goes_in_the_kernel_and_is_counted_exactly() {
    if !require_root("known_unicast_between_veth_ports_goes_in_the_kernel_and_is_counted_exactly") {
        return;
    }
    let cases = [
        (Datapath::Auto, Attach::Veth),
        (Datapath::ClsBpf, Attach::Veth),
        (Datapath::Userspace, Attach::Veth),
        (Datapath::Auto, Attach::RelayedTap),
        // A relayed TAP without the fast path: through the relay to the switch and back.
        (Datapath::Userspace, Attach::RelayedTap),
    ];
    for (datapath, attach) in cases {
        let lab = lab_of(2, datapath, attach);
        let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
        let served = lab.switch.fast_path_ports().len();
        let fast = datapath != Datapath::Userspace;
        assert_eq!(served, if fast { 2 } else { 0 });
        // Both stations learned (ARP), then 200 echoes each way are known unicast.
        assert!(ping(&a.ns, b.addr, 1).all_replied());
        let before = [lab.port_stats(0), lab.port_stats(1)];
        let report = ping_with(&a.ns, b.addr, flood(200));
        assert!(report.all_replied(), "{datapath} {attach:?}: {report}");
        // The switch counts a frame after handing it on: the last reply may reach a a moment
        // before its count.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut after = [lab.port_stats(0), lab.port_stats(1)];
        while after[0].tx_packets - before[0].tx_packets < 200 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            after = [lab.port_stats(0), lab.port_stats(1)];
        }
        let (rx0, tx0, fast_rx0, fast_tx0) = delta(after[0], before[0]);
        let (rx1, tx1, fast_rx1, fast_tx1) = delta(after[1], before[1]);
        // 200 requests in at a's port and out at b's, 200 replies the other way; an ARP
        // refresh may add a frame or two each way. Counted the same with or without the fast
        // path.
        for (what, n) in [("a rx", rx0), ("a tx", tx0), ("b rx", rx1), ("b tx", tx1)] {
            assert!(
                (200..=204).contains(&n),
                "{datapath} {attach:?}: {what} {n}"
            );
        }
        if fast {
            // Echoes of both ways, in the kernel (all but what the switch saw first).
            assert!(fast_rx0 >= 190 && fast_tx1 >= 190, "{fast_rx0} {fast_tx1}");
            assert!(fast_rx1 >= 190 && fast_tx0 >= 190, "{fast_rx1} {fast_tx0}");
            assert_eq!(
                fast_rx0, fast_tx1,
                "each frame redirected once, counted both ends"
            );
            assert_eq!(fast_rx1, fast_tx0);
        } else {
            assert_eq!((fast_rx0, fast_tx0, fast_rx1, fast_tx1), (0, 0, 0, 0));
        }
    }
}

#[test]
fn every_frame_arrives_once_while_the_table_is_flushed_and_a_mac_moves() {
    if !require_root("every_frame_arrives_once_while_the_table_is_flushed_and_a_mac_moves") {
        return;
    }
    for (datapath, attach) in UNDER_CHANGE {
        exactly_once_under_change(datapath, attach);
    }
}

fn exactly_once_under_change(datapath: Datapath, attach: Attach) {
    let lab = lab_of(3, datapath, attach);
    let (a, b, c) = (&lab.hosts[0], &lab.hosts[1], &lab.hosts[2]);
    assert!(ping(&a.ns, b.addr, 1).all_replied() && ping(&b.ns, a.addr, 1).all_replied());
    let port_c = lab.switch.ports()[2].name().to_owned();
    let mac_b = mac_of(b);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let flushes = std::thread::scope(|s| {
        let churn = s.spawn(|| {
            // Flush every 20 ms: each time, the next frames go through the switch (flooded),
            // then back into the kernel once both stations are learned again.
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                lab.switch.flush_fdb(None).expect("flush");
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        });
        let transfer = s.spawn(|| tcp_transfer(&a.ns, &b.ns, b.addr, 5401, 64 << 20));
        let report = ping_with(&a.ns, b.addr, flood(2000));
        let t = transfer.join().expect("transfer").expect("tcp");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            (t.received, t.received_digest),
            (t.sent, t.sent_digest),
            "TCP bytes"
        );
        // Flooded or redirected, never both, never neither.
        assert!(report.all_replied(), "{report}");
        churn.join().expect("churn")
    });
    assert!(flushes > 10, "only {flushes} flushes");

    // b's MAC moves to c's port (a static entry) and back, 10 times, under a ping flood: what
    // goes to c is lost to b, counted on c's port; nothing arrives twice.
    let before_c = lab.port_stats(2);
    let report = std::thread::scope(|s| {
        let flood = s.spawn(|| ping_with(&a.ns, b.addr, flood(1000)));
        for _ in 0..10 {
            lab.switch.add_static(mac_b, &port_c).expect("static");
            std::thread::sleep(Duration::from_millis(30));
            lab.switch.remove_fdb(mac_b).expect("del");
            std::thread::sleep(Duration::from_millis(30));
        }
        flood.join().expect("flood")
    });
    let to_c = lab.port_stats(2).tx_packets - before_c.tx_packets;
    assert_eq!(report.duplicates, 0, "{report}");
    assert!(report.lost() > 0, "the moves never took effect: {report}");
    assert!(
        u64::from(report.lost()) <= to_c,
        "{} echoes lost, only {to_c} frames sent to c: some vanished",
        report.lost()
    );
    // And it forwards again once b is heard from.
    assert!(ping(&a.ns, b.addr, 3).all_replied());
    assert!(ping(&c.ns, b.addr, 1).all_replied());
}

#[test]
fn pipelines_and_captures_installed_at_runtime_see_the_next_frame() {
    if !require_root("pipelines_and_captures_installed_at_runtime_see_the_next_frame") {
        return;
    }
    for (datapath, attach) in UNDER_CHANGE {
        runtime_changes_see_the_next_frame(datapath, attach);
    }
}

fn runtime_changes_see_the_next_frame(datapath: Datapath, attach: Attach) {
    let lab = lab_of(2, datapath, attach);
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let port_b = lab.switch.ports()[1].name().to_owned();
    assert!(ping(&a.ns, b.addr, 20).all_replied());
    assert!(
        lab.port_stats(1).fast_tx_packets > 0,
        "not in the kernel to begin with"
    );
    lab.switch
        .set_pipeline(&port_b, Hook::Egress, "filter drop proto icmp")
        .expect("set");
    let report = ping(&a.ns, b.addr, 5);
    assert!(report.none_replied(), "the filter was bypassed: {report}");
    assert_eq!(lab.port_stats(1).drops(DropReason::Pipeline), 5);
    lab.switch
        .clear_pipeline(&port_b, Hook::Egress)
        .expect("clear");
    assert!(ping(&a.ns, b.addr, 5).all_replied());

    let port = lab.switch.port(&port_b).expect("port");
    let capture = Capture::start(port, Direction::Out, 1000).expect("capture");
    lab.switch.captures_changed();
    assert!(ping(&a.ns, b.addr, 5).all_replied());
    let mut requests = 0;
    while let Ok(frame) = capture.recv_timeout(Duration::from_millis(200)) {
        if frame.data.len() > 34 && frame.data[23] == 1 && frame.data[34] == 8 {
            requests += 1;
        }
    }
    assert_eq!(requests, 5, "the capture missed echo requests");
}

#[test]
fn a_station_heard_only_through_the_kernel_does_not_age_out() {
    if !require_root("a_station_heard_only_through_the_kernel_does_not_age_out") {
        return;
    }
    let config = SwitchConfig {
        threads: 2,
        table: vswitch_core::TableConfig {
            ageing_time: Duration::from_secs(2),
            ..vswitch_core::TableConfig::default()
        },
        ..SwitchConfig::default()
    };
    for attach in CARRIED {
        heard_only_through_the_kernel(config.clone(), attach);
    }
}

fn heard_only_through_the_kernel(config: SwitchConfig, attach: Attach) {
    let lab = SwitchLab::new(2, config, attach).expect("lab");
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert!(ping(&a.ns, b.addr, 1).all_replied());
    // 5 s of echoes (2.5 ageing times) that the kernel forwards: the entries stay.
    let started = Instant::now();
    let report = ping_with(
        &a.ns,
        b.addr,
        EchoOptions {
            count: 100,
            interval: Duration::from_millis(50),
            ..EchoOptions::default()
        },
    );
    assert!(report.all_replied(), "{report}");
    assert!(started.elapsed() > Duration::from_secs(4));
    assert!(lab.port_stats(0).fast_rx_packets >= 90);
    let macs: Vec<MacAddr> = lab.switch.fdb().iter().map(|r| r.key.mac).collect();
    assert!(
        macs.contains(&mac_of(a)) && macs.contains(&mac_of(b)),
        "aged out while talking: {macs:?}"
    );
    assert_eq!(lab.switch.table_stats().aged, 0);
}

/// `ip`, as an independent witness of what is attached to a link of the switch's namespace.
fn tc_show(what: &str, dev: &str) -> String {
    let out = std::process::Command::new("tc")
        .args([what, "show", "dev", dev, "ingress"])
        .output()
        .expect("tc (iproute2)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_fast_path_attaches_through_tcx_or_cls_bpf_and_leaves_nothing() {
    if !require_root("the_fast_path_attaches_through_tcx_or_cls_bpf_and_leaves_nothing") {
        return;
    }
    for (datapath, attachment) in [(Datapath::Auto, "tcx"), (Datapath::ClsBpf, "cls_bpf")] {
        let lab = lab(2, datapath);
        assert_eq!(lab.switch.fast_path_attachment(), Some(attachment));
        let dev = lab.switch.ports()[0].name().to_owned();
        let filters = tc_show("filter", &dev);
        // tcx programs are links, not filters: tc lists only the cls_bpf one.
        assert_eq!(
            filters.contains("vswitch_fp_tc"),
            datapath == Datapath::ClsBpf,
            "{datapath}: {filters}"
        );
        assert!(ping(&lab.hosts[0].ns, lab.hosts[1].addr, 20).all_replied());
        assert!(
            lab.port_stats(1).fast_tx_packets > 0,
            "{datapath}: not in the kernel"
        );
        let SwitchLab { switch, hosts, .. } = lab;
        switch.stop();
        drop(switch);
        let (filters, qdiscs) = (tc_show("filter", &dev), tc_show("qdisc", &dev));
        assert!(
            !filters.contains("vswitch_fp_tc"),
            "{datapath}: left behind: {filters}"
        );
        assert!(
            !qdiscs.contains("clsact"),
            "{datapath}: left behind: {qdiscs}"
        );
        drop(hosts);
    }
}

/// Whether link `name` exists in `host`'s namespace.
fn in_host(host: &vswitch_testkit::Host, name: &str) -> bool {
    host.ns
        .run(|| vswitch_netns::Netlink::open()?.link_exists(name))
        .expect("enter")
        .expect("netlink")
}

#[test]
fn a_relayed_tap_carries_whole_tcp_segments_adds_no_station_and_leaves_nothing() {
    if !require_root("a_relayed_tap_carries_whole_tcp_segments_adds_no_station_and_leaves_nothing")
    {
        return;
    }
    let lab = lab_of(2, Datapath::Auto, Attach::RelayedTap);
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let taps: Vec<String> = lab.hosts.iter().map(|h| h.ifname.clone()).collect();
    let relays: Vec<String> = taps
        .iter()
        .map(|t| relays_of(t))
        .map(|r| {
            assert_eq!(r.len(), 1, "one relay per TAP: {r:?}");
            r[0].clone()
        })
        .collect();
    // Each relay's other end is beside its TAP, in the host's namespace.
    let host_ends: Vec<String> = relays
        .iter()
        .map(|r| format!("{}h", r.trim_end_matches('s')))
        .collect();
    for (host, end) in lab.hosts.iter().zip(&host_ends) {
        assert!(in_host(host, end), "{end} not in {}", host.ns.name());
    }
    assert_eq!(lab.switch.fast_path_ports().len(), 2);
    let before = [lab.port_stats(0), lab.port_stats(1)];
    for (from, to, port) in [(a, b, 5501), (b, a, 5502)] {
        let t = tcp_transfer(&from.ns, &to.ns, to.addr, port, 32 << 20).expect("tcp");
        assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    }
    let after = [lab.port_stats(0), lab.port_stats(1)];
    for i in 0..2 {
        let (rx, _, fast_rx, _) = delta(after[i], before[i]);
        let bytes = after[i].rx_bytes - before[i].rx_bytes;
        // 32 MiB each way, nearly all of it in the kernel, in segments far beyond the MTU
        // (64 KiB TCP segments cross whole, as on the bridge).
        assert!(bytes >= 32 << 20, "port {i}: {bytes} bytes");
        assert!(
            fast_rx * 10 >= rx * 9,
            "port {i}: {fast_rx} of {rx} in the kernel"
        );
        assert!(
            bytes / rx > 3000,
            "port {i}: {rx} frames for {bytes} bytes: cut up"
        );
    }
    // The TAPs' MTU is what limits a frame, not the relay's: 8 000-byte echoes at MTU 9 000.
    for host in [a, b] {
        host.set_mtu(9000).expect("mtu");
    }
    let jumbo = ping_with(
        &a.ns,
        b.addr,
        EchoOptions {
            count: 5,
            payload: 8000,
            ..EchoOptions::default()
        },
    );
    assert!(jumbo.all_replied(), "jumbo: {jumbo}");
    // The relays add no station: the switch knows the two hosts, nothing else.
    let mut macs: Vec<MacAddr> = lab.switch.fdb().iter().map(|r| r.key.mac).collect();
    macs.sort();
    let mut hosts = vec![mac_of(a), mac_of(b)];
    hosts.sort();
    assert_eq!(macs, hosts);

    let SwitchLab { switch, hosts, .. } = lab;
    switch.stop();
    drop(switch);
    for tap in &taps {
        assert_eq!(relays_of(tap), Vec::<String>::new(), "left behind");
    }
    for (host, end) in hosts.iter().zip(&host_ends) {
        assert!(!in_host(host, end), "{end} left in {}", host.ns.name());
    }
}

#[test]
fn a_relayed_tap_moved_elsewhere_goes_on_through_the_switch() {
    if !require_root("a_relayed_tap_moved_elsewhere_goes_on_through_the_switch") {
        return;
    }
    let lab = lab_of(2, Datapath::Auto, Attach::RelayedTap);
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert!(ping(&a.ns, b.addr, 5).all_replied());
    assert!(lab.port_stats(0).fast_rx_packets > 0);
    // The user moves a's TAP into another namespace (the same address there): the relay, left
    // behind in the first, can't carry it any more.
    let ns = vswitch_testkit::Host::namespace().expect("namespace");
    a.ns.run(|| vswitch_netns::Netlink::open()?.move_to(&a.ifname, &ns))
        .expect("enter")
        .expect("move");
    let moved = vswitch_testkit::Host::with_link_in(ns, &a.ifname, a.addr).expect("host");
    moved.wait_running().expect("running");
    // Within a housekeeping tick (1 s) the switch notices and lets the TAP's fd carry it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ping(&moved.ns, b.addr, 1).all_replied() {
        assert!(
            Instant::now() < deadline,
            "the moved TAP never worked again"
        );
    }
    let before = lab.port_stats(0);
    let report = ping(&moved.ns, b.addr, 20);
    assert!(report.all_replied(), "{report}");
    let (rx, _, fast_rx, _) = delta(lab.port_stats(0), before);
    assert!(rx >= 20, "{rx}");
    assert_eq!(fast_rx, 0, "still relayed after the move");
}
