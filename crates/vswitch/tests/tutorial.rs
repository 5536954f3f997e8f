//! The seed tutorial's experiments, automated, with vswitch in place of `brctl addbr br`; and
//! the `ns` and `veth` subcommands. Needs root. (`vswitch lab`: lab.rs.)

mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use common::{BIN, links_with_prefix, wait_for_line};
use nix::sys::signal::Signal;
use vswitch_netns::{Netlink, Netns, NetnsError, NetnsGuard};
use vswitch_testkit::{ChildGuard, ping, require_root, tcp_transfer, unique_name, wait_running};

fn configure(ns: &Netns, link: &str, addr: &str) {
    ns.run(|| -> Result<(), NetnsError> {
        let mut nl = Netlink::open()?;
        nl.add_address(link, addr.parse().expect("addr"), 24)?;
        nl.set_up(link)
    })
    .expect("enter")
    .expect("configure");
}

#[test]
fn experiment_1_two_namespaces_joined_by_one_veth_pair() {
    if !require_root("experiment_1_two_namespaces_joined_by_one_veth_pair") {
        return;
    }
    let net0 = NetnsGuard::create(&unique_name("net0-")).expect("ns");
    let net1 = NetnsGuard::create(&unique_name("net1-")).expect("ns");
    // ip link add type veth; ip link set veth0 netns net0; ip link set veth1 netns net1
    net0.run(|| Netlink::open()?.add_veth("veth0", "veth1", Some(&net1)))
        .expect("enter")
        .expect("veth");
    configure(&net0, "veth0", "10.0.1.1");
    configure(&net1, "veth1", "10.0.1.2");
    // Both ends up; each sends once the kernel has started its queue.
    for (ns, link) in [(&net0, "veth0"), (&net1, "veth1")] {
        assert!(
            wait_running(ns, link).expect("link"),
            "{link} never came up"
        );
    }
    assert!(ping(&net0, Ipv4Addr::new(10, 0, 1, 2), 3).all_replied());
    assert!(ping(&net1, Ipv4Addr::new(10, 0, 1, 1), 3).all_replied());
}

#[test]
fn experiment_2_vswitch_replaces_the_bridge() {
    if !require_root("experiment_2_vswitch_replaces_the_bridge") {
        return;
    }
    // The tutorial's topology; namespace names made unique, link names exactly the tutorial's.
    let net0 = NetnsGuard::create(&unique_name("net0-")).expect("ns");
    let net1 = NetnsGuard::create(&unique_name("net1-")).expect("ns");
    let bridge = NetnsGuard::create(&unique_name("bridge-")).expect("ns");
    net0.run(|| Netlink::open()?.add_veth("net0-bridge", "bridge-net0", Some(&bridge)))
        .expect("enter")
        .expect("veth");
    net1.run(|| Netlink::open()?.add_veth("net1-bridge", "bridge-net1", Some(&bridge)))
        .expect("enter")
        .expect("veth");
    configure(&net0, "net0-bridge", "10.0.1.1");
    configure(&net1, "net1-bridge", "10.0.1.2");
    // Instead of `brctl addbr br; brctl addif br bridge-net0; brctl addif br bridge-net1`:
    let mut switch = ChildGuard(
        bridge
            .run(|| {
                Command::new(BIN)
                    .args(["--ports", "bridge-net0,bridge-net1", "--threads", "2"])
                    .args(["--name", &unique_name("tut")])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .expect("enter")
            .expect("spawn vswitch"),
    );
    let _stdout = wait_for_line(&mut switch, "switching among");
    // The switch set its ends up; each host's end sends once the kernel started its queue.
    for (ns, link) in [(&net0, "net0-bridge"), (&net1, "net1-bridge")] {
        assert!(
            wait_running(ns, link).expect("link"),
            "{link} never came up"
        );
    }
    assert!(
        ping(&net0, Ipv4Addr::new(10, 0, 1, 2), 3).all_replied(),
        "net0 -> net1"
    );
    assert!(
        ping(&net1, Ipv4Addr::new(10, 0, 1, 1), 3).all_replied(),
        "net1 -> net0"
    );
    let t = tcp_transfer(&net0, &net1, Ipv4Addr::new(10, 0, 1, 2), 5201, 20 << 20).expect("tcp");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    assert!(switch.stop(Signal::SIGTERM).success());
}

#[test]
fn ns_and_veth_subcommands_do_what_ip_does() {
    if !require_root("ns_and_veth_subcommands_do_what_ip_does") {
        return;
    }
    let (ns, a) = (unique_name("vsn"), unique_name("vsa"));
    let run = |args: &[&str]| Command::new(BIN).args(args).output().expect("run");
    assert!(run(&["ns", "add", &ns]).status.success());
    let dup = run(&["ns", "add", &ns]);
    assert!(!dup.status.success());
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains(&format!("namespace {ns} already exists"))
    );
    assert!(
        String::from_utf8_lossy(&run(&["ns", "list"]).stdout)
            .lines()
            .any(|l| l == ns)
    );
    assert!(
        run(&["veth", "add", &a, "eth9", "--peer-netns", &ns])
            .status
            .success()
    );
    let inside = run(&["ns", "exec", &ns, "ip", "-o", "link", "show", "eth9"]);
    assert!(inside.status.success(), "peer not in {ns}");
    assert!(run(&["veth", "del", &a]).status.success());
    assert!(links_with_prefix(&a).is_empty());
    assert!(run(&["ns", "del", &ns]).status.success());
    assert!(!String::from_utf8_lossy(&run(&["ns", "list"]).stdout).contains(&ns));
}
