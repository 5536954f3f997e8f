//! The namespace and veth library against the kernel, each result checked through a second
//! path (`ip`, used in tests only). Needs root.

use std::net::IpAddr;
use std::process::Command;

use vswitch_netns::{LinkGuard, Netlink, Netns, NetnsError, NetnsGuard};
use vswitch_testkit::{require_root, unique_name};

/// `ip [-n NS] ARGS`, stdout.
fn ip(netns: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(args).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn namespaces_are_created_listed_entered_and_deleted_like_ip_netns() {
    if !require_root("namespaces_are_created_listed_entered_and_deleted_like_ip_netns") {
        return;
    }
    let name = unique_name("vsn");
    {
        let ns = NetnsGuard::create(&name).expect("create");
        assert!(
            ip(None, &["netns", "list"]).contains(&name),
            "ip netns list doesn't see it"
        );
        assert!(Netns::list().expect("list").contains(&name));
        assert!(matches!(Netns::create(&name), Err(NetnsError::NamespaceExists(n)) if n == name));
        // Inside, only loopback exists (and it is up); outside, our links are not there.
        let links = ns
            .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
            .expect("run")
            .expect("read");
        assert_eq!(links.lines().count(), 3, "{links}");
        assert!(ip(Some(&name), &["link", "show", "lo"]).contains("UP"));
        let out = Command::new("ip")
            .args(["netns", "exec", &name, "true"])
            .status()
            .expect("ip");
        assert!(out.success(), "ip netns exec can't enter it");
    }
    assert!(!ip(None, &["netns", "list"]).contains(&name), "not deleted");
    assert!(matches!(
        Netns::delete(&name),
        Err(NetnsError::NamespaceNotFound(_))
    ));
    assert!(matches!(
        Netns::open(&name),
        Err(NetnsError::NamespaceNotFound(_))
    ));
    assert!(matches!(
        Netns::create("a/b"),
        Err(NetnsError::InvalidNamespaceName(_))
    ));
}

#[test]
fn veth_pairs_move_rename_mtu_addresses_and_routes() {
    if !require_root("veth_pairs_move_rename_mtu_addresses_and_routes") {
        return;
    }
    let ns = NetnsGuard::create(&unique_name("vsn")).expect("ns");
    let (a, b) = (unique_name("vsa"), unique_name("vsb"));
    let mut nl = Netlink::open().expect("netlink");
    nl.add_veth(&a, &b, Some(&ns)).expect("veth");
    let _guard = LinkGuard::new(&a);
    assert!(ip(None, &["-d", "-o", "link", "show", &a]).contains("veth"));
    assert!(
        ip(Some(ns.name()), &["-o", "link", "show", &b]).contains(&b),
        "peer not in the namespace"
    );
    assert!(matches!(
        nl.add_veth(&a, "x", None),
        Err(NetnsError::LinkExists(_))
    ));

    nl.set_mtu(&a, 9000).expect("mtu");
    assert_eq!(nl.link(&a).expect("link").mtu, Some(9000));
    assert!(ip(None, &["-o", "link", "show", &a]).contains("mtu 9000"));
    nl.set_mac(&a, [0x02, 0, 0, 0x12, 0x34, 0x56]).expect("mac");
    assert!(ip(None, &["-o", "link", "show", &a]).contains("02:00:00:12:34:56"));

    let renamed = unique_name("vsr");
    nl.rename(&a, &renamed).expect("rename");
    let _guard2 = LinkGuard::new(&renamed);
    assert!(!nl.link_exists(&a).expect("exists"));
    nl.rename(&renamed, &a).expect("rename back");

    ns.run(|| -> Result<(), NetnsError> {
        let mut nl = Netlink::open()?;
        nl.add_address(&b, "10.88.0.2".parse::<IpAddr>().expect("ip"), 24)?;
        nl.add_address(&b, "fd00:88::2".parse::<IpAddr>().expect("ip"), 64)?;
        nl.set_up(&b)?;
        nl.add_default_route("10.88.0.1".parse().expect("ip"))
    })
    .expect("run")
    .expect("configure");
    let addrs = ip(Some(ns.name()), &["-o", "addr", "show", "dev", &b]);
    assert!(
        addrs.contains("10.88.0.2/24") && addrs.contains("fd00:88::2/64"),
        "{addrs}"
    );
    assert!(ip(Some(ns.name()), &["route"]).contains("default via 10.88.0.1"));

    // A link moved into the namespace is gone here and present there.
    let (c, d) = (unique_name("vsc"), unique_name("vsd"));
    nl.add_veth(&c, &d, None).expect("veth");
    let _guard3 = LinkGuard::new(&c);
    nl.move_to(&d, &ns).expect("move");
    assert!(!nl.link_exists(&d).expect("exists"));
    assert!(ip(Some(ns.name()), &["-o", "link"]).contains(&d));

    nl.delete_link(&c).expect("delete");
    assert!(!nl.link_exists(&c).expect("exists"));

    // Chosen MACs on both ends; down and up again.
    let (e, f) = (unique_name("vse"), unique_name("vsf"));
    let (mac_e, mac_f) = ([0x02, 0, 0, 0xee, 0, 1], [0x02, 0, 0, 0xff, 0, 2]);
    nl.add_veth_with_macs(&e, &f, None, Some(mac_e), Some(mac_f))
        .expect("veth");
    let _guard4 = LinkGuard::new(&e);
    assert_eq!(nl.link(&e).expect("link").mac, Some(mac_e));
    assert!(ip(None, &["-o", "link", "show", &f]).contains("02:00:00:ff:00:02"));
    nl.set_up(&e).expect("up");
    assert!(ip(None, &["-o", "link", "show", &e]).contains(",UP"));
    nl.set_down(&e).expect("down");
    assert!(!ip(None, &["-o", "link", "show", &e]).contains(",UP"));
}

#[test]
fn errors_name_the_problem() {
    if !require_root("errors_name_the_problem") {
        return;
    }
    let mut nl = Netlink::open().expect("netlink");
    let missing = unique_name("vsm");
    let err = nl.set_up(&missing).expect_err("missing link");
    assert_eq!(err.to_string(), format!("link {missing} not found"));
    let err = nl
        .add_veth("a234567890123456", "b", None)
        .expect_err("long name");
    assert!(err.to_string().contains("invalid link name"), "{err}");
    let ns = NetnsGuard::create(&unique_name("vsn")).expect("ns");
    let err = Netns::create(ns.name()).expect_err("exists");
    assert_eq!(
        err.to_string(),
        format!("namespace {} already exists", ns.name())
    );
    // Where the kernel says why (extended acknowledgements), its words reach the user, not
    // just the errno (EINVAL, "Invalid argument").
    let (a, b) = (unique_name("vse"), unique_name("vse"));
    let _veth = nl
        .add_veth(&a, &b, None)
        .map(|()| LinkGuard::new(&a))
        .expect("veth");
    let err = nl.set_mtu(&a, 1 << 20).expect_err("MTU of 1 MiB");
    let chain = anyhow_chain(&err);
    assert!(chain.contains("mtu greater than device maximum"), "{chain}");
}

/// An error and its sources, one after another, as the binary prints them.
fn anyhow_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text += &format!(": {e}");
        source = e.source();
    }
    text
}

