//! MACVLAN dispatch with the kernel's macvlan as the oracle: the same topology built twice —
//! kernel macvlan devices on a veth end, and vswitch with that veth end as uplink and TAPs as
//! sub-ports — must give the same all-pairs ping matrix, mode by mode. Needs root.

use std::net::Ipv4Addr;

use vswitch_core::{DropReason, MacvlanMode};
use vswitch_datapath::{MacvlanConfig, PacketPort, PortDevice, Switch, SwitchConfig, Tap};
use vswitch_netns::{LinkGuard, Netlink, NetnsGuard};
use vswitch_testkit::{Host, ip_in, ping, require_root, unique_name};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 100);

/// The outside host: a namespace with one veth end, optionally behind a kernel bridge with
/// hairpin on (a reflective relay, as VEPA expects), and the other end's name here.
struct Outside {
    ns: NetnsGuard,
    uplink: String,
    _uplink_guard: Option<LinkGuard>,
}

fn outside(reflect: bool) -> Outside {
    let ns = NetnsGuard::create(&unique_name("vmo")).expect("ns");
    let uplink = unique_name("vmu");
    Netlink::open()
        .expect("nl")
        .add_veth(&uplink, "o0", Some(&ns))
        .expect("veth");
    let name = ns.name().to_owned();
    // No IPv6 chatter (router solicitations, MLD reports): only the frames the tests send.
    ns.run(|| {
        for conf in ["all", "default", "o0"] {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1")?;
        }
        Ok::<_, std::io::Error>(())
    })
    .expect("enter")
    .expect("sysctl");
    if reflect {
        ip_in(&name, "link add br0 type bridge");
        ip_in(&name, "link set o0 master br0");
        ip_in(&name, "link set o0 type bridge_slave hairpin on");
        ip_in(&name, &format!("addr add {OUTSIDE}/24 dev br0"));
        ip_in(&name, "link set br0 up");
    } else {
        ip_in(&name, &format!("addr add {OUTSIDE}/24 dev o0"));
    }
    ip_in(&name, "link set o0 up");
    Outside {
        ns,
        _uplink_guard: Some(LinkGuard::new(&uplink)),
        uplink,
    }
}

fn sub_port_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 66, 0, i as u8 + 1)
}

/// Pings every ordered pair of (sub-port hosts, outside) concurrently; true where it answered.
fn matrix(hosts: &[&vswitch_netns::Netns], addrs: &[Ipv4Addr]) -> Vec<Vec<bool>> {
    std::thread::scope(|s| {
        let handles: Vec<Vec<_>> = hosts
            .iter()
            .enumerate()
            .map(|(i, from)| {
                addrs
                    .iter()
                    .enumerate()
                    .map(|(j, to)| s.spawn(move || i == j || ping(from, *to, 1).all_replied()))
                    .collect()
            })
            .collect();
        handles
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|h| h.join().expect("ping thread"))
                    .collect()
            })
            .collect()
    })
}

fn kernel_matrix(mode: MacvlanMode, subs: usize, reflect: bool) -> Vec<Vec<bool>> {
    kernel_matrix_with(mode, subs, outside(reflect), |_, _, _| {})
}

/// [`kernel_matrix`] with `out` as the outside, and `setup(namespace, device, i)` run for each
/// kernel macvlan device (source mode's lists) before it moves into its host.
fn kernel_matrix_with(
    mode: MacvlanMode,
    subs: usize,
    out: Outside,
    setup: impl Fn(&str, &str, usize),
) -> Vec<Vec<bool>> {
    let mid = NetnsGuard::create(&unique_name("vmm")).expect("ns");
    Netlink::open()
        .expect("nl")
        .move_to(&out.uplink, &mid)
        .expect("move");
    ip_in(mid.name(), &format!("link set {} up", out.uplink));
    let mut hosts = Vec::new();
    for i in 0..subs {
        let mv = unique_name("vmk");
        ip_in(
            mid.name(),
            &format!(
                "link add link {} name {mv} type macvlan mode {mode}",
                out.uplink
            ),
        );
        setup(mid.name(), &mv, i);
        let ns = NetnsGuard::create(&unique_name("vmh")).expect("ns");
        ip_in(mid.name(), &format!("link set {mv} netns {}", ns.name()));
        ip_in(
            ns.name(),
            &format!("addr add {}/24 dev {mv}", sub_port_addr(i)),
        );
        ip_in(ns.name(), &format!("link set {mv} up"));
        hosts.push(ns);
    }
    let mut all: Vec<&vswitch_netns::Netns> = hosts.iter().map(|h| &**h).collect();
    all.push(&out.ns);
    let mut addrs: Vec<Ipv4Addr> = (0..subs).map(sub_port_addr).collect();
    addrs.push(OUTSIDE);
    matrix(&all, &addrs)
}

