//! The real worker threads over in-memory ports, without root: what the datapath does with good,
//! malformed and unlucky frames.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vswitch_core::{DropReason, MacAddr};
use vswitch_datapath::{MemoryPeer, MemoryPort, PortDevice, Switch, SwitchConfig};

const MTU: u32 = 1500;

fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

fn frame(dst: MacAddr, src: MacAddr, len: usize, tag: u32) -> Vec<u8> {
    let mut f = vec![0u8; len.max(18)];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental EtherType
    f[14..18].copy_from_slice(&tag.to_be_bytes());
    f.truncate(len);
    f
}

fn start(n: usize, threads: usize) -> (Switch, Vec<MemoryPeer>) {
    let mut ports: Vec<(String, Box<dyn PortDevice>)> = Vec::new();
    let mut peers = Vec::new();
    for i in 0..n {
        let (port, peer) = MemoryPort::pair(MTU).expect("socketpair");
        ports.push((format!("mem{i}"), Box::new(port)));
        peers.push(peer);
    }
    let config = SwitchConfig {
        threads,
        ..SwitchConfig::default()
    };
    (Switch::start(config, ports).expect("start"), peers)
}

/// Receives one frame within a second.
fn recv(peer: &MemoryPeer) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        match peer.recv(&mut buf) {
            Ok(n) => return Some(buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    None
}

/// Sends `f` `n` times, waiting whenever the switch's queue from `peer` is full.
fn send_all(peer: &MemoryPeer, f: &[u8], n: u64) {
    let mut sent = 0;
    while sent < n {
        match peer.send(f) {
            Ok(()) => sent += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(100))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Asserts nothing arrives within 200 ms.
fn assert_silent(peer: &MemoryPeer, what: &str) {
    std::thread::sleep(Duration::from_millis(200));
    let mut buf = vec![0u8; 65536];
    match peer.recv(&mut buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("{what}: expected nothing, got {other:?}"),
    }
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn unknown_unicast_floods_then_learned_unicast_goes_to_one_port() {
    let (switch, peers) = start(3, 2);
    let f = frame(mac(2), mac(1), 60, 1);
    peers[0].send(&f).unwrap();
    assert_eq!(recv(&peers[1]).as_deref(), Some(&f[..]));
    assert_eq!(recv(&peers[2]).as_deref(), Some(&f[..]));
    // 2 answers 1: the switch knows 1 now, so only port 0 gets it.
    let reply = frame(mac(1), mac(2), 60, 2);
    peers[1].send(&reply).unwrap();
    assert_eq!(recv(&peers[0]).as_deref(), Some(&reply[..]));
    assert_silent(&peers[2], "learned unicast leaked");
    assert_silent(&peers[1], "sent back to the sender");
    assert!(wait_for(|| switch.table_stats().learned == 2));
}

#[test]
fn malformed_frames_are_dropped_by_reason_and_others_keep_flowing() {
    let (switch, peers) = start(2, 2);
    peers[0].send(&[0u8; 5]).unwrap(); // runt
    peers[0]
        .send(&frame(mac(2), MacAddr::BROADCAST, 60, 0))
        .unwrap(); // group source
    peers[0]
        .send(&frame(MacAddr([0x01, 0x80, 0xc2, 0, 0, 0]), mac(1), 60, 0))
        .unwrap(); // STP
    peers[0]
        .send(&frame(mac(2), mac(1), 14 + MTU as usize + 1, 0))
        .unwrap(); // oversize
    let good = frame(mac(2), mac(1), 60, 7);
    peers[0].send(&good).unwrap();
    assert_eq!(
        recv(&peers[1]).as_deref(),
        Some(&good[..]),
        "a good frame after bad ones"
    );
    assert_silent(&peers[1], "a bad frame was forwarded");
    let ingress = switch.ports()[0].counters().snapshot();
    let egress = switch.ports()[1].counters().snapshot();
    assert_eq!(ingress.drops(DropReason::Runt), 1);
    assert_eq!(ingress.drops(DropReason::BadSource), 1);
    assert_eq!(ingress.drops(DropReason::LinkLocal), 1);
    assert_eq!(egress.drops(DropReason::Oversize), 1);
    assert_eq!(ingress.rx_packets, 5);
    assert_eq!(egress.tx_packets, 1);
}

#[test]
fn a_flow_moved_between_queues_once_drained_arrives_whole_and_in_order() {
    // Port 0 has two receive queues, served by different workers. Like a TAP's steering
    // program, the sender moves its flow to the other queue every 100 frames, but only once the
    // switch has reported the old queue drained after the flow's last frame entered it. Every
    // frame must arrive exactly once and in order. A window of frames in flight keeps the
    // receiver's socket from overflowing, so nothing may be lost either.
    const FRAMES: u32 = 20_000;
    const WINDOW: u32 = 32;
    let (in_port, sender) = MemoryPort::with_queues(MTU, 2).expect("socketpairs");
    let (out_port, receiver) = MemoryPort::pair(MTU).expect("socketpair");
    let ports: Vec<(String, Box<dyn PortDevice>)> = vec![
        ("mem0".into(), Box::new(in_port)),
        ("mem1".into(), Box::new(out_port)),
    ];
    let config = SwitchConfig {
        threads: 2,
        ..SwitchConfig::default()
    };
    let switch = Switch::start(config, ports).expect("start");
    let received = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = vec![0u8; 65536];
            let mut idle_since = Instant::now();
            while received.load(Ordering::Relaxed) < FRAMES {
                match receiver.recv(&mut buf) {
                    Ok(n) => {
                        let tag = u32::from_be_bytes(buf[14..18].try_into().expect("tag"));
                        let expected = received.load(Ordering::Relaxed);
                        assert_eq!(tag, expected, "frame {tag} where {expected} was due");
                        assert_eq!(n, 100);
                        received.store(expected + 1, Ordering::Release);
                        idle_since = Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(
                            idle_since.elapsed() < Duration::from_secs(5),
                            "frame {} never came",
                            received.load(Ordering::Relaxed)
                        );
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("recv: {e}"),
                }
            }
        });
        let mut queue = 0;
        let mut last_entered = 0;
        let mut moved_when_drained = 0;
        for i in 0..FRAMES {
            if i > 0 && i % 100 == 0 {
                // As the steering program: move once a read that began after the flow's last
                // frame entered found the queue empty, or after 10 ms of silence (the clock
                // read after a send can be later than the frame's entry, and then only the
                // silence rule lets the flow go).
                loop {
                    if sender.drained_at(queue) > last_entered {
                        moved_when_drained += 1;
                        break;
                    }
                    if vswitch_datapath::steering_clock_ns() > last_entered + 10_000_000 {
                        break;
                    }
                    std::thread::yield_now();
                }
                queue = 1 - queue;
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while i - received.load(Ordering::Acquire) >= WINDOW {
                assert!(Instant::now() < deadline, "the receiver stopped at {i}");
                std::thread::yield_now();
            }
            let f = frame(mac(2), mac(1), 100, i);
            while let Err(e) = sender.send_queue(queue, &f) {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
                std::thread::yield_now();
            }
            // After the send returned, the frame is in the queue: a read that began later
            // found it.
            last_entered = vswitch_datapath::steering_clock_ns();
        }
        // Most moves must follow a reported drain, or the drain clock went untested.
        assert!(
            moved_when_drained >= FRAMES / 100 / 2,
            "only {moved_when_drained} of {} moves followed a drain",
            FRAMES / 100 - 1
        );
    });
    assert_eq!(received.load(Ordering::Relaxed), FRAMES);
    let egress = switch.ports()[1].counters().snapshot();
    assert_eq!(egress.tx_packets, u64::from(FRAMES));
    assert_eq!(egress.drops(DropReason::EgressQueueFull), 0);
}

#[test]
fn a_port_whose_peer_hangs_up_is_removed_and_others_keep_forwarding() {
    let (switch, mut peers) = start(3, 2);
    drop(peers.pop());
    assert!(
        wait_for(|| switch.ports()[2].is_gone()),
        "port 2 not removed"
    );
    let f = frame(MacAddr::BROADCAST, mac(1), 60, 3);
    peers[0].send(&f).unwrap();
    assert_eq!(recv(&peers[1]).as_deref(), Some(&f[..]));
}

#[test]
fn a_full_egress_queue_is_counted_not_fatal() {
    let (switch, peers) = start(2, 1);
    // Port 1's peer never reads: its socket buffer fills and the switch must drop and count.
    let f = frame(MacAddr::BROADCAST, mac(1), 1400, 0);
    send_all(&peers[0], &f, 5000);
    assert!(wait_for(|| switch.ports()[0]
        .counters()
        .snapshot()
        .rx_packets
        == 5000));
    let egress = switch.ports()[1].counters().snapshot();
    assert!(egress.drops(DropReason::EgressQueueFull) > 0);
    assert_eq!(
        egress.tx_packets + egress.drops(DropReason::EgressQueueFull),
        5000
    );
}

#[test]
fn macvlan_over_memory_ports_binds_own_macs_and_drops_spoofed_and_unbound() {
    use vswitch_core::MacvlanMode;
    use vswitch_datapath::MacvlanConfig;
    let mut ports: Vec<(String, Box<dyn PortDevice>)> = Vec::new();
    let mut peers = Vec::new();
    for i in 0..3u8 {
        let (port, peer) = MemoryPort::pair(MTU).expect("socketpair");
        // Sub-ports have a MAC of their own, as TAPs do; it is their default binding.
        ports.push((format!("mem{i}"), Box::new(port.with_mac(mac(i)))));
        peers.push(peer);
    }
    let config = SwitchConfig {
        threads: 2,
        macvlan: Some(MacvlanConfig {
            mode: MacvlanMode::Bridge,
            uplink: "mem0".into(),
            bindings: Vec::new(),
            allow_spoofing: Vec::new(),
        }),
        ..SwitchConfig::default()
    };
    let switch = Switch::start(config, ports).expect("start");
    let outside = MacAddr([2, 0, 0, 0, 0, 0x99]);
    // From the uplink to sub-port 2's MAC: only sub-port 2 gets it.
    let f = frame(mac(2), outside, 60, 1);
    peers[0].send(&f).unwrap();
    assert_eq!(recv(&peers[2]).as_deref(), Some(&f[..]));
    assert_silent(&peers[1], "dispatch by destination MAC");
    // To a MAC nobody is bound to: nobody.
    peers[0]
        .send(&frame(MacAddr([2, 0, 0, 0, 0, 0x42]), outside, 60, 2))
        .unwrap();
    assert_silent(&peers[1], "unbound unicast");
    assert_silent(&peers[2], "unbound unicast");
    // Sub-port 1 sending as someone else: dropped.
    peers[1].send(&frame(outside, mac(7), 60, 3)).unwrap();
    assert_silent(&peers[0], "spoofed frame");
    let uplink = switch.ports()[0].counters().snapshot();
    let sub1 = switch.ports()[1].counters().snapshot();
    assert_eq!(uplink.drops(DropReason::Unbound), 1);
    assert_eq!(sub1.drops(DropReason::Spoofed), 1);
}

#[test]
fn pipelines_mirror_duplicate_delay_and_drop_on_the_real_workers() {
    use vswitch_datapath::Hook;
    let (switch, peers) = start(3, 2);
    // Port 2 learns nothing and hears nothing but the mirror once its MAC is known elsewhere.
    peers[1]
        .send(&frame(MacAddr::BROADCAST, mac(2), 60, 0))
        .unwrap();
    for p in [&peers[0], &peers[2]] {
        assert!(recv(p).is_some());
    }
    switch
        .set_pipeline(
            "mem1",
            Hook::Egress,
            "mirror port mem2; impair duplicate 100% delay 20ms",
        )
        .unwrap();
    let f = frame(mac(2), mac(1), 60, 7);
    let sent = Instant::now();
    peers[0].send(&f).unwrap();
    assert_eq!(recv(&peers[2]).as_deref(), Some(&f[..]), "the mirror copy");
    assert_eq!(recv(&peers[1]).as_deref(), Some(&f[..]), "the frame");
    assert!(sent.elapsed() >= Duration::from_millis(20), "not delayed");
    assert_eq!(recv(&peers[1]).as_deref(), Some(&f[..]), "its duplicate");
    switch
        .set_pipeline("mem0", Hook::Ingress, "filter drop ethertype 0x88b5")
        .unwrap();
    peers[0].send(&f).unwrap();
    assert_silent(&peers[1], "dropped on the way in");
    assert_eq!(
        switch.ports()[0]
            .counters()
            .snapshot()
            .drops(DropReason::Pipeline),
        1
    );
    let err = switch
        .set_pipeline("mem0", Hook::Ingress, "mirror port nowhere")
        .unwrap_err();
    assert!(err.to_string().contains("no port nowhere"), "{err}");
}

#[test]
fn macvlan_source_mode_delivers_by_source_mac() {
    use vswitch_core::MacvlanMode;
    use vswitch_datapath::MacvlanConfig;
    let mut ports: Vec<(String, Box<dyn PortDevice>)> = Vec::new();
    let mut peers = Vec::new();
    for i in 0..3u8 {
        let (port, peer) = MemoryPort::pair(MTU).expect("socketpair");
        ports.push((format!("mem{i}"), Box::new(port)));
        peers.push(peer);
    }
    let (a, b) = (MacAddr([2, 0, 0, 0, 0, 0xa]), MacAddr([2, 0, 0, 0, 0, 0xb]));
    let config = SwitchConfig {
        threads: 1,
        macvlan: Some(MacvlanConfig {
            mode: MacvlanMode::Source,
            uplink: "mem0".into(),
            bindings: vec![("mem1".into(), vec![a, b]), ("mem2".into(), vec![b])],
            allow_spoofing: Vec::new(),
        }),
        ..SwitchConfig::default()
    };
    let _switch = Switch::start(config, ports).expect("start");
    let from_a = frame(mac(9), a, 60, 1);
    peers[0].send(&from_a).unwrap();
    assert_eq!(recv(&peers[1]).as_deref(), Some(&from_a[..]));
    assert_silent(&peers[2], "mem2 doesn't accept a");
    let from_b = frame(MacAddr::BROADCAST, b, 60, 2);
    peers[0].send(&from_b).unwrap();
    assert_eq!(recv(&peers[1]).as_deref(), Some(&from_b[..]));
    assert_eq!(recv(&peers[2]).as_deref(), Some(&from_b[..]));
}

#[test]
fn storm_control_limits_unknown_unicast_but_not_known() {
    use vswitch_datapath::Hook;
    let (switch, peers) = start(2, 1);
    switch
        .set_pipeline("mem0", Hook::Ingress, "storm 5pps unknown-unicast")
        .unwrap();
    let count = |peer: &MemoryPeer| {
        let mut n = 0;
        while recv(peer).is_some() {
            n += 1;
        }
        n
    };
    // mac(2) is unknown: these flood, and the storm limit lets only a handful through.
    for i in 0..50 {
        peers[0].send(&frame(mac(2), mac(1), 60, i)).unwrap();
    }
    let flooded = count(&peers[1]);
    // The bucket starts full: a burst of 8 (the default for packet rates), then 5 per second.
    assert!(
        (1..=12).contains(&flooded),
        "{flooded} of 50 unknown unicast frames passed"
    );
    // Once mac(2) is learned behind port 1, the same frames are known unicast and all pass.
    peers[1].send(&frame(mac(1), mac(2), 60, 0)).unwrap();
    assert!(recv(&peers[0]).is_some());
    for i in 0..50 {
        peers[0].send(&frame(mac(2), mac(1), 60, i)).unwrap();
    }
    assert_eq!(count(&peers[1]), 50);
}

#[test]
fn captures_are_capped_per_port_and_bounded_in_bytes() {
    use vswitch_datapath::capture::{Capture, Direction, MAX_CAPTURES_PER_PORT, MAX_QUEUED_BYTES};
    let (switch, peers) = start(2, 1);
    let port = switch.port("mem0").expect("port");
    let captures: Vec<Capture> = (0..MAX_CAPTURES_PER_PORT)
        .map(|_| Capture::start(port.clone(), Direction::In, 100_000).expect("capture"))
        .collect();
    let refused = Capture::start(port.clone(), Direction::In, 100_000);
    assert!(refused.is_err(), "a capture past the cap was accepted");
    drop(captures);
    // Nobody reads this one: at most MAX_QUEUED_BYTES of frames wait, the rest are counted.
    let capture = Capture::start(port, Direction::In, 100_000).expect("capture again");
    let f = frame(MacAddr::BROADCAST, mac(1), 1400, 0);
    let frames = 2 * MAX_QUEUED_BYTES / 1400;
    send_all(&peers[0], &f, frames);
    assert!(wait_for(|| switch.ports()[0]
        .counters()
        .snapshot()
        .rx_packets
        == frames));
    let mut queued = 0u64;
    while let Ok(frame) = capture.recv_timeout(Duration::from_millis(10)) {
        queued += frame.data.len() as u64;
    }
    assert!(queued <= MAX_QUEUED_BYTES, "{queued} bytes queued");
    assert_eq!(
        queued / 1400 + capture.dropped(),
        frames,
        "every frame queued or counted"
    );
}

#[test]
fn a_vanished_ports_name_added_again_names_the_new_port() {
    let (switch, mut peers) = start(3, 2);
    drop(peers.pop());
    assert!(
        wait_for(|| switch.ports()[2].is_gone()),
        "port 2 not removed"
    );
    // The name comes back as a new device.
    let (port, peer) = MemoryPort::pair(MTU).expect("socketpair");
    switch
        .add_port("mem2".into(), Box::new(port))
        .expect("re-add");
    let live = switch.port("mem2").expect("mem2");
    assert!(!live.is_gone(), "the name resolves to the vanished port");
    switch
        .set_pipeline(
            "mem2",
            vswitch_datapath::Hook::Egress,
            "filter count proto icmp",
        )
        .expect("pipeline on the new port");
    switch
        .add_static(mac(9), "mem2")
        .expect("fdb add on the new port");
    // Frames for mac 9 reach the new port's peer.
    let f = frame(mac(9), mac(1), 60, 5);
    peers[0].send(&f).unwrap();
    assert_eq!(recv(&peer).as_deref(), Some(&f[..]));
    // `port del` removes the live port, not the dead entry.
    switch.remove_port("mem2").expect("del");
    assert!(live.is_gone(), "port del left the live port attached");
}

/// What each peer received within 150 ms (one frame at most each; extra frames fail).
fn gather(peers: &[MemoryPeer]) -> Vec<Option<Vec<u8>>> {
    std::thread::sleep(Duration::from_millis(150));
    let mut buf = vec![0u8; 65536];
    peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let first = p.recv(&mut buf).ok().map(|n| buf[..n].to_vec());
            assert!(p.recv(&mut buf).is_err(), "port {i} got two frames");
            first
        })
        .collect()
}

