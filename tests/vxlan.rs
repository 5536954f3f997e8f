//! VXLAN ports against Linux's own vxlan device as the oracle: a host behind vswitch's VXLAN
//! port reaches a namespace whose kernel vxlan interface has the same VNI, across an underlay
//! of two namespaces. Needs root.

use std::net::Ipv4Addr;
use std::process::Command;

use vswitch_datapath::{
    KernelVxlanPort, PacketPort, PortDevice, Steering, Switch, SwitchConfig, Tap, VxlanConfig,
    VxlanPort,
};
use vswitch_netns::{LinkGuard, Netlink, NetnsGuard};
use vswitch_testkit::{Host, ip_in, ping, require_root, tcp_transfer, unique_name};

/// The VXLAN port's own counters (per VTEP, decap drops), by name.
fn device_counters(sw: &Switch, port: &str) -> std::collections::HashMap<String, u64> {
    sw.port(port)
        .expect("port")
        .device()
        .counters()
        .into_iter()
        .collect()
}

/// Underlay: namespace `ours` (10.95.0.1) and `theirs` (10.95.0.2) joined by a veth pair; in
/// `theirs`, a kernel vxlan device with VNI `vni` towards 10.95.0.1:`dstport` enslaved to a
/// kernel bridge with address 10.96.0.2/24 (MTU 1450, the vxlan's).
fn underlay(vni: u32, dstport: u16) -> (NetnsGuard, NetnsGuard) {
    underlay_with(
        vni,
        dstport,
        ["10.95.0.1/24", "10.95.0.2/24"],
        ("10.95.0.2", "10.95.0.1"),
    )
}

/// [`underlay`] with the given underlay addresses, and the kernel's local and remote.
fn underlay_with(
    vni: u32,
    dstport: u16,
    addrs: [&str; 2],
    kernel: (&str, &str),
) -> (NetnsGuard, NetnsGuard) {
    let ours = NetnsGuard::create(&unique_name("vxu")).expect("ns");
    let theirs = NetnsGuard::create(&unique_name("vxk")).expect("ns");
    ours.run(|| Netlink::open()?.add_veth("u0", "u1", Some(&theirs)))
        .expect("enter")
        .expect("veth");
    let nodad = if addrs[0].contains(':') { " nodad" } else { "" };
    ip_in(ours.name(), &format!("addr add {} dev u0{nodad}", addrs[0]));
    ip_in(ours.name(), "link set u0 up");
    ip_in(
        theirs.name(),
        &format!("addr add {} dev u1{nodad}", addrs[1]),
    );
    ip_in(theirs.name(), "link set u1 up");
    ip_in(
        theirs.name(),
        &format!(
            "link add vx0 type vxlan id {vni} local {} remote {} dstport {dstport}",
            kernel.0, kernel.1
        ),
    );
    // As on a machine whose vxlan joins a bridge: the address lives on the bridge.
    ip_in(theirs.name(), "link add br0 type bridge");
    ip_in(theirs.name(), "link set vx0 master br0");
    ip_in(theirs.name(), "addr add 10.96.0.2/24 dev br0");
    ip_in(theirs.name(), "link set vx0 up");
    ip_in(theirs.name(), "link set br0 up");
    (ours, theirs)
}

/// The MAC of the kernel bridge `br0` in `ns` (the kernel side's address lives on it).
fn bridge_mac(ns: &NetnsGuard) -> vswitch_core::MacAddr {
    ns.run(|| Netlink::open().and_then(|mut nl| nl.link("br0")))
        .expect("enter")
        .expect("link")
        .mac
        .map(vswitch_core::MacAddr)
        .expect("mac")
}

/// vswitch with a TAP host (10.96.0.1, MTU 1450) and a VXLAN port in `ours`.
fn switch(ours: &NetnsGuard, vni: u32, dstport: u16) -> (Switch, Host, String) {
    switch_with(
        ours,
        &format!("vni={vni},local=10.95.0.1,remote=10.95.0.2+10.95.0.9,dstport={dstport}"),
        1450,
    )
}