#[test]
fn our_icmp_client_counts_replies_exactly_over_ipv4_and_ipv6() {
    if !require_root("our_icmp_client_counts_replies_exactly_over_ipv4_and_ipv6") {
        return;
    }
    use std::net::{Ipv4Addr, Ipv6Addr};
    use vswitch_testkit::{EchoOptions, Host, ping, ping_with};

    // Loopback answers every probe, on both families.
    let ns = NetnsGuard::create(&unique_name("vsi")).expect("ns");
    for target in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        let report = ping(&ns, target, 5);
        assert_eq!((report.sent, report.received), (5, 5), "{report}");
        assert_eq!(report.rtts.len(), 5);
    }

    // Two hosts on a veth pair: the peer answers, an address nobody has doesn't.
    let (a_end, b_end) = (unique_name("vsi"), unique_name("vsi"));
    Netlink::open()
        .expect("netlink")
        .add_veth(&a_end, &b_end, None)
        .expect("veth");
    let a = Host::with_link(&a_end, Ipv4Addr::new(10, 91, 0, 1)).expect("host a");
    let b = Host::with_link(&b_end, Ipv4Addr::new(10, 91, 0, 2)).expect("host b");
    let report = ping(&a.ns, b.addr, 3);
    assert!(report.all_replied(), "{report}");
    let report = ping(&a.ns, Ipv4Addr::new(10, 91, 0, 99), 3);
    assert_eq!((report.sent, report.received), (3, 0), "{report}");
    a.add_ipv6("fd91::1".parse().expect("addr")).expect("ipv6");
    b.add_ipv6("fd91::2".parse().expect("addr")).expect("ipv6");
    let report = ping(&a.ns, "fd91::2".parse::<Ipv6Addr>().expect("addr"), 3);
    assert!(report.all_replied(), "{report}");

    // 8000 bytes with DF don't cross MTU 1500 (as `ping -M do`), and do once both take 9000.
    let jumbo = EchoOptions {
        count: 2,
        payload: 8000,
        ..EchoOptions::default()
    };
    assert!(ping_with(&a.ns, b.addr, jumbo).none_replied());
    a.set_mtu(9000).expect("mtu");
    b.set_mtu(9000).expect("mtu");
    let report = ping_with(&a.ns, b.addr, jumbo);
    assert!(report.all_replied(), "{report}");
}