/// vswitch in `mode` with the veth end as uplink and `subs` TAP sub-ports in their own hosts.
struct VswitchSide {
    switch: Switch,
    hosts: Vec<Host>,
    out: Outside,
}

fn vswitch_side(mode: MacvlanMode, subs: usize, reflect: bool) -> VswitchSide {
    let out = outside(reflect);
    let mut ports: Vec<(String, Box<dyn PortDevice>)> = vec![(
        out.uplink.clone(),
        Box::new(PacketPort::open(&out.uplink).expect("uplink")),
    )];
    let taps: Vec<String> = (0..subs).map(|_| unique_name("vmt")).collect();
    for tap in &taps {
        ports.push((tap.clone(), Box::new(Tap::open(tap, true).expect("tap"))));
    }
    let config = SwitchConfig {
        threads: 2,
        macvlan: Some(MacvlanConfig {
            mode,
            uplink: out.uplink.clone(),
            bindings: Vec::new(),
            allow_spoofing: Vec::new(),
        }),
        ..SwitchConfig::default()
    };
    let switch = Switch::start(config, ports).expect("switch");
    let hosts = taps
        .iter()
        .enumerate()
        .map(|(i, tap)| Host::with_link(tap, sub_port_addr(i)).expect("host"))
        .collect();
    VswitchSide { switch, hosts, out }
}

fn vswitch_matrix(mode: MacvlanMode, subs: usize, reflect: bool) -> Vec<Vec<bool>> {
    let side = vswitch_side(mode, subs, reflect);
    let mut all: Vec<&vswitch_netns::Netns> = side.hosts.iter().map(|h| &*h.ns).collect();
    all.push(&side.out.ns);
    let mut addrs: Vec<Ipv4Addr> = (0..subs).map(sub_port_addr).collect();
    addrs.push(OUTSIDE);
    matrix(&all, &addrs)
}

fn same_as_the_kernel(mode: MacvlanMode, reflect: bool) {
    let subs = if mode == MacvlanMode::Passthru { 1 } else { 3 };
    let kernel = kernel_matrix(mode, subs, reflect);
    let ours = vswitch_matrix(mode, subs, reflect);
    assert_eq!(
        ours, kernel,
        "{mode} (reflecting outside: {reflect}): rows are sub-ports then the outside host"
    );
    // The matrix must say something: the outside host always reaches sub-port 0.
    assert!(
        kernel[subs][0],
        "{mode}: even the kernel's outside can't reach a sub-port"
    );
}

#[test]
fn macvlan_bridge_matches_the_kernel() {
    if require_root("macvlan_bridge_matches_the_kernel") {
        same_as_the_kernel(MacvlanMode::Bridge, false);
    }
}

#[test]
fn macvlan_private_matches_the_kernel_with_and_without_reflection() {
    if require_root("macvlan_private_matches_the_kernel_with_and_without_reflection") {
        same_as_the_kernel(MacvlanMode::Private, false);
        same_as_the_kernel(MacvlanMode::Private, true);
    }
}

#[test]
fn macvlan_vepa_matches_the_kernel_with_and_without_reflection() {
    if require_root("macvlan_vepa_matches_the_kernel_with_and_without_reflection") {
        same_as_the_kernel(MacvlanMode::Vepa, false);
        same_as_the_kernel(MacvlanMode::Vepa, true);
    }
}

#[test]
fn macvlan_passthru_matches_the_kernel() {
    if require_root("macvlan_passthru_matches_the_kernel") {
        same_as_the_kernel(MacvlanMode::Passthru, false);
    }
}