/// vswitch with a TAP host (10.96.0.1, MTU `mtu`) and a VXLAN port of `params` in `ours`.
fn switch_with(ours: &NetnsGuard, params: &str, mtu: u32) -> (Switch, Host, String) {
    let port = unique_name("vxp");
    let config =
        VxlanConfig::parse(&format!("{port}:{params},netns={}", ours.name())).expect("spec");
    let vxlan = VxlanPort::open(config).expect("vxlan port");
    let tap_name = unique_name("vxt");
    let tap = Tap::open_queues(&tap_name, true, 2).expect("tap");
    let (sw, host) = with_host(
        vec![
            (port.clone(), Box::new(vxlan)),
            (tap_name.clone(), Box::new(tap)),
        ],
        &tap_name,
        mtu,
    );
    (sw, host, port)
}

/// A two-worker switch on `ports`, and host 10.96.0.1 on `link` (one end of a port of it) with
/// MTU `mtu`.
fn with_host(ports: Vec<(String, Box<dyn PortDevice>)>, link: &str, mtu: u32) -> (Switch, Host) {
    let config = SwitchConfig {
        threads: 2,
        ..SwitchConfig::default()
    };
    let sw = Switch::start(config, ports).expect("switch");
    let host = Host::with_link(link, Ipv4Addr::new(10, 96, 0, 1)).expect("host");
    host.set_mtu(mtu).expect("mtu");
    (sw, host)
}

#[test]
fn a_host_behind_a_vxlan_port_talks_to_linux_vxlan_with_the_same_vni() {
    if !require_root("a_host_behind_a_vxlan_port_talks_to_linux_vxlan_with_the_same_vni") {
        return;
    }
    let (ours, theirs) = underlay(4242, 4789);
    let (sw, host, port) = switch(&ours, 4242, 4789);
    let report = ping(&host.ns, Ipv4Addr::new(10, 96, 0, 2), 5);
    assert!(report.all_replied(), "{report}");
    // TCP both ways, hashed: 64 KiB GSO frames from the TAP cut to the tunnel's MTU.
    let t = tcp_transfer(
        &host.ns,
        &theirs,
        Ipv4Addr::new(10, 96, 0, 2),
        5601,
        16 << 20,
    )
    .expect("tcp to the kernel's side");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    let t = tcp_transfer(&theirs, &host.ns, host.addr, 5602, 16 << 20)
        .expect("tcp from the kernel's side");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    // Counted per remote VTEP, no decap drops. Floods (ARP) went to both remotes, the
    // transfers only to the VTEP the kernel's MAC was learned behind.
    let vxlan = sw.port(&port).expect("port");
    let counters = device_counters(&sw, &port);
    // Each way carried one transfer's 16 MiB (datagrams: as many as the senders' GSO made;
    // the kernel's vxlan hands over up to 64 KiB of inner TCP in one).
    for way in ["rx", "tx"] {
        let bytes = counters[&format!("vtep_10.95.0.2_{way}_bytes")];
        let packets = counters[&format!("vtep_10.95.0.2_{way}_packets")];
        assert!(
            bytes >= 16 << 20 && packets >= bytes / 65_536,
            "{counters:?}"
        );
    }
    let to_nobody = counters["vtep_10.95.0.9_tx_packets"];
    assert!(
        (1..10).contains(&to_nobody),
        "head-end replication: {counters:?}"
    );
    for reason in ["short", "bad_flags", "unknown_vni", "bad_inner"] {
        assert_eq!(counters[&format!("decap_{reason}")], 0, "{reason}");
    }
    assert_eq!(vxlan.mtu(), 1450);
    // The kernel's vxlan FDB learned our host's MAC behind our VTEP.
    let fdb = Command::new("bridge")
        .args(["-n", theirs.name(), "fdb", "show", "dev", "vx0"])
        .output()
        .expect("bridge");
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    let mac = host.mac().expect("mac");
    assert!(
        fdb.lines()
            .any(|l| l.starts_with(&mac) && l.contains("dst 10.95.0.1")),
        "{mac} not learned behind 10.95.0.1:\n{fdb}"
    );
}

#[test]
fn another_vni_or_another_port_does_not_interoperate_and_is_counted() {
    if !require_root("another_vni_or_another_port_does_not_interoperate_and_is_counted") {
        return;
    }
    // The kernel's VNI 7 against ours 8: datagrams arrive and are dropped as unknown VNI.
    let (ours, _theirs) = underlay(7, 4789);
    let (sw, host, port) = switch(&ours, 8, 4789);
    assert!(ping(&host.ns, Ipv4Addr::new(10, 96, 0, 2), 2).none_replied());
    let counters = device_counters(&sw, &port);
    assert!(counters["decap_unknown_vni"] > 0, "{counters:?}");
    // Linux's default port (8472) against IANA's: nothing at all gets through.
    let (ours, _theirs) = underlay(9, 8472);
    let (_sw, host, _port) = switch(&ours, 9, 4789);
    assert!(ping(&host.ns, Ipv4Addr::new(10, 96, 0, 2), 2).none_replied());
}

