//! VLANs against real kernel stacks: two switches joined by a trunk (a veth pair between
//! `dev:` ports), hosts on access ports over TAPs with offloads. Needs root.

use std::net::Ipv4Addr;

use vswitch_core::{DropReason, MacAddr, VNET_HDR_LEN, VlanMode};
use vswitch_datapath::{PacketPort, PortDevice, Switch, SwitchConfig, Tap};
use vswitch_netns::{LinkGuard, Netlink, NetnsGuard};
use vswitch_testkit::{Host, ping, require_root, tcp_checksum_errors, tcp_transfer, unique_name};

/// A switch with one TAP host per `(address, mode)` and a trunk port `trunk`.
struct Side {
    switch: Switch,
    hosts: Vec<Host>,
}

/// With `offload`, the TAPs take GSO frames whole; without, the switch cuts them itself, from
/// the virtio-net header's offsets (so offsets wrongly moved with a tag show as bad checksums).
fn side(trunk: &str, trunk_mode: &str, offload: bool, hosts: &[(Ipv4Addr, &str)]) -> Side {
    let config = SwitchConfig {
        threads: 2,
        ..SwitchConfig::default()
    };
    let mut ports: Vec<(String, Box<dyn PortDevice>)> = vec![(
        trunk.to_owned(),
        Box::new(PacketPort::open_queues(trunk, 2, config.steering).expect("trunk")),
    )];
    let mut taps = Vec::new();
    for _ in hosts {
        let name = unique_name("vsq");
        let tap = Tap::open_queues(&name, offload, config.threads).expect("tap");
        ports.push((name.clone(), Box::new(tap)));
        taps.push(name);
    }
    let switch = Switch::start(config, ports).expect("switch");
    switch
        .set_vlan(trunk, trunk_mode.parse::<VlanMode>().expect("mode"))
        .expect("trunk mode");
    let mut out = Vec::new();
    for (tap, (addr, mode)) in taps.iter().zip(hosts) {
        switch
            .set_vlan(tap, mode.parse::<VlanMode>().expect("mode"))
            .expect("access mode");
        out.push(Host::with_link(tap, *addr).expect("host"));
    }
    Side { switch, hosts: out }
}

#[test]
fn hosts_in_one_vlan_reach_each_other_across_a_trunk_and_no_one_else() {
    if !require_root("hosts_in_one_vlan_reach_each_other_across_a_trunk_and_no_one_else") {
        return;
    }
    let (t1, t2) = (unique_name("vst"), unique_name("vst"));
    Netlink::open()
        .expect("netlink")
        .add_veth(&t1, &t2, None)
        .expect("trunk veth");
    let _trunk = LinkGuard::new(&t1);
    let addr = |i| Ipv4Addr::new(10, 79, 0, i);
    // VLAN 10: .1 on switch one, .2 on switch two. VLAN 20: .3 and .4, likewise. The trunk
    // carries both; VLAN 10 is native on one side only, so it must travel tagged.
    let one = side(
        &t1,
        "trunk 10,20",
        true,
        &[(addr(1), "access 10"), (addr(3), "access 20")],
    );
    let two = side(
        &t2,
        "trunk 10,20",
        false,
        &[(addr(2), "access 10"), (addr(4), "access 20")],
    );
    let (a10, a20) = (&one.hosts[0], &one.hosts[1]);
    let (b10, b20) = (&two.hosts[0], &two.hosts[1]);
    // Same VLAN across the trunk: every echo back, both VLANs.
    let report = ping(&a10.ns, b10.addr, 5);
    assert!(report.all_replied(), "VLAN 10: {report}");
    let report = ping(&a20.ns, b20.addr, 5);
    assert!(report.all_replied(), "VLAN 20: {report}");
    // One subnet, two VLANs: .1 can't reach .4 (ARP for it stays in VLAN 10).
    assert!(ping(&a10.ns, b20.addr, 2).none_replied());
    assert!(ping(&b10.ns, a20.addr, 2).none_replied());
    // TCP through both tag operations, as 64 KiB GSO frames from a's TAP, cut in software for
    // b's plain TAP after the tag came off on the far side: the offsets must have moved with
    // the tag, or the segments' checksums are wrong and b's stack drops them.
    let caught_before = tcp_checksum_errors(&b10.ns);
    let t = tcp_transfer(&a10.ns, &b10.ns, b10.addr, 5501, 32 << 20).expect("tcp");
    assert_eq!(
        tcp_checksum_errors(&b10.ns),
        caught_before,
        "segments arrived with broken checksums (offsets not moved with the tag)"
    );
    assert_eq!(
        (t.received, t.received_digest),
        (t.sent, t.sent_digest),
        "TCP across the trunk"
    );
    // The hosts sent untagged frames only, so their access ports dropped none for their VLAN
    // (the trunks do drop the untagged router solicitations their own namespace's stack sends,
    // having no native VLAN); the fast path stayed off the VLAN ports.
    for side in [&one, &two] {
        for port in &side.switch.ports()[1..] {
            assert_eq!(port.counters().snapshot().drops(DropReason::Vlan), 0);
        }
        assert!(side.switch.fast_path_ports().is_empty());
    }
}