#[test]
fn macvlan_drops_spoofed_and_unbound_and_floods_uplink_broadcast_to_all_sub_ports() {
    if !require_root(
        "macvlan_drops_spoofed_and_unbound_and_floods_uplink_broadcast_to_all_sub_ports",
    ) {
        return;
    }
    let side = vswitch_side(MacvlanMode::Bridge, 3, false);
    let port = |i: usize| side.switch.ports()[i].counters().snapshot();
    let out = side.out.ns.name().to_owned();
    // Unicast from the uplink to a MAC no sub-port has reaches none, and is counted.
    ip_in(&out, "neigh add 10.66.0.77 lladdr 02:00:00:00:99:99 dev o0");
    let before: Vec<_> = (0..=3).map(port).collect();
    assert!(ping(&side.out.ns, Ipv4Addr::new(10, 66, 0, 77), 2).none_replied());
    assert!(port(0).drops(DropReason::Unbound) >= before[0].drops(DropReason::Unbound) + 2);
    for (i, before) in before.iter().enumerate().skip(1) {
        assert_eq!(
            port(i).tx_packets,
            before.tx_packets,
            "unbound unicast reached sub-port {i}"
        );
    }
    // Broadcast from the uplink (ARP for an address nobody has) reaches every sub-port.
    let before: Vec<_> = (1..=3).map(port).collect();
    assert!(ping(&side.out.ns, Ipv4Addr::new(10, 66, 0, 99), 1).none_replied());
    for (i, b) in before.iter().enumerate() {
        assert!(
            port(i + 1).tx_packets > b.tx_packets,
            "sub-port {} missed the broadcast",
            i + 1
        );
    }
    // A host that takes another MAC is spoofing: its frames are dropped and counted.
    assert!(ping(&side.hosts[0].ns, OUTSIDE, 1).all_replied());
    let host = &side.hosts[0];
    ip_in(
        host.ns.name(),
        &format!("link set {} address 02:00:00:00:66:66", host.ifname),
    );
    let spoofed = port(1).drops(DropReason::Spoofed);
    assert!(ping(&host.ns, OUTSIDE, 2).none_replied());
    assert!(port(1).drops(DropReason::Spoofed) > spoofed);
}

#[test]
fn macvlan_source_matches_the_kernel_and_its_lists_change_at_runtime() {
    if !require_root("macvlan_source_matches_the_kernel_and_its_lists_change_at_runtime") {
        return;
    }
    let subs = 3;
    // Sub-ports 0 and 2 accept the outside host's frames; sub-port 1 accepts nobody's.
    let listed = [0usize, 2];
    let mac_of = |out: &Outside| -> String {
        let info = out
            .ns
            .run(|| Netlink::open().and_then(|mut nl| nl.link("o0")))
            .expect("enter")
            .expect("link");
        info.mac.expect("mac").map(|b| format!("{b:02x}")).join(":")
    };
    let out = outside(false);
    let mac = mac_of(&out);
    let kernel = kernel_matrix_with(MacvlanMode::Source, subs, out, |mid, mv, i| {
        if listed.contains(&i) {
            ip_in(
                mid,
                &format!("link set {mv} type macvlan macaddr add {mac}"),
            );
        }
    });
    assert!(
        kernel[subs][0],
        "even the kernel's outside can't reach a listed sub-port"
    );
    assert!(
        !kernel[subs][1],
        "the kernel delivered to an unlisted sub-port"
    );
    // vswitch: started with empty lists, the same lists bound at runtime.
    let side = vswitch_side(MacvlanMode::Source, subs, false);
    let mac: vswitch_core::MacAddr = mac_of(&side.out).parse().expect("mac");
    let names: Vec<String> = side.switch.ports()[1..]
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    for &i in &listed {
        side.switch.macvlan_bind(mac, &names[i]).expect("bind");
    }
    let mut all: Vec<&vswitch_netns::Netns> = side.hosts.iter().map(|h| &*h.ns).collect();
    all.push(&side.out.ns);
    let mut addrs: Vec<Ipv4Addr> = (0..subs).map(sub_port_addr).collect();
    addrs.push(OUTSIDE);
    let ours = matrix(&all, &addrs);
    assert_eq!(
        ours, kernel,
        "source mode: rows are sub-ports then the outside host"
    );
    // Taken off sub-port 0's list at runtime: the outside no longer reaches it.
    assert!(side.switch.macvlan_unbind(mac, &names[0]).expect("unbind"));
    assert!(ping(&side.out.ns, sub_port_addr(0), 2).none_replied());
    assert!(ping(&side.out.ns, sub_port_addr(2), 1).all_replied());
}
