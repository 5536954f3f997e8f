//! The seed tutorial's experiments, automated, with vswitch in place of `brctl addbr br`; and
//! `vswitch lab`. Needs root.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::Signal;
use vswitch_netns::{Netlink, Netns, NetnsError, NetnsGuard};
use vswitch_testkit::{ChildGuard, ping, require_root, tcp_transfer, unique_name};

const BIN: &str = env!("CARGO_BIN_EXE_vswitch");

fn configure(ns: &Netns, link: &str, addr: &str) {
    ns.run(|| -> Result<(), NetnsError> {
        let mut nl = Netlink::open()?;
        nl.add_address(link, addr.parse().expect("addr"), 24)?;
        nl.set_up(link)
    })
    .expect("enter")
    .expect("configure");
}

/// Reads `child`'s stdout until a line containing `marker`.
fn wait_for_line(child: &mut Child, marker: &str) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read");
        assert!(n > 0, "vswitch exited before printing {marker:?}");
        if line.contains(marker) {
            return out;
        }
    }
}

/// A `vswitch lab up` child: stopped when dropped, and its lab removed with `lab down` (which
/// is idempotent), so a failing test leaves nothing behind either.
struct LabChild {
    child: Option<ChildGuard>,
    name: String,
}

impl LabChild {
    fn spawn(name: &str, args: &[&str]) -> LabChild {
        let child = Command::new(BIN)
            .args(["lab", "up", "--name", name])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        LabChild {
            child: Some(ChildGuard(child)),
            name: name.to_owned(),
        }
    }

    fn child(&mut self) -> &mut ChildGuard {
        self.child.as_mut().expect("running")
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        // The guard stops the child (SIGINT, then SIGKILL); then whatever it left goes.
        drop(self.child.take());
        let _ = Command::new(BIN)
            .args(["lab", "down", "--name", &self.name])
            .output();
    }
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

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    Netns::list()
        .expect("list")
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn links_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .expect("sysfs")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn lab_round_trip(via: &str) {
    let name = unique_name("lb");
    let mut lab = LabChild::spawn(&name, &["--hosts", "8", "--via", via, "--threads", "2"]);
    let _stdout = wait_for_line(lab.child(), "is up");
    assert_eq!(namespaces_with_prefix(&format!("{name}-h")).len(), 8);
    let check = Command::new(BIN)
        .args(["lab", "check", "--name", &name])
        .output()
        .expect("check");
    let matrix = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{via}: not all pairs reach each other:\n{matrix}"
    );
    assert_eq!(matrix.lines().count(), 9, "{matrix}");
    assert_eq!(matrix.matches("ms").count(), 56, "{matrix}");
    assert!(lab.child().stop(Signal::SIGINT).success());
    assert!(
        namespaces_with_prefix(&format!("{name}-h")).is_empty(),
        "namespaces left"
    );
    assert!(
        links_with_prefix(&format!("{name}h")).is_empty(),
        "links left"
    );
}

#[test]
fn lab_up_with_8_hosts_over_taps_all_pairs_reach_and_down_leaves_nothing() {
    if !require_root("lab_up_with_8_hosts_over_taps_all_pairs_reach_and_down_leaves_nothing") {
        return;
    }
    lab_round_trip("tap");
}

#[test]
fn lab_up_with_8_hosts_over_veth_all_pairs_reach_and_down_leaves_nothing() {
    if !require_root("lab_up_with_8_hosts_over_veth_all_pairs_reach_and_down_leaves_nothing") {
        return;
    }
    lab_round_trip("veth");
}

#[test]
fn lab_down_cleans_up_after_a_crash() {
    if !require_root("lab_down_cleans_up_after_a_crash") {
        return;
    }
    let name = unique_name("lb");
    let mut lab = LabChild::spawn(&name, &["--hosts", "3", "--via", "veth"]);
    let _stdout = wait_for_line(lab.child(), "is up");
    lab.child().stop(Signal::SIGKILL);
    assert_eq!(
        namespaces_with_prefix(&format!("{name}-h")).len(),
        3,
        "a crash leaves the lab"
    );
    let again = Command::new(BIN)
        .args(["lab", "up", "--name", &name])
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("vswitch lab down"));
    let down = Command::new(BIN)
        .args(["lab", "down", "--name", &name])
        .status()
        .expect("down");
    assert!(down.success());
    assert!(namespaces_with_prefix(&format!("{name}-h")).is_empty());
    assert!(links_with_prefix(&format!("{name}h")).is_empty());
    let socket = std::path::Path::new("/run/vswitch").join(format!("{name}.sock"));
    assert!(!socket.exists(), "the crashed lab's control socket is left");
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
