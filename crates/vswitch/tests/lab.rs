//! `vswitch lab`: topology files, generators, impairments, show, check, exec and down, with real
//! namespaces and the binary itself. Needs root.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{LabChild, lab_name, lab_up_failing, leftovers, namespaces_with_prefix};
use nix::sys::signal::Signal;
use serde_json::Value;
use vswitch_datapath::{PacketPort, PortDevice};
use vswitch_netns::{EchoOptions, Netns};
use vswitch_testkit::{ping_with, require_root, tcp_transfer};

fn example(file: &str) -> String {
    format!("{}/../../examples/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// A topology file in the temp directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(text: &str) -> TempFile {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("vswitch-lab-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `lab check --json`: (pairs, pairs without a reply).
fn check(lab: &LabChild) -> (Vec<Value>, Vec<(String, String)>) {
    let out = lab.run("check", &["--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let pairs = json["pairs"].as_array().expect("pairs").clone();
    let failed: Vec<(String, String)> = pairs
        .iter()
        .filter(|p| p["rtt_ms"].is_null())
        .map(|p| {
            (
                p["from"].as_str().expect("from").to_owned(),
                p["to"].as_str().expect("to").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        out.status.success(),
        failed.is_empty(),
        "check's exit status says whether all reached"
    );
    (pairs, failed)
}

/// Median RTT of 7 probes from host `from` of lab `lab` to `to`, all answered.
fn rtt(lab: &str, from: &str, to: &str) -> Duration {
    let ns = Netns::open(&format!("{lab}-{from}")).expect("host");
    let to: IpAddr = to.parse().expect("address");
    let report = ping_with(
        &ns,
        to,
        EchoOptions {
            count: 7,
            interval: Duration::from_millis(60),
            timeout: Duration::from_secs(2),
            payload: 56,
        },
    );
    assert!(report.all_replied(), "{from} -> {to}: {report:?}");
    report.median_rtt().expect("rtt")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn assert_nothing_left(name: &str) {
    let left = leftovers(name);
    assert!(left.is_empty(), "lab {name} left {left:?}");
}

fn round_trip(via: &str) {
    let name = lab_name("lb");
    let (mut lab, _) = LabChild::up(&name, &["--hosts", "8", "--via", via, "--threads", "2"]);
    assert_eq!(namespaces_with_prefix(&format!("{name}-h")).len(), 8);
    let (pairs, failed) = check(&lab);
    assert_eq!(pairs.len(), 56);
    assert!(failed.is_empty(), "{via}: {failed:?}");
    let matrix = lab.run("check", &[]);
    let text = String::from_utf8_lossy(&matrix.stdout);
    assert_eq!(text.lines().count(), 9, "{text}");
    assert_eq!(text.matches("ms").count(), 56, "{text}");
    assert!(lab.child().stop(Signal::SIGINT).success());
    assert_nothing_left(&name);
}

#[test]
fn lab_up_with_8_hosts_over_taps_all_pairs_reach_and_down_leaves_nothing() {
    if !require_root("lab_up_with_8_hosts_over_taps_all_pairs_reach_and_down_leaves_nothing") {
        return;
    }
    round_trip("tap");
}

#[test]
fn lab_up_with_8_hosts_over_veth_all_pairs_reach_and_down_leaves_nothing() {
    if !require_root("lab_up_with_8_hosts_over_veth_all_pairs_reach_and_down_leaves_nothing") {
        return;
    }
    round_trip("veth");
}

#[test]
fn lab_down_cleans_up_after_a_crash_and_is_idempotent() {
    if !require_root("lab_down_cleans_up_after_a_crash_and_is_idempotent") {
        return;
    }
    let name = lab_name("lc");
    let (mut lab, _) = LabChild::up(&name, &["--topology", "linear:2,2"]);
    lab.child().stop(Signal::SIGKILL);
    assert_eq!(
        namespaces_with_prefix(&format!("{name}-")).len(),
        4,
        "a crash leaves the lab"
    );
    let again = lab_up_failing(&name, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("vswitch lab down"));
    for _ in 0..2 {
        let down = lab.run("down", &[]);
        assert!(
            down.status.success(),
            "{}",
            String::from_utf8_lossy(&down.stderr)
        );
        assert_nothing_left(&name);
    }
}

#[test]
fn lab_down_stops_a_running_lab() {
    if !require_root("lab_down_stops_a_running_lab") {
        return;
    }
    let name = lab_name("ld");
    let (mut lab, _) = LabChild::up(&name, &["--hosts", "2"]);
    let down = lab.run("down", &[]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    // (A harmless signal: `stop` then waits for the exit that `lab down` caused.)
    let status = lab.child().stop(Signal::SIGCONT);
    assert!(
        status.success(),
        "lab up exits cleanly when `lab down` stops it: {status}"
    );
    assert_nothing_left(&name);
}

/// The chain example: 3 switches, 2 hosts each; s1--s2 delays 20 ms each way, s2--s3 is shaped
/// to 50 Mbit/s.
#[test]
fn a_chain_of_three_switches_reaches_delays_and_shapes_where_the_file_says() {
    if !require_root("a_chain_of_three_switches_reaches_delays_and_shapes_where_the_file_says") {
        return;
    }
    let name = lab_name("ch");
    let file = example("chain3.toml");
    let (mut lab, printed) = LabChild::up(&name, &["-f", &file]);
    assert!(
        printed.contains("3 switches, 6 hosts, 8 links"),
        "{printed}"
    );

    // All pairs, and every host reaches s2's own address.
    let (pairs, failed) = check(&lab);
    assert_eq!(pairs.len(), 6 * 6, "6 hosts to 5 hosts and the switch");
    assert!(failed.is_empty(), "{failed:?}");

    // Delay: paths across s1--s2 gain 20 ms each way; others nothing.
    let local = rtt(&name, "h1", "10.0.1.2");
    let across = rtt(&name, "h1", "10.0.1.3");
    let shaped_only = rtt(&name, "h3", "10.0.1.5");
    let both = rtt(&name, "h2", "10.0.1.6");
    assert!(
        ms(local) < 3.0,
        "h1 -> h2 crosses no impaired link: {local:?}"
    );
    assert!(
        ms(shaped_only) < 3.0,
        "h3 -> h5 crosses only the shaped link: {shaped_only:?}"
    );
    for (what, d) in [("h1 -> h3", across), ("h2 -> h6", both)] {
        let added = ms(d) - ms(local);
        assert!(
            (34.0..=46.0).contains(&added),
            "{what}: +{added:.1} ms, want 40 ± 6 (20 ± 3 each way)"
        );
    }

    // Shaping: TCP across s2--s3 holds 50 Mbit/s ± 10%, both ways, bytes intact.
    for (from, to, addr) in [("h3", "h5", "10.0.1.5"), ("h6", "h4", "10.0.1.4")] {
        let client = Netns::open(&format!("{name}-{from}")).expect("ns");
        let server = Netns::open(&format!("{name}-{to}")).expect("ns");
        let bytes = 25u64 << 20;
        let start = Instant::now();
        let t = tcp_transfer(
            &client,
            &server,
            addr.parse::<IpAddr>().unwrap(),
            5201,
            bytes,
        )
        .expect("tcp");
        let mbit = t.received as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6;
        assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
        assert!(
            (45.0..=55.0).contains(&mbit),
            "{from} -> {to}: {mbit:.1} Mbit/s over a 50 Mbit/s link"
        );
    }

    // What `lab show` says, and the pictures.
    let show = lab.run("show", &["--json"]);
    let state: Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(state["links"].as_array().map(Vec::len), Some(8));
    let text = String::from_utf8_lossy(&lab.run("show", &[]).stdout).into_owned();
    assert!(
        text.contains("s1->s2: impair delay 20ms") && text.contains("bit/s"),
        "{text}"
    );
    let dot = String::from_utf8_lossy(&lab.run("show", &["--dot"]).stdout).into_owned();
    assert!(
        dot.starts_with("graph") && dot.contains("\"s1\" -- \"s2\""),
        "{dot}"
    );
    let svg_path = std::env::temp_dir().join(format!("{name}.svg"));
    assert!(
        lab.run("show", &["--svg", svg_path.to_str().unwrap()])
            .status
            .success()
    );
    let svg = std::fs::read_to_string(&svg_path).expect("svg");
    let _ = std::fs::remove_file(&svg_path);
    assert!(svg.starts_with("<svg") && (1..=6).all(|i| svg.contains(&format!(">h{i}<"))));

    // `lab exec` runs in the host's namespace and passes the exit code on.
    let dev = lab.run("exec", &["h1", "--", "cat", "/proc/net/dev"]);
    assert!(String::from_utf8_lossy(&dev.stdout).contains("eth0:"));
    let failing = lab.run("exec", &["h1", "--", "sh", "-c", "exit 3"]);
    assert_eq!(failing.status.code(), Some(3));
    assert!(!lab.run("exec", &["h9", "--", "true"]).status.success());

    assert!(lab.child().stop(Signal::SIGTERM).success());
    assert_nothing_left(&name);
}

#[test]
fn the_seed_experiments_as_lab_files() {
    if !require_root("the_seed_experiments_as_lab_files") {
        return;
    }
    for file in ["seed-veth-pair.toml", "seed-bridge.toml"] {
        let name = lab_name("sd");
        let (mut lab, _) = LabChild::up(&name, &["-f", &example(file)]);
        let (pairs, failed) = check(&lab);
        assert_eq!((pairs.len(), failed.len()), (2, 0), "{file}: {failed:?}");
        let client = Netns::open(&format!("{name}-net0")).expect("ns");
        let server = Netns::open(&format!("{name}-net1")).expect("ns");
        let t = tcp_transfer(
            &client,
            &server,
            "10.0.1.2".parse::<IpAddr>().unwrap(),
            5201,
            8 << 20,
        )
        .expect("tcp");
        assert_eq!(
            (t.received, t.received_digest),
            (t.sent, t.sent_digest),
            "{file}"
        );
        assert!(lab.child().stop(Signal::SIGINT).success());
        assert_nothing_left(&name);
    }
}

#[test]
fn the_impaired_star_over_taps_delays_only_the_delayed_link() {
    if !require_root("the_impaired_star_over_taps_delays_only_the_delayed_link") {
        return;
    }
    let name = lab_name("st");
    let (mut lab, printed) = LabChild::up(
        &name,
        &["-f", &example("star-impaired.toml"), "--via", "tap"],
    );
    assert!(printed.contains("via tap"), "{printed}");
    let (_, failed) = check(&lab);
    assert!(failed.is_empty(), "{failed:?}");
    let delayed = ms(rtt(&name, "h1", "10.0.2.4"));
    let clean = ms(rtt(&name, "h2", "10.0.2.4"));
    assert!(
        (8.5..=13.0).contains(&delayed),
        "h1's link adds 5 ms each way: {delayed:.2} ms"
    );
    assert!(clean < 3.0, "h2 -> h4: {clean:.2} ms");
    assert!(lab.child().stop(Signal::SIGINT).success());
    assert_nothing_left(&name);
}

#[test]
fn a_generated_tree_reaches_all_pairs() {
    if !require_root("a_generated_tree_reaches_all_pairs") {
        return;
    }
    let name = lab_name("tr");
    let (mut lab, printed) = LabChild::up(&name, &["--topology", "tree:2,3", "--threads", "1"]);
    assert!(
        printed.contains("4 switches, 9 hosts, 12 links"),
        "{printed}"
    );
    let (pairs, failed) = check(&lab);
    assert_eq!((pairs.len(), failed.len()), (72, 0), "{failed:?}");
    assert!(lab.child().stop(Signal::SIGINT).success());
    assert_nothing_left(&name);
}

/// Two subnets on two switches, joined by a router host with two interfaces; routes, a default
/// gateway and a command run in each host.
#[test]
fn a_router_host_joins_two_subnets_and_commands_run_in_the_hosts() {
    if !require_root("a_router_host_joins_two_subnets_and_commands_run_in_the_hosts") {
        return;
    }
    let name = lab_name("rt");
    let witness = std::env::temp_dir().join(format!("{name}.ran"));
    let file = TempFile::new(&format!(
        r#"
[switches.left]
[switches.right]
[hosts.h1]
addresses = ["10.0.1.1/24"]
gateway = "10.0.1.254"
[hosts.r]
addresses = ["10.0.1.254/24"]
forward = true
run = ["cat /proc/net/dev > {}"]
[hosts.h2]
addresses = ["10.0.2.1/24"]
routes = ["10.0.1.0/24 via 10.0.2.254"]
[[links]]
endpoints = ["h1", "left"]
[[links]]
endpoints = ["r", "left"]
[[links]]
endpoints = ["r", "right"]
addresses = ["10.0.2.254/24"]
[[links]]
endpoints = ["h2", "right"]
"#,
        witness.display()
    ));
    let (mut lab, _) = LabChild::up(&name, &["-f", file.path()]);
    let ran = std::fs::read_to_string(&witness).expect("the host's command ran");
    let _ = std::fs::remove_file(&witness);
    assert!(
        ran.contains("eth0:") && ran.contains("eth1:"),
        "run inside r: {ran}"
    );
    let (_, failed) = check(&lab);
    assert!(failed.is_empty(), "routed across r: {failed:?}");
    assert!(lab.child().stop(Signal::SIGINT).success());
    assert_nothing_left(&name);
}

#[test]
fn vlans_on_links_keep_hosts_apart() {
    if !require_root("vlans_on_links_keep_hosts_apart") {
        return;
    }
    let name = lab_name("vl");
    let file = TempFile::new(
        r#"
subnet = "10.0.5.0/24"
[switches.s1]
[switches.s2]
[hosts.a1]
[hosts.b1]
[hosts.a2]
[hosts.b2]
[[links]]
endpoints = ["a1", "s1"]
vlan = "access 10"
[[links]]
endpoints = ["b1", "s1"]
vlan = "access 20"
[[links]]
endpoints = ["s1", "s2"]
vlan = { s1 = "trunk 10,20", s2 = "trunk 10,20" }
[[links]]
endpoints = ["a2", "s2"]
vlan = "access 10"
[[links]]
endpoints = ["b2", "s2"]
vlan = "access 20"
"#,
    );
    let (lab, _) = LabChild::up(&name, &["-f", file.path()]);
    let (_, mut failed) = check(&lab);
    failed.sort();
    let want: Vec<(String, String)> = [
        ("a1", "b1"),
        ("a1", "b2"),
        ("a2", "b1"),
        ("a2", "b2"),
        ("b1", "a1"),
        ("b1", "a2"),
        ("b2", "a1"),
        ("b2", "a2"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(failed, want, "exactly the pairs across VLANs fail");
    drop(lab);
    assert_nothing_left(&name);
}

#[test]
fn a_bad_file_or_a_failing_command_leaves_nothing() {
    if !require_root("a_bad_file_or_a_failing_command_leaves_nothing") {
        return;
    }
    let name = lab_name("bd");
    let looped = TempFile::new(
        "[switches.s1]\n[switches.s2]\n[hosts.h1]\naddresses = [\"10.0.1.1/24\"]\n[[links]]\nendpoints = [\"h1\", \"s1\"]\n[[links]]\nendpoints = [\"s1\", \"s2\"]\n[[links]]\nendpoints = [\"s2\", \"s1\"]\n",
    );
    let up = lab_up_failing(&name, &["-f", looped.path()]);
    let err = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(!up.status.success());
    assert!(
        err.contains(&format!(
            "{}:9: links: s2 -- s1 closes a loop",
            looped.path()
        )),
        "{err}"
    );
    let checked = std::process::Command::new(common::BIN)
        .args(["lab", "check-file", looped.path()])
        .output()
        .expect("run");
    assert!(!checked.status.success());
    assert!(String::from_utf8_lossy(&checked.stderr).contains(":9: links:"));
    assert_nothing_left(&name);

    // Everything is made, then a host's command fails: all of it goes.
    let failing = TempFile::new(
        "[switches.s1]\n[hosts.h1]\naddresses = [\"10.0.1.1/24\"]\nrun = [\"exit 7\"]\n[[links]]\nendpoints = [\"h1\", \"s1\"]\n",
    );
    let up = lab_up_failing(&name, &["-f", failing.path()]);
    assert!(!up.status.success());
    assert!(
        String::from_utf8_lossy(&up.stderr).contains("host h1: `exit 7` exited"),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_nothing_left(&name);
}

/// Two labs standing for two machines, joined by a VXLAN port on each lab's switch (loopback
/// addresses as the underlay); hosts with IPv4 and IPv6 reach across.
#[test]
fn two_labs_joined_over_vxlan_reach_each_other_on_both_families() {
    if !require_root("two_labs_joined_over_vxlan_reach_each_other_on_both_families") {
        return;
    }
    let port = 20_000 + std::process::id() % 20_000;
    let lab_file = |me: u8, peer: u8| {
        TempFile::new(&format!(
            r#"
[switches.sw]
ports = ["vxlan:vx{me}:vni=42,local=127.0.0.{me},remote=127.0.0.{peer},dstport={port}"]
[hosts.h{me}]
addresses = ["10.0.7.{me}/24", "fd07::{me}/64"]
[[links]]
endpoints = ["h{me}", "sw"]
"#
        ))
    };
    let (file_a, file_b) = (lab_file(1, 2), lab_file(2, 1));
    let (name_a, name_b) = (lab_name("va"), lab_name("vb"));
    let (lab_a, _) = LabChild::up(&name_a, &["-f", file_a.path()]);
    let (lab_b, _) = LabChild::up(&name_b, &["-f", file_b.path()]);
    for (from, to, addr) in [
        (&name_a, "h1", "10.0.7.2"),
        (&name_a, "h1", "fd07::2"),
        (&name_b, "h2", "10.0.7.1"),
        (&name_b, "h2", "fd07::1"),
    ] {
        let d = rtt(from, to, addr);
        assert!(d < Duration::from_millis(100), "{to} -> {addr}: {d:?}");
    }
    // Each lab checks only its own hosts; one host each and no switch address: nothing to ping.
    let (pairs, _) = check(&lab_a);
    assert!(pairs.is_empty());
    drop((lab_a, lab_b));
    assert_nothing_left(&name_a);
    assert_nothing_left(&name_b);
}

/// Fifty hosts on five switches: every pair reaches, which needs more neighbour entries than the
/// kernel's shared table allows by default (the lab raises the limit).
#[test]
fn fifty_hosts_on_five_switches_all_reach_each_other() {
    if !require_root("fifty_hosts_on_five_switches_all_reach_each_other") {
        return;
    }
    let name = lab_name("fy");
    let (mut lab, printed) = LabChild::up(&name, &["--topology", "linear:5,10", "--threads", "1"]);
    assert!(
        printed.contains("5 switches, 50 hosts, 54 links"),
        "{printed}"
    );
    let (pairs, failed) = check(&lab);
    assert_eq!((pairs.len(), failed.len()), (2450, 0), "{failed:?}");
    assert!(lab.child().stop(Signal::SIGINT).success());
    assert_nothing_left(&name);
}

/// QinQ across a chain of real stacks: two customers on dot1q-tunnel ports of the two end
/// switches, carried through the middle one by provider trunks with 0x88a8 service tags.
#[test]
fn qinq_carries_two_customers_across_a_chain_and_keeps_them_apart() {
    if !require_root("qinq_carries_two_customers_across_a_chain_and_keeps_them_apart") {
        return;
    }
    let name = lab_name("qq");
    let file = TempFile::new(
        r#"
subnet = "10.0.9.0/24"
[switches.s1]
[switches.s2]
[switches.s3]
[hosts.c1a]
[hosts.c1b]
[hosts.c2a]
[hosts.c2b]
[[links]]
endpoints = ["c1a", "s1"]
vlan = "tunnel 100"
[[links]]
endpoints = ["c2a", "s1"]
vlan = "tunnel 200"
[[links]]
endpoints = ["c1b", "s3"]
vlan = "tunnel 100"
[[links]]
endpoints = ["c2b", "s3"]
vlan = "tunnel 200"
# Provider links carry the 4-byte service tag beyond a customer's 1500 (baby giants): a packet
# socket may send only an 802.1Q tag beyond the MTU, not an 802.1ad one.
[[links]]
endpoints = ["s1", "s2"]
mtu = 1504
vlan = { s1 = "trunk 100,200", s2 = "trunk 100,200" }
[[links]]
endpoints = ["s2", "s3"]
mtu = 1504
vlan = { s2 = "trunk 100,200", s3 = "trunk 100,200" }
"#,
    );
    let (lab, _) = LabChild::up(&name, &["-f", file.path()]);
    let client = Netns::open(&format!("{name}-c1a")).expect("ns");
    let server = Netns::open(&format!("{name}-c1b")).expect("ns");
    let t = tcp_transfer(
        &client,
        &server,
        "10.0.9.2".parse::<IpAddr>().unwrap(),
        5301,
        16 << 20,
    )
    .expect("tcp");
    assert_eq!((t.received, t.received_digest), (t.sent, t.sent_digest));
    // What s2 sends s1 over the provider link (link 5's s1 end), seen by a packet socket.
    let tap = PacketPort::open(&format!("{name}l5a")).expect("packet socket");
    let (_, mut failed) = check(&lab);
    failed.sort();
    let want: Vec<(String, String)> = [
        ("c1a", "c2b"),
        ("c1b", "c2a"),
        ("c2a", "c1b"),
        ("c2b", "c1a"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    // c1a and c2a share s1, in different service VLANs: they don't reach each other either.
    let mut want = want;
    want.extend(
        [
            ("c1a", "c2a"),
            ("c1b", "c2b"),
            ("c2a", "c1a"),
            ("c2b", "c1b"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned())),
    );
    want.sort();
    assert_eq!(failed, want, "exactly the pairs across customers fail");
    let mut outer = std::collections::BTreeSet::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = tap.recv(0, &mut buf) {
        let frame = &buf[vswitch_core::VNET_HDR_LEN..n];
        outer.insert((
            u16::from_be_bytes([frame[12], frame[13]]),
            u16::from_be_bytes([frame[14], frame[15]]) & 0xfff,
        ));
    }
    assert!(
        outer.contains(&(0x88a8, 100)) && outer.contains(&(0x88a8, 200)),
        "service tags on the provider link: {outer:x?}"
    );
    assert!(
        outer.iter().all(|(tpid, _)| *tpid == 0x88a8),
        "only service-tagged frames: {outer:x?}"
    );
    drop(lab);
    assert_nothing_left(&name);
}

/// The seed's TUN example: a host whose only interface is a TUN of the switch reaches a host on
/// a veth and the switch's own address over IPv4 and IPv6, and moves hashed TCP.
#[test]
fn the_seed_tun_example_joins_an_ip_only_host_to_the_segment() {
    if !require_root("the_seed_tun_example_joins_an_ip_only_host_to_the_segment") {
        return;
    }
    let name = lab_name("tn");
    let (lab, _) = LabChild::up(&name, &["-f", &example("seed-tun.toml")]);
    let (pairs, failed) = check(&lab);
    // h1 and h2 to each other and to the switch, each on both families.
    assert_eq!((pairs.len(), failed.len()), (8, 0), "{failed:?}");
    let client = Netns::open(&format!("{name}-h1")).expect("ns");
    let server = Netns::open(&format!("{name}-h2")).expect("ns");
    for addr in ["10.0.3.2", "fd03::2"] {
        let t = tcp_transfer(
            &client,
            &server,
            addr.parse::<IpAddr>().unwrap(),
            5401,
            8 << 20,
        )
        .expect("tcp");
        assert_eq!(
            (t.received, t.received_digest),
            (t.sent, t.sent_digest),
            "{addr}"
        );
    }
    drop(lab);
    assert_nothing_left(&name);
}
