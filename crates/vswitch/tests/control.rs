//! Operating a running switch through its control socket and metrics endpoint. Needs root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use vswitch_testkit::{
    ChildGuard, EchoOptions, Host, ping, ping_with, relays_of, require_root, unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_vswitch");

/// A switch process with one host per TAP, stopped and cleaned up on drop.
struct Running {
    child: Child,
    name: String,
    taps: Vec<String>,
    hosts: Vec<Host>,
    metrics: u16,
}

impl Running {
    fn start(n: usize) -> Running {
        let name = unique_name("ctl");
        let taps: Vec<String> = (0..n).map(|_| unique_name("vst")).collect();
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let metrics = 20000 + (std::process::id() % 4000) as u16 * 8 + n;
        let mut child = Command::new(BIN)
            .args([
                "--ports",
                &taps.join(","),
                "--name",
                &name,
                "--threads",
                "2",
            ])
            .args(["--metrics", &format!("127.0.0.1:{metrics}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert!(line.contains("switching among"), "{line}");
        let hosts = taps
            .iter()
            .enumerate()
            .map(|(i, tap)| {
                Host::with_link(tap, Ipv4Addr::new(10, 88, 0, i as u8 + 1)).expect("host")
            })
            .collect();
        Running {
            child,
            name,
            taps,
            hosts,
            metrics,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--name", &self.name])
            .output()
            .expect("run")
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    fn port_stat(&self, port: &str, key: &str) -> u64 {
        let stats = self.json(&["stats", "--json"]);
        stats["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == port))
            .and_then(|p| p[key].as_u64())
            .unwrap_or_else(|| panic!("no {key} for {port} in {stats}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

#[test]
fn fdb_show_static_entries_and_flush() {
    if !require_root("fdb_show_static_entries_and_flush") {
        return;
    }
    let sw = Running::start(3);
    let (a, b, c) = (&sw.hosts[0], &sw.hosts[1], &sw.hosts[2]);
    assert!(ping(&a.ns, b.addr, 1).all_replied() && ping(&a.ns, c.addr, 1).all_replied());
    let fdb = sw.json(&["fdb", "show", "--json"]);
    let mut rows: Vec<(String, String)> = fdb
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["mac"].as_str().unwrap().to_owned(),
                r["port"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.sort();
    let mut expected: Vec<(String, String)> = sw
        .hosts
        .iter()
        .zip(&sw.taps)
        .map(|(h, t)| (h.mac().expect("mac"), t.clone()))
        .collect();
    expected.sort();
    assert_eq!(
        rows, expected,
        "the table lists exactly the hosts, each on its port"
    );

    // A static entry for b on c's port wins over learning: a can't reach b any more.
    let mac_b = b.mac().expect("mac");
    assert!(
        sw.cli(&["fdb", "add", &mac_b, &sw.taps[2]])
            .status
            .success()
    );
    assert!(
        ping(&a.ns, b.addr, 2).none_replied(),
        "frames for b must follow the static entry"
    );
    let fdb = sw.json(&["fdb", "show", "--json"]);
    let entry = fdb
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mac"] == mac_b.as_str())
        .expect("entry");
    assert_eq!(
        (entry["port"].as_str(), entry["static"].as_bool()),
        (Some(sw.taps[2].as_str()), Some(true))
    );
    assert!(sw.cli(&["fdb", "del", &mac_b]).status.success());
    assert!(ping(&a.ns, b.addr, 1).all_replied(), "back to learning");
    let flushed = sw.cli(&["fdb", "flush"]);
    assert!(String::from_utf8_lossy(&flushed.stdout).contains("flushed"));
    let bad = sw.cli(&["fdb", "add", "nonsense", &sw.taps[0]]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("invalid MAC"));
    let bad = sw.cli(&["fdb", "add", &mac_b, "noport"]);
    assert!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("no port noport")
    );
}

#[test]
fn port_del_and_add_while_traffic_flows() {
    if !require_root("port_del_and_add_while_traffic_flows") {
        return;
    }
    let mut sw = Running::start(3);
    assert!(ping(&sw.hosts[0].ns, sw.hosts[1].addr, 1).all_replied());
    // 1000 pings 2 ms apart between a and b while c's port is removed: none may be lost.
    let (a_ns, b_addr) = (&sw.hosts[0].ns, sw.hosts[1].addr);
    let flood = EchoOptions {
        count: 1000,
        interval: Duration::from_millis(2),
        ..EchoOptions::default()
    };
    let report = std::thread::scope(|s| {
        let flood = s.spawn(|| ping_with(a_ns, b_addr, flood));
        std::thread::sleep(Duration::from_millis(500));
        let del = sw.cli(&["port", "del", &sw.taps[2]]);
        assert!(
            del.status.success(),
            "{}",
            String::from_utf8_lossy(&del.stderr)
        );
        flood.join().expect("ping thread")
    });
    assert!(
        report.all_replied(),
        "pings were lost while a port was removed: {report}"
    );
    // The TAP the switch created is gone with the port.
    let gone = Command::new("ip")
        .args(["-n", sw.hosts[2].ns.name(), "link", "show", &sw.taps[2]])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "TAP still exists after port del");
    drop(sw.hosts.pop());
    // A new port brings a new host in.
    let tap = unique_name("vst");
    let add = sw.cli(&["port", "add", &format!("tap:{tap}")]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let host = Host::with_link(&tap, Ipv4Addr::new(10, 88, 0, 9)).expect("host");
    assert!(
        ping(&sw.hosts[0].ns, host.addr, 2).all_replied(),
        "new host unreachable"
    );
    let dup = sw.cli(&["port", "add", &format!("tap:{tap}")]);
    assert!(!dup.status.success());
    sw.hosts.push(host);

    // A TAP added into a host's namespace (`tap:NAME@NS`) comes with its relay, which the fast
    // path (made now: the switch had only plain TAPs) serves; `port del` takes both away.
    let ns = Host::namespace().expect("namespace");
    let relayed = unique_name("vsr");
    let add = sw.cli(&["port", "add", &format!("tap:{relayed}@{}", ns.name())]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let host = Host::with_link_in(ns, &relayed, Ipv4Addr::new(10, 88, 0, 10)).expect("host");
    assert!(
        ping(&sw.hosts[0].ns, host.addr, 2).all_replied(),
        "relayed host unreachable"
    );
    let fast = |port: &str| {
        sw.json(&["stats", "--json"])["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == port && p["fast_path"] == true)
    };
    assert!(
        fast(&relayed),
        "the added relayed TAP isn't on the fast path"
    );
    assert_eq!(relays_of(&relayed).len(), 1, "no relay");
    let del = sw.cli(&["port", "del", &relayed]);
    assert!(del.status.success());
    assert_eq!(
        relays_of(&relayed),
        Vec::<String>::new(),
        "the relay stayed after port del"
    );
    drop(host);
}

#[test]
fn stats_and_metrics_count_the_traffic_sent() {
    if !require_root("stats_and_metrics_count_the_traffic_sent") {
        return;
    }
    let sw = Running::start(2);
    let (a, b) = (&sw.hosts[0], &sw.hosts[1]);
    assert!(ping(&a.ns, b.addr, 1).all_replied());
    let (rx0, tx1) = (
        sw.port_stat(&sw.taps[0], "rx_packets"),
        sw.port_stat(&sw.taps[1], "tx_packets"),
    );
    assert!(ping(&a.ns, b.addr, 10).all_replied());
    let (rx, tx) = (
        sw.port_stat(&sw.taps[0], "rx_packets") - rx0,
        sw.port_stat(&sw.taps[1], "tx_packets") - tx1,
    );
    // 10 echo requests each way through the switch; an ARP refresh may add one or two frames.
    assert!(
        (10..=12).contains(&rx),
        "a's port received {rx} frames for 10 pings"
    );
    assert!(
        (10..=12).contains(&tx),
        "b's port sent {tx} frames for 10 pings"
    );
    // The metrics endpoint serves the same numbers.
    let mut conn = TcpStream::connect(("127.0.0.1", sw.metrics)).expect("metrics endpoint");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    let metric = format!("vswitch_port_rx_packets_total{{port=\"{}\"}} ", sw.taps[0]);
    let value: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix(metric.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {metric} in\n{body}"));
    assert_eq!(value, sw.port_stat(&sw.taps[0], "rx_packets"));
    assert!(body.contains("vswitch_fdb_entries 2"));
    let busy: f64 = body
        .lines()
        .filter_map(|l| l.strip_prefix("vswitch_worker_busy_seconds_total{worker="))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum();
    assert!(
        busy > 0.0,
        "workers that moved frames report no busy time:\n{body}"
    );

    // A client that never finishes its request is cut off within the 2 s deadline, and one
    // sending an endless header gets nothing: neither holds the endpoint.
    let started = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", sw.metrics)).expect("metrics endpoint");
    silent.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let mut rest = String::new();
    let _ = silent.read_to_string(&mut rest);
    assert!(rest.is_empty(), "answered an unfinished request: {rest}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held {:?}",
        started.elapsed()
    );
    let mut endless = TcpStream::connect(("127.0.0.1", sw.metrics)).expect("metrics endpoint");
    let header = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "y".repeat(16 * 1024));
    let _ = endless.write_all(header.as_bytes());
    let mut rest = Vec::new();
    let _ = endless.read_to_end(&mut rest);
    assert!(
        !rest.starts_with(b"HTTP/1.1 200"),
        "answered a 16 KiB header"
    );
    let mut conn = TcpStream::connect(("127.0.0.1", sw.metrics)).expect("metrics endpoint");
    conn.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
}

#[test]
fn names_are_exclusive_and_bad_requests_are_answered_not_fatal() {
    if !require_root("names_are_exclusive_and_bad_requests_are_answered_not_fatal") {
        return;
    }
    let sw = Running::start(2);
    let tap = unique_name("vst");
    let second = Command::new(BIN)
        .args(["--ports", &tap, "--name", &sw.name])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));
    assert!(
        !std::path::Path::new("/sys/class/net").join(&tap).exists(),
        "refused start left a TAP"
    );

    let mut conn = UnixStream::connect(format!("/run/vswitch/{}.sock", sw.name)).expect("socket");
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for garbage in [
        "not json",
        r#"{"version":1,"request":{"cmd":"reboot"}}"#,
        r#"{"version":9,"request":{"cmd":"stats"}}"#,
    ] {
        writeln!(conn, "{garbage}").unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        let reply: Value = serde_json::from_str(&reply).expect("a JSON reply");
        assert_eq!(reply["ok"], false, "{garbage} -> {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(
        ping(&sw.hosts[0].ns, sw.hosts[1].addr, 2).all_replied(),
        "switch stopped forwarding"
    );

    // A line past 64 KiB is refused and the connection closed, without reading on forever.
    let path = format!("/run/vswitch/{}.sock", sw.name);
    let mut long = UnixStream::connect(&path).expect("socket");
    let mut long_reader = BufReader::new(long.try_clone().unwrap());
    let _ = long.write_all(&vec![b'x'; 100 * 1024]);
    let mut reply = String::new();
    long_reader.read_line(&mut reply).unwrap();
    assert!(reply.contains("longer than"), "{reply}");
    reply.clear();
    assert_eq!(long_reader.read_line(&mut reply).unwrap(), 0, "still open");

    // Connections beyond 32 are answered with an error, and served again once others close.
    let held: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(&path).expect("socket"))
        .collect();
    let mut extra = BufReader::new(UnixStream::connect(&path).expect("socket"));
    let mut reply = String::new();
    extra.read_line(&mut reply).unwrap();
    assert!(reply.contains("too many"), "{reply}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sw.cli(&["stats", "--json"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "not served after the others closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The socket and its directory are root's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode("/run/vswitch"), 0o700);

    let missing = Command::new(BIN)
        .args(["stats", "--name", &unique_name("none")])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("is running"));
}

#[test]
fn capture_writes_a_pcap_that_an_independent_reader_reads() {
    if !require_root("capture_writes_a_pcap_that_an_independent_reader_reads") {
        return;
    }
    let sw = Running::start(2);
    let (a, b) = (&sw.hosts[0], &sw.hosts[1]);
    assert!(ping(&a.ns, b.addr, 1).all_replied());
    let file = std::env::temp_dir().join(format!("{}.pcap", unique_name("cap")));
    let mut capture = ChildGuard(
        Command::new(BIN)
            .args(["capture", &sw.taps[1], "-c", "10", "-w"])
            .arg(&file)
            .args(["--name", &sw.name])
            .stderr(Stdio::piped())
            .spawn()
            .expect("capture"),
    );
    // It says so once the switch accepted it.
    let mut stderr = std::io::BufReader::new(capture.stderr.take().expect("stderr"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).expect("read");
    assert!(line.contains("listening on"), "{line}");
    assert!(ping(&a.ns, b.addr, 10).all_replied());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = capture.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "capture did not end after 10 frames"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let pcap = vswitch_testkit::read_pcap(&file);
    let _ = std::fs::remove_file(&file);
    assert_eq!(pcap.linktype, Some(1), "Ethernet");
    assert_eq!(pcap.frames.len(), 10, "{pcap:?}");
    for frame in &pcap.frames {
        let d = &frame.data;
        // IPv4 (0x0800), protocol ICMP, echo request (8) or reply (0), captured whole.
        assert!(
            d.len() >= 42 && d[12..14] == [8, 0] && d[23] == 1 && matches!(d[34], 0 | 8),
            "not an ICMP echo: {d:02x?}"
        );
        assert_eq!(frame.original_len as usize, d.len());
    }

    // `-w -` streams to standard output, as tcpdump does: read it live through a pipe.
    let mut piped = ChildGuard(
        Command::new(BIN)
            .args(["capture", &sw.taps[1], "-c", "5", "-w", "-"])
            .args(["--name", &sw.name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("capture"),
    );
    let mut stderr = std::io::BufReader::new(piped.stderr.take().expect("stderr"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).expect("read");
    assert!(line.contains("listening on"), "{line}");
    assert!(ping(&a.ns, b.addr, 5).all_replied());
    let stdout = piped.stdout.take().expect("stdout");
    let live = vswitch_testkit::read_pcap_from(stdout, "capture -w -");
    assert_eq!(live.frames.len(), 5, "{live:?}");
    assert!(piped.wait().expect("wait").success());
    assert!(!std::path::Path::new("-").exists(), "wrote a file named -");
}

#[test]
fn a_switch_runs_from_a_config_file() {
    if !require_root("a_switch_runs_from_a_config_file") {
        return;
    }
    let (name, t0, t1) = (unique_name("cfg"), unique_name("vst"), unique_name("vst"));
    let file = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!("name = \"{name}\"\nports = [\"{t0}\", \"{t1}\"]\nageing_time = 7\nthreads = 1\n"),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(line.contains(&t0) && line.contains(&t1), "{line}");
    let info = Command::new(BIN)
        .args(["stats", "--json", "--name", &name])
        .output()
        .unwrap();
    assert!(info.status.success(), "the config's name was not used");
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    assert!(child.wait().unwrap().success());
}

#[test]
fn pipelines_are_set_shown_counted_and_cleared_through_the_socket() {
    if !require_root("pipelines_are_set_shown_counted_and_cleared_through_the_socket") {
        return;
    }
    let sw = Running::start(2);
    let (a, b) = (&sw.hosts[0], &sw.hosts[1]);
    assert!(ping(&a.ns, b.addr, 1).all_replied());
    let set = sw.cli(&[
        "pipeline",
        "set",
        &sw.taps[0],
        "in",
        "filter drop proto icmp",
    ]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(ping(&a.ns, b.addr, 3).none_replied());
    let show =
        String::from_utf8_lossy(&sw.cli(&["pipeline", "show", &sw.taps[0]]).stdout).into_owned();
    assert!(show.contains("filter drop proto 1  [matched 3]"), "{show}");
    let stats = sw.json(&["stats", "--json"]);
    let port = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == sw.taps[0].as_str())
        .unwrap();
    assert_eq!(
        port["pipeline"]["in"][0]["counters"]["dropped"], 3,
        "{port}"
    );
    assert_eq!(port["drops"]["pipeline"], 3);
    let mut conn = TcpStream::connect(("127.0.0.1", sw.metrics)).expect("metrics endpoint");
    conn.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    assert!(body.contains(&format!(
        "vswitch_pipeline_stage_total{{port=\"{}\",hook=\"in\",stage=\"0\",kind=\"filter\",counter=\"dropped\"}} 3",
        sw.taps[0]
    )), "{body}");
    let bad = sw.cli(&["pipeline", "set", &sw.taps[0], "in", "filter maybe"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("allow, drop or count"));
    assert!(sw.cli(&["pipeline", "clear", &sw.taps[0]]).status.success());
    assert!(ping(&a.ns, b.addr, 1).all_replied());
}

#[test]
fn of_two_starts_with_one_name_at_once_exactly_one_runs() {
    if !require_root("of_two_starts_with_one_name_at_once_exactly_one_runs") {
        return;
    }
    for _ in 0..3 {
        let name = unique_name("ctl");
        let start = || {
            ChildGuard(
                Command::new(BIN)
                    .args(["--ports", &unique_name("vst"), "--name", &name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn"),
            )
        };
        let mut both = [start(), start()];
        // The loser exits at once; give it 5 s on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(5);
        let exited = loop {
            let exited: Vec<usize> = (0..2)
                .filter(|&i| matches!(both[i].try_wait(), Ok(Some(_))))
                .collect();
            if !exited.is_empty() || Instant::now() > deadline {
                break exited;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            exited.len(),
            1,
            "both or neither of two same-named switches ran"
        );
        let loser = &mut both[exited[0]];
        let mut err = String::new();
        std::io::Read::read_to_string(&mut loser.stderr.take().expect("stderr"), &mut err)
            .expect("read");
        assert!(err.contains("already running"), "{err}");
        // The winner still answers on the socket.
        let stats = Command::new(BIN)
            .args(["stats", "--name", &name])
            .output()
            .expect("stats");
        assert!(
            stats.status.success(),
            "{}",
            String::from_utf8_lossy(&stats.stderr)
        );
    }
}

/// VLAN modes and flags through the socket, as a script would drive them: set, add, show as
/// JSON, refused changes that change nothing, and what membership dropped by VID.
#[test]
fn vlans_and_flags_are_set_shown_and_counted_through_the_socket() {
    if !require_root("vlans_and_flags_are_set_shown_and_counted_through_the_socket") {
        return;
    }
    let sw = Running::start(2);
    let (a, b) = (&sw.taps[0], &sw.taps[1]);
    let ok = |args: &[&str]| {
        let out = sw.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&["vlan", "set", a, "access", "10"]);
    ok(&["vlan", "set", b, "trunk", "10,20"]);
    ok(&["vlan", "add", b, "30-31"]);
    ok(&["port", "set", b, "isolated", "on"]);
    let refused = sw.cli(&["vlan", "set", a, "trunk", "10", "native", "20"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("native VLAN 20"));
    let show = sw.json(&["vlan", "show", "--json"]);
    let mode = |port: &str| -> (String, String) {
        let row = show["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["port"] == port))
            .unwrap_or_else(|| panic!("no {port} in {show}"));
        (
            row["vlan"].as_str().unwrap_or("").to_owned(),
            row["flags"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(mode(a).0, "access 10", "the refused change changed nothing");
    assert_eq!(mode(b).0, "trunk 10,20,30-31");
    assert!(mode(b).1.contains("isolated on"));
    // The hosts send untagged frames: on the trunk without a native VLAN each is dropped, and
    // counted under VID 0.
    let _ = vswitch_testkit::ping(&sw.hosts[1].ns, sw.hosts[0].addr, 1);
    let show = sw.json(&["vlan", "show", "--json"]);
    assert!(
        show["drops_by_vid"]["0"].as_u64().unwrap_or(0) > 0,
        "{show}"
    );
    assert_eq!(
        sw.json(&["stats", "--json"])["vlan_drops_by_vid"],
        show["drops_by_vid"]
    );
}