#[test]
fn an_ipv6_underlay_and_a_static_remote_without_learning_interoperate_too() {
    if !require_root("an_ipv6_underlay_and_a_static_remote_without_learning_interoperate_too") {
        return;
    }
    let (ours, theirs) = underlay_with(
        77,
        4789,
        ["fd95::1/64", "fd95::2/64"],
        ("fd95::2", "fd95::1"),
    );
    // The kernel's bridge MAC, pinned behind its VTEP: with learning off, only the static entry
    // sends unicast there instead of to every remote.
    let kernel_mac = bridge_mac(&theirs);
    let (sw, host, port) = switch_with(
        &ours,
        "vni=77,local=fd95::1,remote=fd95::2+fd95::9,learning=off,srcport=40000-40999",
        1430,
    );
    sw.add_static_at(kernel_mac, &port, Some("fd95::2".parse().expect("ip")))
        .expect("static remote");
    assert_eq!(
        sw.port(&port).expect("port").mtu(),
        1430,
        "IPv6: 70 bytes of overhead"
    );
    let report = ping(&host.ns, Ipv4Addr::new(10, 96, 0, 2), 5);
    assert!(report.all_replied(), "{report}");
    let t = tcp_transfer(
        &host.ns,
        &theirs,
        Ipv4Addr::new(10, 96, 0, 2),
        5603,
        8 << 20,
    )
    .expect("tcp over IPv6");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    let counters = device_counters(&sw, &port);
    assert!(counters["vtep_fd95::2_tx_packets"] > 1000, "{counters:?}");
    assert!(
        counters["vtep_fd95::9_tx_packets"] < 10,
        "unicast replicated: {counters:?}"
    );
}

/// One "machine" of three: a switch in the first namespace whose VXLAN port lives in the
/// machine's underlay namespace, and TAP hosts.
struct Machine {
    sw: Switch,
    port: String,
    hosts: Vec<Host>,
}

/// Machine `i` (1..=3) of an underlay 10.97.0.0/24, with hosts at the given addresses.
fn machine(underlay: &NetnsGuard, i: u8, hosts: &[Ipv4Addr]) -> Machine {
    machine_carried_by(underlay, i, hosts, "switch")
}

/// [`machine`] with the VXLAN port carried by `carrier` (`switch` or `kernel`).
fn machine_carried_by(underlay: &NetnsGuard, i: u8, hosts: &[Ipv4Addr], carrier: &str) -> Machine {
    let others: Vec<String> = (1..=3u8)
        .filter(|j| *j != i)
        .map(|j| format!("10.97.0.{j}"))
        .collect();
    let port = unique_name("vxm");
    let config = VxlanConfig::parse(&format!(
        "{port}:vni=97,local=10.97.0.{i},remote={},netns={},carrier={carrier}",
        others.join("+"),
        underlay.name()
    ))
    .expect("spec");
    let vxlan: Box<dyn PortDevice> = if carrier == "kernel" {
        Box::new(KernelVxlanPort::open(&config, 1, Steering::Flow).expect("vxlan"))
    } else {
        Box::new(VxlanPort::open(config).expect("vxlan"))
    };
    let mut ports: Vec<(String, Box<dyn PortDevice>)> = vec![(port.clone(), vxlan)];
    let taps: Vec<String> = hosts.iter().map(|_| unique_name("vxh")).collect();
    for tap in &taps {
        ports.push((
            tap.clone(),
            Box::new(Tap::open_queues(tap, true, 1).expect("tap")),
        ));
    }
    let sw = Switch::start(
        SwitchConfig {
            threads: 1,
            ..SwitchConfig::default()
        },
        ports,
    )
    .expect("switch");
    let hosts = taps
        .iter()
        .zip(hosts)
        .map(|(tap, addr)| {
            let host = Host::with_link(tap, *addr).expect("host");
            host.set_mtu(1450).expect("mtu");
            host
        })
        .collect();
    Machine { sw, port, hosts }
}

/// The MAC of the host that moves between machines 2 and 3 (their second hosts).
const MOVER: &str = "02:00:00:00:97:09";