/// A 60-byte frame of the local experimental EtherType with `tags` (TPID, VID) put in after
/// the MACs (4 bytes each), as a switch adds them.
fn tagged(dst: MacAddr, src: MacAddr, tags: &[(u16, u16)]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.resize(60, 0x5a);
    let tags: Vec<u8> = tags
        .iter()
        .flat_map(|(tpid, vid)| [tpid.to_be_bytes(), vid.to_be_bytes()].concat())
        .collect();
    f.splice(12..12, tags);
    f
}

#[test]
fn vlans_access_trunk_native_and_qinq_forward_as_ovs_does() {
    let (switch, peers) = start(6, 2);
    for (port, mode) in [
        ("mem0", "access 10"),
        ("mem1", "access 10"),
        ("mem2", "access 20"),
        ("mem3", "trunk 10,20,30 native 30"),
        ("mem4", "tunnel 100"),
        ("mem5", "trunk 100"),
    ] {
        switch.set_vlan(port, mode.parse().unwrap()).expect(port);
    }
    let b = MacAddr::BROADCAST;
    // A broadcast on an access port of VLAN 10: the other access port of 10 untagged, the trunk
    // tagged 10, nobody else.
    peers[0].send(&tagged(b, mac(1), &[])).unwrap();
    let got = gather(&peers);
    assert_eq!(got[1].as_deref(), Some(&tagged(b, mac(1), &[])[..]));
    assert_eq!(
        got[3].as_deref(),
        Some(&tagged(b, mac(1), &[(0x8100, 10)])[..])
    );
    assert!(
        got[2].is_none() && got[4].is_none() && got[5].is_none(),
        "{got:?}"
    );
    // Tagged 20 from the trunk: to the access port of 20, untagged.
    peers[3].send(&tagged(b, mac(3), &[(0x8100, 20)])).unwrap();
    let got = gather(&peers);
    assert_eq!(got[2].as_deref(), Some(&tagged(b, mac(3), &[])[..]));
    assert!(
        got.iter().enumerate().all(|(i, g)| i == 2 || g.is_none()),
        "{got:?}"
    );
    // Untagged from the trunk is its native VLAN 30, which nobody else carries.
    peers[3].send(&tagged(b, mac(3), &[])).unwrap();
    assert!(gather(&peers).iter().all(Option::is_none));
    // Dropped and counted: a tagged frame on an access port, a VLAN the trunk doesn't carry.
    peers[0].send(&tagged(b, mac(1), &[(0x8100, 10)])).unwrap();
    peers[3].send(&tagged(b, mac(3), &[(0x8100, 40)])).unwrap();
    assert!(gather(&peers).iter().all(Option::is_none));
    assert_eq!(
        switch.ports()[0]
            .counters()
            .snapshot()
            .drops(DropReason::Vlan),
        1
    );
    assert_eq!(
        switch.ports()[3]
            .counters()
            .snapshot()
            .drops(DropReason::Vlan),
        1
    );
    // Learned per VLAN: mem1 answers mem0's MAC in VLAN 10, only mem0 gets it.
    peers[1].send(&tagged(mac(1), mac(2), &[])).unwrap();
    let got = gather(&peers);
    assert_eq!(got[0].as_deref(), Some(&tagged(mac(1), mac(2), &[])[..]));
    assert!(got[3].is_none(), "known unicast flooded to the trunk");
    // QinQ: a customer's tagged frame on the tunnel port crosses the provider trunk inside an
    // 802.1ad tag, and comes back out with only the customer's tag.
    peers[4].send(&tagged(b, mac(4), &[(0x8100, 5)])).unwrap();
    let got = gather(&peers);
    assert_eq!(
        got[5].as_deref(),
        Some(&tagged(b, mac(4), &[(0x88a8, 100), (0x8100, 5)])[..])
    );
    assert!(
        got.iter().enumerate().all(|(i, g)| i == 5 || g.is_none()),
        "{got:?}"
    );
    peers[5]
        .send(&tagged(mac(4), mac(5), &[(0x88a8, 100), (0x8100, 5)]))
        .unwrap();
    let got = gather(&peers);
    assert_eq!(
        got[4].as_deref(),
        Some(&tagged(mac(4), mac(5), &[(0x8100, 5)])[..])
    );
    // VLAN 40 added to the trunk at runtime: its tagged frames are no longer dropped; taken
    // off, they are again; an access port has no list to change.
    let vlan40: vswitch_core::VlanSet = "40".parse().unwrap();
    switch.change_trunk("mem3", &vlan40, true).unwrap();
    peers[3].send(&tagged(b, mac(3), &[(0x8100, 40)])).unwrap();
    let _ = gather(&peers);
    assert_eq!(
        switch.ports()[3]
            .counters()
            .snapshot()
            .drops(DropReason::Vlan),
        1
    );
    switch.change_trunk("mem3", &vlan40, false).unwrap();
    peers[3].send(&tagged(b, mac(3), &[(0x8100, 40)])).unwrap();
    let _ = gather(&peers);
    assert_eq!(
        switch.ports()[3]
            .counters()
            .snapshot()
            .drops(DropReason::Vlan),
        2
    );
    assert!(switch.change_trunk("mem0", &vlan40, true).is_err());
    // Back to no VLANs: all ports on the untagged segment again.
    for port in ["mem0", "mem1", "mem2", "mem3", "mem4", "mem5"] {
        switch.set_vlan(port, "none".parse().unwrap()).expect(port);
    }
    peers[0].send(&tagged(b, mac(1), &[(0x8100, 7)])).unwrap();
    let got = gather(&peers);
    assert!(
        got[1..]
            .iter()
            .all(|g| g.as_deref() == Some(&tagged(b, mac(1), &[(0x8100, 7)])[..]))
    );
}