/// A wire into the switch: a veth pair whose outer end is a `dev:` port of the switch and
/// whose inner end, alone in a namespace with no IP stack talking (IPv6 off, no addresses),
/// is written and read raw by a packet socket.
struct Wire {
    outer: String,
    ns: NetnsGuard,
    socket: PacketPort,
}

/// A switch whose `dev:` ports are the wires' outer ends, once every wire carries frames.
fn switch_on(wires: &[Wire]) -> Switch {
    let ports: Vec<(String, Box<dyn PortDevice>)> = wires
        .iter()
        .map(|w| {
            let dev: Box<dyn PortDevice> = Box::new(PacketPort::open(&w.outer).expect("port"));
            (w.outer.clone(), dev)
        })
        .collect();
    let switch = Switch::start(SwitchConfig::default(), ports).expect("switch");
    wires.iter().for_each(Wire::wait_until_up);
    switch
}

/// Marks the test's own frames, so stray frames of the kernel are never counted.
const MARK: &[u8] = b"vswitch-vlan-test";

impl Wire {
    fn new() -> Wire {
        let outer = unique_name("vsw");
        let ns = NetnsGuard::create(&unique_name("vswn")).expect("ns");
        Netlink::open()
            .expect("netlink")
            .add_veth(&outer, "eth0", Some(&ns))
            .expect("veth");
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{outer}/disable_ipv6"), "1");
        let socket = ns
            .run(
                || -> Result<PacketPort, Box<dyn std::error::Error + Send + Sync>> {
                    std::fs::write("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1")?;
                    Netlink::open()?.set_up("eth0")?;
                    Ok(PacketPort::open("eth0")?)
                },
            )
            .expect("enter")
            .expect("packet socket");
        Wire { outer, ns, socket }
    }

    /// Waits until both ends carry frames: the switch sets the outer one up as it opens the
    /// port, and each end sends only once the kernel has started its queue (`IFF_RUNNING`).
    fn wait_until_up(&self) {
        let limit = std::time::Duration::from_secs(5);
        let outer = Netlink::open().and_then(|mut nl| nl.wait_running(&self.outer, limit));
        let inner = self
            .ns
            .run(|| Netlink::open().and_then(|mut nl| nl.wait_running("eth0", limit)))
            .expect("enter");
        assert!(
            outer.expect("outer") && inner.expect("inner"),
            "{} never came up",
            self.outer
        );
    }

    fn inject(&self, frame: &[u8]) {
        let mut buf = vec![0u8; VNET_HDR_LEN];
        buf.extend_from_slice(frame);
        self.socket.send(&buf).expect("inject");
    }

    /// The test's frames that arrived since the last call.
    fn received(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            match self.socket.recv(0, &mut buf) {
                Ok(n) => {
                    let frame = &buf[VNET_HDR_LEN..n];
                    if frame.windows(MARK.len()).any(|w| w == MARK) {
                        out.push(frame.to_vec());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
                Err(e) => panic!("capture: {e}"),
            }
        }
    }
}

/// A frame from `src` to `dst` under `tags` (outermost first), carrying the mark and `id`.
fn frame(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], id: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&0x88b5u16.to_be_bytes()); // local experimental ethertype
    f.extend_from_slice(MARK);
    f.push(id);
    f.resize(f.len().max(60), 0);
    f
}

/// The id `frame` gave a frame.
fn id_of(frame: &[u8]) -> u8 {
    let at = frame
        .windows(MARK.len())
        .position(|w| w == MARK)
        .expect("marked");
    frame[at + MARK.len()]
}

const BCAST: [u8; 6] = [0xff; 6];

fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0x7a, 0, i]
}

