//! VLANs against real kernel stacks: two switches joined by a trunk (a veth pair between
//! `dev:` ports), hosts on access ports over TAPs with offloads. Needs root.

use std::net::Ipv4Addr;

use vswitch_core::{DropReason, VlanMode};
use vswitch_datapath::{PacketPort, PortDevice, Switch, SwitchConfig, Tap};
use vswitch_netns::{LinkGuard, Netlink};
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