/// Gives the second hosts of machines 2 and 3 the mover's MAC (one host, two places) and brings
/// it up on machine 2.
fn place_mover(m2: &Machine, m3: &Machine) {
    for host in [&m2.hosts[1], &m3.hosts[1]] {
        ip_in(host.ns.name(), &format!("link set {} down", host.ifname));
        ip_in(
            host.ns.name(),
            &format!("link set {} address {MOVER}", host.ifname),
        );
    }
    ip_in(
        m2.hosts[1].ns.name(),
        &format!("link set {} up", m2.hosts[1].ifname),
    );
}

/// The mover goes down on machine 2 and up on machine 3.
fn move_mover(m2: &Machine, m3: &Machine) {
    ip_in(
        m2.hosts[1].ns.name(),
        &format!("link set {} down", m2.hosts[1].ifname),
    );
    ip_in(
        m3.hosts[1].ns.name(),
        &format!("link set {} up", m3.hosts[1].ifname),
    );
}

/// An underlay LAN (a kernel bridge in the first namespace, standing for the physical network)
/// and three machines' underlay namespaces on it, 10.97.0.1 to .3.
fn lan_of_three() -> (NetnsGuard, Vec<NetnsGuard>) {
    let lan = NetnsGuard::create(&unique_name("vxl")).expect("ns");
    ip_in(lan.name(), "link add br0 type bridge");
    ip_in(lan.name(), "link set br0 up");
    let underlays: Vec<NetnsGuard> = (1..=3u8)
        .map(|i| {
            let ns = NetnsGuard::create(&unique_name("vxn")).expect("ns");
            ns.run(|| Netlink::open()?.add_veth("u0", &format!("m{i}"), Some(&lan)))
                .expect("enter")
                .expect("veth");
            ip_in(ns.name(), &format!("addr add 10.97.0.{i}/24 dev u0"));
            ip_in(ns.name(), "link set u0 up");
            ip_in(lan.name(), &format!("link set m{i} master br0"));
            ip_in(lan.name(), &format!("link set m{i} up"));
            ns
        })
        .collect();
    (lan, underlays)
}

/// Three machines on one underlay LAN (a kernel bridge, standing for the physical network):
/// floods reach both remotes by head-end replication, every host reaches every other, and a
/// host that moves to another machine is relearned behind its new VTEP.
#[test]
fn three_machines_replicate_floods_and_relearn_a_host_that_moved() {
    if !require_root("three_machines_replicate_floods_and_relearn_a_host_that_moved") {
        return;
    }
    let (_lan, underlays) = lan_of_three();
    let addr = |n| Ipv4Addr::new(10, 98, 0, n);
    // The moving host stands on machines 2 and 3 with one MAC and address; it is up on 2 first.
    let m1 = machine(&underlays[0], 1, &[addr(1)]);
    let m2 = machine(&underlays[1], 2, &[addr(2), addr(9)]);
    let m3 = machine(&underlays[2], 3, &[addr(3), addr(9)]);
    place_mover(&m2, &m3);

    // Every host reaches every other; the first ARP from machine 1 went to both remotes.
    let a = &m1.hosts[0];
    for to in [addr(2), addr(3), addr(9)] {
        assert!(ping(&a.ns, to, 3).all_replied(), "1 -> {to}");
    }
    assert!(ping(&m2.hosts[0].ns, addr(3), 3).all_replied(), "2 -> 3");

    // TCP between two switches, hashed: the sender's GSO frames go as UDP_SEGMENT trains, and
    // the receiving port joins each train's segments back into GSO frames for its host, so it
    // hands its switch far fewer frames than datagrams arrived.
    let rx = |m: &Machine| {
        let datagrams = device_counters(&m.sw, &m.port)["vtep_10.97.0.1_rx_packets"];
        let frames =
            m.sw.port(&m.port)
                .expect("port")
                .counters()
                .snapshot()
                .rx_packets;
        (datagrams, frames)
    };
    let (datagrams, frames) = rx(&m2);
    let t = tcp_transfer(&a.ns, &m2.hosts[0].ns, addr(2), 5603, 32 << 20).expect("tcp 1 -> 2");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    let (datagrams, frames) = (rx(&m2).0 - datagrams, rx(&m2).1 - frames);
    assert!(datagrams > 20_000, "{datagrams} datagrams for 32 MiB");
    assert!(
        frames * 4 < datagrams,
        "not joined: {frames} frames of {datagrams} datagrams"
    );
    let tx = |m: &Machine, vtep: &str| {
        device_counters(&m.sw, &m.port)[&format!("vtep_{vtep}_tx_packets")]
    };
    assert!(
        tx(&m1, "10.97.0.2") > 0 && tx(&m1, "10.97.0.3") > 0,
        "head-end replication"
    );

    // The host moves: down on machine 2, up on machine 3 (it speaks first, as a moved VM's
    // gratuitous ARP would). Machine 1 relearns it behind machine 3's VTEP.
    move_mover(&m2, &m3);
    assert!(
        ping(&m3.hosts[1].ns, addr(1), 3).all_replied(),
        "the moved host -> 1"
    );
    let (to2, to3) = (tx(&m1, "10.97.0.2"), tx(&m1, "10.97.0.3"));
    let report = ping(&a.ns, addr(9), 20);
    assert!(report.all_replied(), "1 -> the moved host: {report}");
    assert!(
        tx(&m1, "10.97.0.3") >= to3 + 20,
        "its frames go to machine 3 now"
    );
    assert_eq!(tx(&m1, "10.97.0.2"), to2, "and none to machine 2");
}