/// Injects `sent` on wire `from` and checks that exactly `expect` (wire, bytes) arrived, and
/// nothing anywhere else.
fn exchange(wires: &[Wire], names: &[&str], from: usize, sent: &[u8], expect: &[(usize, Vec<u8>)]) {
    for w in wires {
        w.received();
    }
    wires[from].inject(sent);
    // Until what is expected arrived (a loaded machine may take a while), then a quiet spell
    // for anything unexpected to show.
    let collect = |got: &mut Vec<(usize, Vec<u8>)>| {
        for (i, w) in wires.iter().enumerate() {
            got.extend(w.received().into_iter().map(|f| (i, f)));
        }
    };
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while got.len() < expect.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        collect(&mut got);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    collect(&mut got);
    got.sort();
    let show = |list: &[(usize, Vec<u8>)]| -> Vec<String> {
        list.iter()
            .map(|(i, f)| {
                format!(
                    "{}: {} bytes {:02x?}",
                    names[*i],
                    f.len(),
                    &f[12..f.len().min(22)]
                )
            })
            .collect()
    };
    assert!(
        got == expect,
        "frame {} from {}:
 got  {:?}
 want {:?}",
        id_of(sent),
        names[from],
        show(&got),
        show(expect)
    );
}

/// `frame` with a tag pushed in front of its type (or its outer tag).
fn push(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// `frame` with its outer tag taken off.
fn pop(frame: &[u8]) -> Vec<u8> {
    [&frame[..12], &frame[16..]].concat()
}

fn vlan_drops(switch: &Switch, wire: &Wire) -> u64 {
    switch
        .port(&wire.outer)
        .expect("port")
        .counters()
        .snapshot()
        .drops(DropReason::Vlan)
}

/// Every VLAN mode against raw frames on real links: which ports get which bytes, tag absent,
/// kept, pushed or popped, and what membership drops and counts.
#[test]
fn every_vlan_mode_passes_exactly_the_bytes_it_should() {
    if !require_root("every_vlan_mode_passes_exactly_the_bytes_it_should") {
        return;
    }
    let modes = [
        ("A", "access 10"),
        ("B", "access 10"),
        ("C", "access 20"),
        ("T", "trunk 10,20"),
        ("N", "trunk 10,20 native 10"),
        ("NT", "trunk 10,20 native 10 tagged"),
        ("Q", "tunnel 100"),
        ("QT", "trunk 100"),
    ];
    let names: Vec<&str> = modes.iter().map(|(n, _)| *n).collect();
    let wires: Vec<Wire> = modes.iter().map(|_| Wire::new()).collect();
    let switch = switch_on(&wires);
    for (w, (_, mode)) in wires.iter().zip(&modes) {
        switch
            .set_vlan(&w.outer, mode.parse::<VlanMode>().expect("mode"))
            .expect("set");
    }
    let [a, b, c, t, n, nt, q, qt] = [0, 1, 2, 3, 4, 5, 6, 7];

    let q8 = |vid| (0x8100u16, vid);
    let ad = |vid| (0x88a8u16, vid);
    let x = exchange;

    // Untagged from an access port: its VLAN, tagged on trunks unless native there.
    let f1 = frame(BCAST, mac(1), &[], 1);
    x(
        &wires,
        &names,
        a,
        &f1,
        &[
            (b, f1.clone()),
            (t, push(&f1, 0x8100, 10)),
            (n, f1.clone()),
            (nt, push(&f1, 0x8100, 10)),
        ],
    );
    // Tagged into an access port: dropped and counted.
    let before = vlan_drops(&switch, &wires[a]);
    x(&wires, &names, a, &frame(BCAST, mac(1), &[q8(10)], 2), &[]);
    assert_eq!(vlan_drops(&switch, &wires[a]), before + 1);
    // Tagged into a trunk: popped for access and native-untagged ports, kept for trunks.
    let f3 = frame(BCAST, mac(3), &[q8(20)], 3);
    x(
        &wires,
        &names,
        t,
        &f3,
        &[(c, pop(&f3)), (n, f3.clone()), (nt, f3.clone())],
    );
    // Outside the allowed list, or untagged without a native VLAN: dropped and counted.
    let before = vlan_drops(&switch, &wires[t]);
    x(&wires, &names, t, &frame(BCAST, mac(3), &[q8(30)], 4), &[]);
    x(&wires, &names, t, &frame(BCAST, mac(3), &[], 5), &[]);
    assert_eq!(vlan_drops(&switch, &wires[t]), before + 2);
    // Untagged into a trunk with a native VLAN: in VLAN 10.
    let f6 = frame(BCAST, mac(4), &[], 6);
    x(
        &wires,
        &names,
        n,
        &f6,
        &[
            (a, f6.clone()),
            (b, f6.clone()),
            (t, push(&f6, 0x8100, 10)),
            (nt, push(&f6, 0x8100, 10)),
        ],
    );
    // Native-tagged: its native VLAN arrives tagged too, and leaves tagged.
    let f7 = frame(BCAST, mac(5), &[q8(10)], 7);
    x(
        &wires,
        &names,
        nt,
        &f7,
        &[(a, pop(&f7)), (b, pop(&f7)), (t, f7.clone()), (n, pop(&f7))],
    );
    // QinQ: a customer's frame, tagged or not, gets the service tag (0x88a8) pushed on the
    // provider trunk, and popped on the way back; the customer's own tag is left alone.
    let f8 = frame(BCAST, mac(6), &[q8(10)], 8);
    x(&wires, &names, q, &f8, &[(qt, push(&f8, 0x88a8, 100))]);
    let f9 = frame(BCAST, mac(6), &[], 9);
    x(&wires, &names, q, &f9, &[(qt, push(&f9, 0x88a8, 100))]);
    let f10 = frame(BCAST, mac(7), &[ad(100), q8(10)], 10);
    x(&wires, &names, qt, &f10, &[(q, pop(&f10))]);
    // What membership dropped, by VID: the tagged 10 into an access port, 30 outside a trunk's
    // list, an untagged frame into a trunk without a native VLAN.
    assert_eq!(switch.vlan_drops(), [(0, 1), (10, 1), (30, 1)]);
    // Nothing here was dropped that shouldn't have been.
    for i in [b, c, n, nt, q, qt] {
        assert_eq!(vlan_drops(&switch, &wires[i]), 0, "{}", names[i]);
    }
}

/// The bridge's port flags against raw frames: isolation, each flood class, hairpin, learning,
/// each with a port it applies to and one it doesn't.
#[test]
fn port_flags_flood_isolate_hairpin_and_learn_as_set() {
    if !require_root("port_flags_flood_isolate_hairpin_and_learn_as_set") {
        return;
    }
    let names = ["P0", "P1", "P2", "P3", "P4"];
    let wires: Vec<Wire> = names.iter().map(|_| Wire::new()).collect();
    let switch = switch_on(&wires);
    let set = |i: usize, flag: &str, value: &str| {
        switch
            .set_port_flag(&wires[i].outer, flag, value)
            .expect("flag");
    };
    set(1, "isolated", "on");
    set(2, "isolated", "on");
    set(4, "bcast-flood", "off");
    set(3, "mcast-flood", "off");
    set(0, "flood", "off");
    set(2, "learning", "off");
    set(4, "hairpin", "on");
    let x = exchange;
    let f = |dst, src, id| frame(dst, mac(src), &[], id);

    // Broadcast from an isolated port: not to the other isolated one, nor where bcast-flood is off.
    x(
        &wires,
        &names,
        1,
        &f(BCAST, 1, 1),
        &[(0, f(BCAST, 1, 1)), (3, f(BCAST, 1, 1))],
    );
    // From a port that isn't isolated: to both isolated ones.
    x(
        &wires,
        &names,
        0,
        &f(BCAST, 10, 2),
        &[
            (1, f(BCAST, 10, 2)),
            (2, f(BCAST, 10, 2)),
            (3, f(BCAST, 10, 2)),
        ],
    );
    // Multicast: not where mcast-flood is off (P3), still where bcast-flood is off (P4).
    let group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x07];
    x(
        &wires,
        &names,
        0,
        &f(group, 10, 3),
        &[
            (1, f(group, 10, 3)),
            (2, f(group, 10, 3)),
            (4, f(group, 10, 3)),
        ],
    );
    // Unknown unicast: not where flood is off (P0).
    let nobody = mac(99);
    x(
        &wires,
        &names,
        3,
        &f(nobody, 30, 4),
        &[
            (1, f(nobody, 30, 4)),
            (2, f(nobody, 30, 4)),
            (4, f(nobody, 30, 4)),
        ],
    );
    // Learning: P3's source was learned (known unicast goes to P3 alone); P2's was not (its
    // source floods like any unknown destination).
    x(
        &wires,
        &names,
        2,
        &f(BCAST, 20, 5),
        &[(0, f(BCAST, 20, 5)), (3, f(BCAST, 20, 5))],
    );
    let learned: Vec<MacAddr> = switch.fdb().iter().map(|r| r.key.mac).collect();
    assert!(
        learned.contains(&MacAddr(mac(30))),
        "P3's source is learned"
    );
    assert!(!learned.contains(&MacAddr(mac(20))), "P2 has learning off");
    x(
        &wires,
        &names,
        4,
        &f(mac(30), 40, 6),
        &[(3, f(mac(30), 40, 6))],
    );
    // Hairpin: to a MAC pinned on the port it came from, back out of it only with hairpin on.
    switch
        .add_static(MacAddr(mac(41)), &wires[4].outer)
        .expect("static");
    x(
        &wires,
        &names,
        4,
        &f(mac(41), 40, 7),
        &[(4, f(mac(41), 40, 7))],
    );
    switch
        .add_static(MacAddr(mac(31)), &wires[3].outer)
        .expect("static");
    x(&wires, &names, 3, &f(mac(31), 30, 8), &[]);
}
