//! The `vswitch` binary as a user meets it: errors, help, signals, cleanup.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vswitch_testkit::{ChildGuard, require_root, unique_name};

fn vswitch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vswitch"))
        .args(args)
        .output()
        .expect("run vswitch")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the binary with `args`, which must fail with `expected` in its error and no panic.
fn assert_refused(args: &[&str], expected: &str) {
    let out = vswitch(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr(&out).contains(expected),
        "{args:?}: {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{args:?} panicked");
}

/// The switch started with `args`, once it says it switches.
fn running(args: &[&str]) -> ChildGuard {
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_vswitch"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(line.contains("switching among"), "{line}");
    child
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn bad_port_lists_fail_with_one_clear_line_and_create_nothing() {
    let cases: [(&[&str], &str); 11] = [
        (&["--ports", "vsa0,vsa0"], "given twice"),
        (&["--ports", "tap:vsa0@a/b"], "not a namespace's name"),
        (&["--ports", "vsa0,,vsa1"], "interface name is empty"),
        (&["--ports", "a234567890123456"], "longer than 15 bytes"),
        (&["--ports", "a/b"], "characters Linux does not allow"),
        (
            &["--ports", "vsa0", "--forward-link-local", "lldp"],
            "not a 16-bit mask",
        ),
        (&["--ports", "vsa0=02:00:00:00:00:01"], "need --macvlan"),
        (&["--ports", "vsa0", "--uplink", "dev:x"], "--macvlan"),
        (
            &[
                "--macvlan",
                "bridge",
                "--uplink",
                "vsa1",
                "--ports",
                "vsa0=02:00:00:00:00",
            ],
            "invalid MAC",
        ),
        (
            &["--macvlan", "hub", "--uplink", "vsa1", "--ports", "vsa0"],
            "unknown macvlan mode",
        ),
        (
            &["--macvlan", "bridge", "--uplink", "vsa0", "--ports", "vsa0"],
            "given twice",
        ),
    ];
    for (args, expected) in cases {
        assert_refused(args, expected);
    }
    assert!(!link_exists("vsa0"));
}

#[test]
fn a_tap_for_a_missing_namespace_is_refused_before_anything_is_made() {
    if !require_root("a_tap_for_a_missing_namespace_is_refused_before_anything_is_made") {
        return;
    }
    let (tap, ns) = (unique_name("vsm"), unique_name("vsn"));
    assert_refused(
        &["--ports", &format!("tap:{tap}@{ns}")],
        &format!("namespace {ns} not found"),
    );
    assert!(!link_exists(&tap));
}

/// VLAN modes and port flags at start: a bad VID, two modes for one port, a native VLAN outside
/// the trunk's list, an unknown flag or port: one line naming the port, and nothing made.
#[test]
fn bad_vlan_modes_and_flags_name_the_port_and_create_nothing() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["--ports", "vsv0", "--vlan", "vsv0=access 4095"],
            "port vsv0: ",
        ),
        (
            &["--ports", "vsv0", "--vlan", "vsv0=access 0"],
            "port vsv0: ",
        ),
        (
            &[
                "--ports",
                "vsv0",
                "--vlan",
                "vsv0=access 10",
                "--vlan",
                "vsv0=trunk 20",
            ],
            "port vsv0 is given two VLAN modes",
        ),
        (
            &["--ports", "vsv0", "--vlan", "vsv0=trunk 10,20 native 30"],
            "port vsv0: ",
        ),
        (
            &["--ports", "vsv0", "--vlan", "vsv9=access 10"],
            "no port vsv9",
        ),
        (
            &["--ports", "vsv0", "--port-flag", "vsv0=isolate on"],
            "port vsv0: no flag \"isolate\"",
        ),
        (
            &["--ports", "vsv0", "--port-flag", "vsv0=hairpin"],
            "port vsv0: say FLAG on|off",
        ),
    ];
    for (args, expected) in cases {
        assert_refused(args, expected);
        assert!(!link_exists("vsv0"), "{args:?} left the TAP");
    }
}