/// vswitch with a veth host (10.96.0.1, MTU `mtu`) on a `dev:` port and a kernel-carried VXLAN
/// port of `params` whose socket lives in `ours`.
fn kernel_carried(ours: &NetnsGuard, params: &str, mtu: u32) -> KernelCarried {
    let port = unique_name("vxk");
    let (outer, inner) = (unique_name("vxo"), unique_name("vxi"));
    Netlink::open()
        .and_then(|mut nl| nl.add_veth(&outer, &inner, None))
        .expect("veth");
    let outer_guard = LinkGuard::new(&outer);
    // The tunnel's MTU on the switch's side too: the fast path takes a port's frames to a port
    // of a smaller MTU never.
    Netlink::open()
        .and_then(|mut nl| nl.set_mtu(&outer, mtu))
        .expect("mtu");
    let config = VxlanConfig::parse(&format!(
        "{port}:{params},carrier=kernel,netns={}",
        ours.name()
    ))
    .expect("spec");
    let vxlan = KernelVxlanPort::open(&config, 2, Steering::Flow).expect("kernel vxlan port");
    let host_port = PacketPort::open_queues(&outer, 2, Steering::Flow).expect("dev port");
    let (sw, host) = with_host(
        vec![
            (port.clone(), Box::new(vxlan)),
            (outer.clone(), Box::new(host_port)),
        ],
        &inner,
        mtu,
    );
    KernelCarried {
        sw,
        host,
        port,
        _outer: outer_guard,
    }
}

struct KernelCarried {
    sw: Switch,
    host: Host,
    port: String,
    _outer: LinkGuard,
}

/// `bridge fdb show dev DEV` in namespace `ns` (`None`: this one).
fn fdb_show(ns: Option<&str>, dev: &str) -> String {
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["fdb", "show", "dev", dev]);
    let out = Command::new("bridge").args(&args).output().expect("bridge");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// With `carrier=kernel`, a Linux vxlan device the switch made carries the tunnel, and the fast