#[test]
fn port_flags_isolate_stop_learning_and_flooding_and_allow_hairpin() {
    let (switch, peers) = start(4, 2);
    let b = MacAddr::BROADCAST;
    switch.set_port_flag("mem0", "isolated", "on").unwrap();
    switch.set_port_flag("mem1", "isolated", "on").unwrap();
    // Isolated ports don't reach each other, only the others.
    peers[0].send(&tagged(b, mac(1), &[])).unwrap();
    let got = gather(&peers);
    assert!(
        got[1].is_none() && got[2].is_some() && got[3].is_some(),
        "{got:?}"
    );
    // Unknown unicast skips a port with flood off; broadcast still reaches it.
    switch.set_port_flag("mem3", "flood", "off").unwrap();
    peers[2].send(&tagged(mac(9), mac(3), &[])).unwrap();
    let got = gather(&peers);
    assert!(
        got[3].is_none() && got[0].is_some() && got[1].is_some(),
        "{got:?}"
    );
    switch.set_port_flag("mem3", "bcast-flood", "off").unwrap();
    peers[2].send(&tagged(b, mac(3), &[])).unwrap();
    assert!(gather(&peers)[3].is_none(), "bcast-flood off");
    // Learning off: mem2's sources stay unknown.
    switch.set_port_flag("mem2", "learning", "off").unwrap();
    peers[2].send(&tagged(b, mac(7), &[])).unwrap();
    let _ = gather(&peers);
    assert!(
        switch.fdb().iter().all(|r| r.key.mac != mac(7)),
        "learned with learning off"
    );
    // Hairpin: a destination behind the ingress port is sent back there.
    peers[3].send(&tagged(b, mac(4), &[])).unwrap();
    let _ = gather(&peers);
    peers[3].send(&tagged(mac(4), mac(5), &[])).unwrap();
    assert!(gather(&peers)[3].is_none(), "sent back without hairpin");
    assert_eq!(
        switch.ports()[3]
            .counters()
            .snapshot()
            .drops(DropReason::Filtered),
        1
    );
    switch.set_port_flag("mem3", "hairpin", "on").unwrap();
    peers[3].send(&tagged(mac(4), mac(5), &[])).unwrap();
    assert_eq!(
        gather(&peers)[3].as_deref(),
        Some(&tagged(mac(4), mac(5), &[])[..])
    );
    assert!(switch.set_port_flag("mem3", "stp", "on").is_err());
}