#[test]
fn missing_ports_and_unknown_flags_are_usage_errors() {
    let out = vswitch(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--ports"));
    let out = vswitch(&["--ports", "x", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--frobnicate"));
}

#[test]
fn help_explains_every_flag_with_its_default() {
    let out = vswitch(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--ports",
        "--ageing-time",
        "[default: 300]",
        "--max-macs",
        "[default: 65536]",
        "--max-macs-per-port",
        "--forward-link-local",
        "--threads",
        "--busy-poll",
        "--no-offload",
        "--macvlan",
        "--uplink",
        "--allow-spoofing",
        "demo",
        "lab",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn without_cap_net_admin_the_error_names_the_capability() {
    if !require_root("without_cap_net_admin_the_error_names_the_capability") {
        return;
    }
    // Run the binary from a thread that dropped every capability from its bounding, permitted,
    // effective, inheritable and ambient sets: a child inherits its parent thread's sets, and
    // without the bounding set even root's exec gains none back.
    let name = unique_name("vsc");
    let out = std::thread::spawn({
        let name = name.clone();
        move || {
            for cap in caps::all() {
                caps::drop(None, caps::CapSet::Bounding, cap).expect("drop from bounding set");
            }
            caps::clear(None, caps::CapSet::Ambient).expect("clear ambient");
            caps::clear(None, caps::CapSet::Inheritable).expect("clear inheritable");
            caps::clear(None, caps::CapSet::Effective).expect("clear effective");
            caps::clear(None, caps::CapSet::Permitted).expect("clear permitted");
            Command::new(env!("CARGO_BIN_EXE_vswitch"))
                .args(["--ports", &name])
                .output()
                .expect("run vswitch")
        }
    })
    .join()
    .expect("capability-less thread");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("CAP_NET_ADMIN"), "{}", stderr(&out));
    assert!(!link_exists(&name));
}

/// Starts the switch and waits for its "switching among" line.
fn start_switch(ports: &[String]) -> (ChildGuard, BufReader<std::process::ChildStdout>) {
    start_switch_with(ports, &[])
}

/// [`start_switch`] with extra flags.
fn start_switch_with(
    ports: &[String],
    extra: &[&str],
) -> (ChildGuard, BufReader<std::process::ChildStdout>) {
    // Two workers unless `extra` says how many.
    let threads: &[&str] = if extra.contains(&"--threads") {
        &[]
    } else {
        &["--threads", "2"]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_vswitch"))
        .args(["--ports", &ports.join(","), "--name", &unique_name("vsc")])
        .args(threads)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vswitch");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    assert!(
        line.contains("switching among"),
        "unexpected first line {line:?}"
    );
    (ChildGuard(child), stdout)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vswitch did not stop within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_sigint_stop_cleanly_print_counters_and_remove_the_taps() {
    if !require_root("sigterm_and_sigint_stop_cleanly_print_counters_and_remove_the_taps") {
        return;
    }
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let ports = [unique_name("vsc"), unique_name("vsc")];
        let (mut child, mut stdout) = start_switch(&ports);
        assert!(ports.iter().all(|p| link_exists(p)), "TAPs not created");
        // SIGUSR1 prints the table while running.
        kill(Pid::from_raw(child.id() as i32), Signal::SIGUSR1).expect("kill");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        assert!(line.starts_with("PORT"), "SIGUSR1 printed {line:?}");
        kill(Pid::from_raw(child.id() as i32), signal).expect("kill");
        let status = wait_exit(&mut child);
        assert!(status.success(), "{signal}: exit {status}");
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).expect("read");
        for port in &ports {
            assert!(
                rest.contains(port.as_str()),
                "{signal}: counters lack {port}:\n{rest}"
            );
            assert!(!link_exists(port), "{signal}: TAP {port} left behind");
        }
        assert!(rest.contains("mac table:"));
    }
}

/// `Cpus_allowed_list` of each worker thread of process `pid`, by thread name.
fn worker_cpus(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let path = task.expect("task").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.starts_with("vswitch-worker") {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        if let Some(cpus) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            out.push((comm.trim().to_owned(), cpus.trim().to_owned()));
        }
    }
    out.sort();
    out
}

#[test]
fn with_cpu_steering_each_worker_is_pinned_to_its_cpu() {
    if !require_root("with_cpu_steering_each_worker_is_pinned_to_its_cpu") {
        return;
    }
    // One worker per CPU this test may run on. Steered by CPU, worker i is pinned to CPU i when
    // those CPUs are 0..n; otherwise (and steered by flow) workers may run wherever we may.
    let allowed = nix::sched::sched_getaffinity(Pid::from_raw(0)).expect("affinity");
    let allowed: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    let ours = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_owned();
    let threads = allowed.len().to_string();
    let contiguous = allowed.iter().enumerate().all(|(i, &c)| i == c);
    let pinned: Vec<String> = (0..allowed.len())
        .map(|i| {
            if contiguous {
                i.to_string()
            } else {
                ours.clone()
            }
        })
        .collect();
    let unpinned = vec![ours.clone(); allowed.len()];
    let cases: [(&[&str], Vec<String>); 2] = [(&[], pinned), (&["--steering", "flow"], unpinned)];
    for (extra, want) in cases {
        let ports = [unique_name("vsc"), unique_name("vsc")];
        let args: Vec<&str> = ["--threads", threads.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let (mut child, _stdout) = start_switch_with(&ports, &args);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = worker_cpus(child.id());
        let mut expected: Vec<(String, String)> = want
            .iter()
            .enumerate()
            .map(|(i, cpus)| (format!("vswitch-worker{i}"), cpus.clone()))
            .collect();
        expected.sort();
        while seen != expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            seen = worker_cpus(child.id());
        }
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("kill");
        assert!(wait_exit(&mut child).success());
        assert_eq!(seen, expected, "{extra:?}");
    }
    let out = vswitch(&["--ports", "vsx0", "--steering", "rss"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("steering"), "{}", stderr(&out));
}

#[test]
fn an_existing_persistent_tap_is_attached_and_left_in_place() {
    if !require_root("an_existing_persistent_tap_is_attached_and_left_in_place") {
        return;
    }
    let name = unique_name("vsp");
    let made = Command::new("ip")
        .args(["tuntap", "add", "mode", "tap", "name", &name])
        .status()
        .expect("ip");
    assert!(made.success());
    let _guard = vswitch_netns::LinkGuard::new(&name);
    let (mut child, _stdout) = start_switch(std::slice::from_ref(&name));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("kill");
    assert!(wait_exit(&mut child).success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(err.contains("attached to existing"), "{err}");
    assert!(
        link_exists(&name),
        "a TAP the switch did not create was removed"
    );
}

#[test]
fn the_demo_pings_across_and_leaves_nothing_behind() {
    if !require_root("the_demo_pings_across_and_leaves_nothing_behind") {
        return;
    }
    let out = vswitch(&["demo", "--count", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("demo: OK"));
    let leftovers = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("vsdemo"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "demo namespaces left behind");
}

#[test]
fn config_check_accepts_a_good_file_and_points_at_errors() {
    let dir = std::env::temp_dir().join(unique_name("vscfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "name = \"sw1\"\nports = [\"tap0\", \"dev:veth0\"]\nageing_time = 60\nsteering = \"flow\"\n[macvlan]\nmode = \"private\"\nuplink = \"dev:up0\"\n",
    )
    .unwrap();
    let out = vswitch(&["config", "check", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "ports = [\"tap0\"]\n\nmax_macs = -1\n").unwrap();
    let out = vswitch(&["config", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
    std::fs::write(&bad, "ports = [\"tap0\"]\nsteering = \"rss\"\n").unwrap();
    let out = vswitch(&["config", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bad.toml:2: steering"),
        "{}",
        stderr(&out)
    );
    let out = vswitch(&[
        "config",
        "check",
        dir.join("missing.toml").to_str().unwrap(),
    ]);
    assert!(!out.status.success() && stderr(&out).contains("couldn't read config file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_cap_bpf_the_fast_path_falls_back_and_says_why() {
    if !require_root("without_cap_bpf_the_fast_path_falls_back_and_says_why") {
        return;
    }
    // Two veth pairs; their outer ends are the switch's dev: ports.
    let mut guards = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let (outer, inner) = (unique_name("vsf"), unique_name("vsf"));
        vswitch_netns::Netlink::open()
            .expect("netlink")
            .add_veth(&outer, &inner, None)
            .expect("veth");
        guards.push(vswitch_netns::LinkGuard::new(&outer));
        ports.push(format!("dev:{outer}"));
    }
    for without_bpf in [false, true] {
        let name = unique_name("vsc");
        let args: Vec<String> = [
            "--ports",
            &ports.join(","),
            "--name",
            &name,
            "--threads",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // The binary starts from a thread without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (or
        // with everything), keeping what packet sockets need.
        let child = std::thread::spawn(move || {
            if without_bpf {
                for cap in [
                    caps::Capability::CAP_BPF,
                    caps::Capability::CAP_PERFMON,
                    caps::Capability::CAP_SYS_ADMIN,
                ] {
                    caps::drop(None, caps::CapSet::Bounding, cap).expect("bounding");
                    for set in [
                        caps::CapSet::Effective,
                        caps::CapSet::Permitted,
                        caps::CapSet::Inheritable,
                    ] {
                        caps::drop(None, set, cap).expect("drop");
                    }
                }
            }
            Command::new(env!("CARGO_BIN_EXE_vswitch"))
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .join()
        .expect("spawning thread");
        let mut child = ChildGuard(child);
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        assert!(line.contains("switching among"), "{line}");
        let stats = vswitch(&["stats", "--json", "--name", &name]);
        assert!(stats.status.success(), "{}", stderr(&stats));
        let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("json");
        let served: Vec<bool> = stats["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| p["fast_path"].as_bool().expect("fast_path"))
            .collect();
        assert_eq!(
            served,
            vec![!without_bpf; 2],
            "without CAP_BPF: {without_bpf}"
        );
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("kill");
        assert!(wait_exit(&mut child).success());
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).expect("read");
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read");
        if without_bpf {
            assert!(err.contains("no in-kernel fast path"), "{err}");
            assert!(!rest.contains("forwarded in the kernel"), "{rest}");
        } else {
            assert!(rest.contains("forwarded in the kernel"), "{rest}");
        }
    }
}

#[test]
fn cleanup_removes_what_a_killed_switch_left_and_refuses_a_running_one() {
    if !require_root("cleanup_removes_what_a_killed_switch_left_and_refuses_a_running_one") {
        return;
    }
    let name = unique_name("vsc");
    let tap = unique_name("vsk");
    let mut child = running(&["--ports", &tap, "--name", &name]);
    let refused = vswitch(&["cleanup", "--name", &name]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("already running"),
        "{}",
        stderr(&refused)
    );
    child.stop(Signal::SIGKILL);
    let socket = Path::new("/run/vswitch").join(format!("{name}.sock"));
    assert!(
        socket.exists(),
        "the killed switch's socket should be there to clean"
    );
    assert!(!link_exists(&tap), "its TAP goes with its process");
    let out = vswitch(&["cleanup", "--name", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!socket.exists());
    assert!(
        !Path::new("/run/vswitch")
            .join(format!("{name}.lock"))
            .exists()
    );
    let again = vswitch(&["cleanup", "--name", &name]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing left behind"));
}

#[test]
fn address_gives_the_switch_a_station_port() {
    if !require_root("address_gives_the_switch_a_station_port") {
        return;
    }
    let port = unique_name("vsc");
    let (mut child, _stdout) = start_switch_with(
        std::slice::from_ref(&port),
        &["--address", "10.93.0.254/24"],
    );
    let name = {
        let cmdline =
            std::fs::read_to_string(format!("/proc/{}/cmdline", child.id())).expect("cmdline");
        let args: Vec<&str> = cmdline.split('\0').collect();
        let at = args.iter().position(|a| *a == "--name").expect("--name");
        args[at + 1].to_owned()
    };
    let stats = vswitch(&["stats", "--json", "--name", &name]);
    assert!(stats.status.success(), "{}", stderr(&stats));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("json");
    let kinds: Vec<(String, String)> = stats["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("self".into(), "station".into())),
        "{kinds:?}"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("kill");
    assert!(wait_exit(&mut child).success());
    // A switch that stopped leaves neither its socket nor its name's lock file.
    for ext in ["sock", "lock"] {
        let left = Path::new("/run/vswitch").join(format!("{name}.{ext}"));
        assert!(!left.exists(), "{} left behind", left.display());
    }
    let bad = vswitch(&["--ports", &port, "--address", "10.93.0.254"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--address"), "{}", stderr(&bad));
}

/// A field of /proc/PID[/task/TID]/status.
fn status_field(path: &str, field: &str) -> String {
    std::fs::read_to_string(path)
        .expect("status")
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

/// Least privilege: once started, every thread of the switch has exactly NET_ADMIN, NET_RAW,
/// SYS_ADMIN, BPF and PERFMON, in its permitted, effective and bounding sets, nothing to pass
/// on, and no_new_privs; and runtime changes still work with those.
#[test]
fn a_running_switch_keeps_only_the_capabilities_it_needs() {
    if !require_root("a_running_switch_keeps_only_the_capabilities_it_needs") {
        return;
    }
    let (name, a, b, c) = (
        unique_name("vsl"),
        unique_name("vsl"),
        unique_name("vsl"),
        unique_name("vsl"),
    );
    let mut child = running(&[
        "--ports",
        &format!("tap:{a},tap:{b}"),
        "--name",
        &name,
        "--threads",
        "2",
    ]);
    // CAP_NET_ADMIN 12, CAP_NET_RAW 13, CAP_SYS_ADMIN 21, CAP_PERFMON 38, CAP_BPF 39.
    let want = format!(
        "{:016x}",
        (1u64 << 12) | (1 << 13) | (1 << 21) | (1 << 38) | (1 << 39)
    );
    let pid = child.id();
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(Result::ok)
        .map(|e| {
            format!(
                "/proc/{pid}/task/{}/status",
                e.file_name().to_string_lossy()
            )
        })
        .collect();
    assert!(
        tasks.len() >= 3,
        "the workers and the main thread: {tasks:?}"
    );
    for status in &tasks {
        for field in ["CapPrm", "CapEff", "CapBnd"] {
            assert_eq!(status_field(status, field), want, "{field} of {status}");
        }
        for field in ["CapInh", "CapAmb"] {
            assert_eq!(
                status_field(status, field),
                "0000000000000000",
                "{field} of {status}"
            );
        }
        assert_eq!(status_field(status, "NoNewPrivs"), "1", "{status}");
    }
    // What it kept is enough to change it at runtime.
    let add = vswitch(&["port", "add", &format!("tap:{c}"), "--name", &name]);
    assert!(add.status.success(), "port add: {}", stderr(&add));
    assert!(link_exists(&c));
    let del = vswitch(&["port", "del", &c, "--name", &name]);
    assert!(del.status.success(), "port del: {}", stderr(&del));
    // The TAP goes once the workers let go of the device, a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while link_exists(&c) {
        assert!(Instant::now() < deadline, "port del left the TAP {c}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(child.stop(Signal::SIGTERM).success());
    assert!(
        !link_exists(&a) && !link_exists(&b),
        "its TAPs go as it stops"
    );
}