/// path carries known unicast between it and a `dev:` port: the same interop as the userspace
/// carrier, and the frames counted as the fast path's.
#[test]
fn a_kernel_carried_vxlan_port_talks_to_linux_vxlan_on_the_fast_path() {
    if !require_root("a_kernel_carried_vxlan_port_talks_to_linux_vxlan_on_the_fast_path") {
        return;
    }
    let (ours, theirs) = underlay(4244, 4789);
    let k = kernel_carried(
        &ours,
        "vni=4244,local=10.95.0.1,remote=10.95.0.2+10.95.0.9",
        1450,
    );
    let report = ping(&k.host.ns, Ipv4Addr::new(10, 96, 0, 2), 5);
    assert!(report.all_replied(), "{report}");
    let t = tcp_transfer(
        &k.host.ns,
        &theirs,
        Ipv4Addr::new(10, 96, 0, 2),
        5611,
        16 << 20,
    )
    .expect("tcp to the kernel's side");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    let t = tcp_transfer(&theirs, &k.host.ns, k.host.addr, 5612, 16 << 20)
        .expect("tcp from the kernel's side");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    // Both ways went through the kernel: most frames on the fast path, all counted.
    let stats = k.sw.stats();
    let vxlan = stats.ports.iter().find(|p| p.name == k.port).expect("port");
    assert_eq!((vxlan.kind, vxlan.mtu), ("vxlan-kernel", 1450));
    assert!(vxlan.fast_path, "the fast path serves the vxlan port");
    let c = &vxlan.counters;
    assert!(
        c.fast_rx_packets * 2 > c.rx_packets && c.fast_tx_packets * 2 > c.tx_packets,
        "{c:?}"
    );
    assert!(c.rx_bytes >= 16 << 20 && c.tx_bytes >= 16 << 20, "{c:?}");
    // What the kernel counts of its own: no errors.
    let kernel = device_counters(&k.sw, &k.port);
    for key in ["kernel_rx_errors", "kernel_tx_errors"] {
        assert_eq!(kernel.get(key), Some(&0), "{kernel:?}");
    }
    // Head-end replication to both remotes, and each side learned the other behind its VTEP.
    let ours_fdb = fdb_show(None, &k.port);
    for remote in ["10.95.0.2", "10.95.0.9"] {
        assert!(
            ours_fdb
                .lines()
                .any(|l| l.starts_with("00:00:00:00:00:00") && l.contains(&format!("dst {remote}"))),
            "no flood entry for {remote}:\n{ours_fdb}"
        );
    }
    let kernel_mac = bridge_mac(&theirs).to_string();
    assert!(
        ours_fdb
            .lines()
            .any(|l| l.starts_with(&kernel_mac) && l.contains("dst 10.95.0.2")),
        "{kernel_mac} not learned behind 10.95.0.2:\n{ours_fdb}"
    );
    let theirs_fdb = fdb_show(Some(theirs.name()), "vx0");
    let mac = k.host.mac().expect("mac");
    assert!(
        theirs_fdb
            .lines()
            .any(|l| l.starts_with(&mac) && l.contains("dst 10.95.0.1")),
        "{mac} not learned behind 10.95.0.1:\n{theirs_fdb}"
    );
    // The device goes with the switch.
    let port = k.port.clone();
    drop(k);
    assert!(
        !Netlink::open()
            .and_then(|mut nl| nl.link_exists(&port))
            .expect("netlink"),
        "vxlan device {port} left behind"
    );
}

/// Over IPv6, with learning off: a MAC pinned with `fdb add ... --dst` is a static entry of the
/// device's FDB, unicast goes there, and `fdb del` takes it out again.
#[test]
fn a_kernel_carried_port_over_ipv6_pins_static_remotes() {
    if !require_root("a_kernel_carried_port_over_ipv6_pins_static_remotes") {
        return;
    }
    let (ours, theirs) = underlay_with(
        78,
        4789,
        ["fd95::1/64", "fd95::2/64"],
        ("fd95::2", "fd95::1"),
    );
    let kernel_mac = bridge_mac(&theirs);
    let k = kernel_carried(
        &ours,
        "vni=78,local=fd95::1,remote=fd95::2,learning=off,srcport=41000-41999",
        1430,
    );
    assert_eq!(
        k.sw.port(&k.port).expect("port").mtu(),
        1430,
        "IPv6: 70 bytes"
    );
    k.sw.add_static_at(kernel_mac, &k.port, Some("fd95::2".parse().expect("ip")))
        .expect("static remote");
    let pinned = |fdb: &str| {
        fdb.lines().any(|l| {
            l.starts_with(&kernel_mac.to_string())
                && l.contains("dst fd95::2")
                && l.contains("permanent")
        })
    };
    let fdb = fdb_show(None, &k.port);
    assert!(pinned(&fdb), "{fdb}");
    assert!(
        !fdb.lines()
            .any(|l| l.starts_with(&k.host.mac().expect("mac"))),
        "learning is off: {fdb}"
    );
    let report = ping(&k.host.ns, Ipv4Addr::new(10, 96, 0, 2), 5);
    assert!(report.all_replied(), "{report}");
    let t = tcp_transfer(
        &k.host.ns,
        &theirs,
        Ipv4Addr::new(10, 96, 0, 2),
        5613,
        8 << 20,
    )
    .expect("tcp over IPv6");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    assert!(k.sw.remove_fdb(kernel_mac).expect("fdb del"));
    let fdb = fdb_show(None, &k.port);
    assert!(!pinned(&fdb), "still pinned after fdb del:\n{fdb}");
}

/// The three machines again, each VXLAN port carried by a Linux vxlan device: floods reach
/// both remotes (the all-zeros entries), and the kernel's FDB relearns a host that moved.
#[test]
fn three_kernel_carried_machines_replicate_floods_and_relearn_a_host_that_moved() {
    if !require_root("three_kernel_carried_machines_replicate_floods_and_relearn_a_host_that_moved")
    {
        return;
    }
    let (_lan, underlays) = lan_of_three();
    let addr = |n| Ipv4Addr::new(10, 98, 0, n);
    let m1 = machine_carried_by(&underlays[0], 1, &[addr(1)], "kernel");
    let m2 = machine_carried_by(&underlays[1], 2, &[addr(2), addr(9)], "kernel");
    let m3 = machine_carried_by(&underlays[2], 3, &[addr(3), addr(9)], "kernel");
    place_mover(&m2, &m3);
    let a = &m1.hosts[0];
    for to in [addr(2), addr(3), addr(9)] {
        assert!(ping(&a.ns, to, 3).all_replied(), "1 -> {to}");
    }
    let t = tcp_transfer(&a.ns, &m2.hosts[0].ns, addr(2), 5614, 16 << 20).expect("tcp 1 -> 2");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    // Machine 1's first ARP reached both others: each learned its host behind 10.97.0.1.
    let a_mac = a.mac().expect("mac");
    for m in [&m2, &m3] {
        let fdb = fdb_show(None, &m.port);
        assert!(
            fdb.lines()
                .any(|l| l.starts_with(&a_mac) && l.contains("dst 10.97.0.1")),
            "{a_mac} not learned on {}:\n{fdb}",
            m.port
        );
    }
    let behind = |vtep: &str| {
        fdb_show(None, &m1.port)
            .lines()
            .any(|l| l.starts_with(MOVER) && l.contains(&format!("dst {vtep}")))
    };
    assert!(behind("10.97.0.2"), "the mover first behind machine 2");
    // The host moves to machine 3 and speaks first; machine 1 relearns it there.
    move_mover(&m2, &m3);
    assert!(
        ping(&m3.hosts[1].ns, addr(1), 3).all_replied(),
        "the moved host -> 1"
    );
    let report = ping(&a.ns, addr(9), 10);
    assert!(report.all_replied(), "1 -> the moved host: {report}");
    assert!(
        behind("10.97.0.3") && !behind("10.97.0.2"),
        "not relearned behind machine 3:\n{}",
        fdb_show(None, &m1.port)
    );
}

/// A kernel vxlan device that a switch made and left when it died (no `Drop` ran) is removed
/// when a switch opens a port of that name again; one a live switch or anyone else owns is not.
#[test]
fn a_vxlan_device_left_by_a_dead_switch_is_replaced_and_no_other() {
    if !require_root("a_vxlan_device_left_by_a_dead_switch_is_replaced_and_no_other") {
        return;
    }
    let underlay = NetnsGuard::create(&unique_name("vxd")).expect("ns");
    let name = unique_name("vxd");
    let _guard = LinkGuard::new(&name);
    let config = VxlanConfig::parse(&format!(
        "{name}:vni=5,local=10.95.9.1,remote=10.95.9.2,carrier=kernel,netns={}",
        underlay.name()
    ))
    .expect("spec");
    let open = || KernelVxlanPort::open(&config, 1, Steering::Flow);
    // A port whose `Drop` never runs, as after SIGKILL; but its process (this one) lives.
    std::mem::forget(open().expect("first"));
    assert!(open().is_err(), "a live switch's device was taken over");
    let set_alias = |alias: &str| {
        Netlink::open()
            .and_then(|mut nl| nl.set_alias(&name, alias))
            .expect("alias")
    };
    // Someone else's device of that name stays.
    set_alias("made by hand");
    assert!(open().is_err(), "someone else's device was taken over");
    // A dead switch's (no process has that id) is replaced.
    set_alias(&format!("vswitch vxlan, pid {}", i32::MAX));
    let port = open().expect("replacing a dead switch's device");
    let alias = Netlink::open()
        .and_then(|mut nl| nl.link(&name))
        .expect("link")
        .alias;
    assert_eq!(
        alias,
        Some(format!("vswitch vxlan, pid {}", std::process::id()))
    );
    drop(port);
    assert!(
        !Netlink::open()
            .and_then(|mut nl| nl.link_exists(&name))
            .expect("netlink")
    );
}
