//! End-to-end comparison, as root: two namespaces joined by (1) a direct veth pair, (2) the
//! kernel bridge with veth ports, (3) vswitch with TAP ports, (4) the same TAPs relayed into
//! their hosts' namespaces (`tap:NAME@NS`) so the fast path carries them, (5) vswitch with veth
//! ports and its in-kernel fast path, (6) the same through packet sockets only (`--datapath userspace`),
//! and variants of (3): queues steered by flow instead of by CPU, no offloads, one busy-polling
//! worker — built in one run and measured over several rounds, the candidates in a new random
//! order each round after a discarded warm-up round. Each figure is reported as the median over
//! the rounds of its ratio to the kernel bridge's in the same round (paired ratios), with the
//! bridge's own medians; CPU is whole-machine busy time (/proc/stat) per Gbit, for every
//! candidate alike.
//!
//! `cargo bench --bench e2e` (needs iperf3: `apt-get install iperf3`). `VSWITCH_E2E_ROUNDS` (default 3) and
//! `VSWITCH_E2E_SECONDS` (per iperf3 run, default 3) tune it; `VSWITCH_E2E_ONLY=word,word`
//! keeps only the candidates whose names hold a word (and the kernel bridge), and
//! `VSWITCH_E2E_SCALE=0` skips the scale runs. `VSWITCH_E2E_TUNE="1:50 2:0"` adds TAP
//! candidates with THREADS:BUSY_POLL_MICROS. Writes a Markdown table to stdout, and
//! `benches/results/DATE-e2e.{md,json,svg}` (with each candidate's interface MTUs and queue
//! lengths).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use vswitch_datapath::SwitchConfig;
use vswitch_netns::{LinkGuard, Netlink};
use vswitch_testkit::{Attach, Host, SwitchLab, unique_name};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// One way of joining the two hosts, kept alive while measured.
enum Topology {
    Wire {
        hosts: Vec<Host>,
    },
    Bridge {
        hosts: Vec<Host>,
        _bridge: LinkGuard,
    },
    Vswitch {
        lab: SwitchLab,
    },
}

impl Topology {
    fn hosts(&self) -> &[Host] {
        match self {
            Topology::Wire { hosts } | Topology::Bridge { hosts, .. } => hosts,
            Topology::Vswitch { lab } => &lab.hosts,
        }
    }
}

fn wire() -> BoxResult<Topology> {
    let (a, b) = (unique_name("vbw"), unique_name("vbw"));
    Netlink::open()?.add_veth(&a, &b, None)?;
    let hosts = vec![
        Host::with_link(&a, Ipv4Addr::new(10, 77, 0, 1))?,
        Host::with_link(&b, SERVER)?,
    ];
    Ok(Topology::Wire { hosts })
}

fn bridge() -> BoxResult<Topology> {
    let br = unique_name("vbb");
    let mut nl = Netlink::open()?;
    nl.add_bridge(&br)?;
    let bridge = LinkGuard::new(&br);
    let mut hosts = Vec::new();
    for addr in [Ipv4Addr::new(10, 77, 0, 1), SERVER] {
        let (inner, outer) = (unique_name("vbh"), unique_name("vbp"));
        nl.add_veth(&inner, &outer, None)?;
        hosts.push(Host::with_link(&inner, addr)?);
        nl.set_master(&outer, &br)?;
        nl.set_up(&outer)?;
    }
    nl.set_up(&br)?;
    Ok(Topology::Bridge {
        hosts,
        _bridge: bridge,
    })
}

type Build = Box<dyn Fn() -> BoxResult<Topology>>;

/// Builds a vswitch lab of two hosts with `config`, attached as `attach`.
fn vswitch(config: SwitchConfig, attach: Attach) -> Build {
    Box::new(move || {
        let lab = SwitchLab::new(2, config.clone(), attach)?;
        Ok(Topology::Vswitch { lab })
    })
}

/// The switch as the candidates run it unless they say otherwise: two workers, one per CPU of
/// the reference machine.
fn two_workers() -> SwitchConfig {
    SwitchConfig {
        threads: 2,
        ..SwitchConfig::default()
    }
}

const TAP: Attach = Attach::Tap { offload: true };

/// Whole-machine busy CPU time in seconds (/proc/stat: everything but idle and iowait), so the
/// kernel's work for a candidate (softirqs, the receiving stacks) counts as much as ours.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(8)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0 // USER_HZ is 100 on Linux
}

/// The MTU and transmit queue length of each host's interface, for the record.
fn devices(topology: &Topology) -> Vec<Value> {
    topology
        .hosts()
        .iter()
        .map(|h| {
            let info =
                h.ns.run(|| Netlink::open().and_then(|mut nl| nl.link(&h.ifname)))
                    .ok()
                    .and_then(Result::ok);
            serde_json::json!({
                "interface": h.ifname,
                "mtu": info.as_ref().and_then(|i| i.mtu),
                "txqueuelen": info.as_ref().and_then(|i| i.tx_queue_len),
            })
        })
        .collect()
}

#[derive(Default, Clone)]
struct Samples {
    tcp1: Vec<f64>,
    tcp4: Vec<f64>,
    tcp4_retransmits: Vec<f64>,
    udp_pps: Vec<f64>,
    udp_loss: Vec<f64>,
    rtt_p50: Vec<f64>,
    rtt_p99: Vec<f64>,
    cpu_ms_per_gbit: Vec<f64>,
}

fn measure(topology: &Topology, secs: u64, samples: &mut Samples) -> BoxResult<()> {
    let (client, server) = (&topology.hosts()[0].ns, &topology.hosts()[1].ns);
    let mut srv = iperf::iperf_server(server)?;
    let result = (|| -> BoxResult<()> {
        let cpu0 = cpu_seconds();
        let one = tcp(client, SERVER, 1, secs)?;
        let cpu = cpu_seconds() - cpu0;
        samples.tcp1.push(one.gbit);
        if one.bytes > 0.0 {
            // CPU milliseconds per Gbit moved.
            samples
                .cpu_ms_per_gbit
                .push(cpu * 1000.0 / (one.bytes * 8.0 / 1e9));
        }
        let four = tcp(client, SERVER, 4, secs)?;
        samples.tcp4.push(four.gbit);
        samples.tcp4_retransmits.push(four.retransmits);
        let (pps, loss) = udp64(client, SERVER, secs)?;
        samples.udp_pps.push(pps);
        samples.udp_loss.push(loss);
        let (p50, p99) = rtt(client, SERVER)?;
        samples.rtt_p50.push(p50);
        samples.rtt_p99.push(p99);
        Ok(())
    })();
    let _ = srv.kill();
    let _ = srv.wait();
    result
}

#[path = "common/iperf.rs"]
mod iperf;

use iperf::{BoxResult, env_u64 as env, median, rtt, tcp, udp64};

fn main() -> BoxResult<()> {
    if !vswitch_testkit::is_root() {
        eprintln!("e2e benchmark skipped: needs root (namespaces, TAPs, bridges)");
        return Ok(());
    }
    if Command::new("iperf3").arg("--version").output().is_err() {
        return Err("e2e benchmark needs iperf3 (apt-get install iperf3)".into());
    }
    let (rounds, secs) = (env("VSWITCH_E2E_ROUNDS", 3), env("VSWITCH_E2E_SECONDS", 3));
    let mut candidates: Vec<(String, Build)> = vec![
        ("veth pair (the wire)".into(), Box::new(wire)),
        ("kernel bridge, veth ports".into(), Box::new(bridge)),
        ("vswitch, TAP ports".into(), vswitch(two_workers(), TAP)),
        (
            "vswitch, TAP ports, --steering flow".into(),
            vswitch(
                SwitchConfig {
                    steering: vswitch_datapath::Steering::Flow,
                    ..two_workers()
                },
                TAP,
            ),
        ),
        (
            "vswitch, TAP ports relayed (tap:NAME@NS), fast path".into(),
            vswitch(two_workers(), Attach::RelayedTap),
        ),
        (
            "vswitch, veth ports, fast path".into(),
            vswitch(two_workers(), Attach::Veth),
        ),
        (
            "vswitch, veth ports, fast path as cls_bpf".into(),
            vswitch(
                SwitchConfig {
                    datapath: vswitch_datapath::Datapath::ClsBpf,
                    ..two_workers()
                },
                Attach::Veth,
            ),
        ),
        (
            "vswitch, veth ports, --datapath userspace".into(),
            vswitch(
                SwitchConfig {
                    datapath: vswitch_datapath::Datapath::Userspace,
                    ..two_workers()
                },
                Attach::Veth,
            ),
        ),
        (
            "vswitch, TAP ports, --no-offload".into(),
            vswitch(two_workers(), Attach::Tap { offload: false }),
        ),
    ];
    // VSWITCH_E2E_TUNE="1:50 2:0" adds TAP candidates with THREADS:BUSY_POLL_MICROS, to try
    // settings against the same bridge; one busy-polling worker is always among them.
    let tune = std::env::var("VSWITCH_E2E_TUNE").unwrap_or_default();
    for tune in std::iter::once("1:5000").chain(tune.split_whitespace()) {
        let (threads, busy) = tune
            .split_once(':')
            .and_then(|(t, b)| Some((t.parse::<usize>().ok()?, b.parse::<u64>().ok()?)))
            .ok_or_else(|| format!("VSWITCH_E2E_TUNE: {tune:?} is not THREADS:MICROS"))?;
        let config = SwitchConfig {
            threads,
            busy_poll: Duration::from_micros(busy),
            ..SwitchConfig::default()
        };
        candidates.push((
            format!("vswitch, TAP ports, --threads {threads} --busy-poll {busy}"),
            vswitch(config, TAP),
        ));
    }
    // VSWITCH_E2E_ONLY=busy,no-offload keeps the candidates whose names contain one of the
    // words (the kernel bridge always stays: every ratio is against it).
    let only = std::env::var("VSWITCH_E2E_ONLY").unwrap_or_default();
    candidates.retain(|(name, _)| {
        only.is_empty()
            || name.starts_with("kernel bridge")
            || only.split(',').any(|w| !w.is_empty() && name.contains(w))
    });
    let topologies: Vec<Topology> = candidates
        .iter()
        .map(|(_, build)| build())
        .collect::<BoxResult<_>>()?;
    let mut samples = vec![Samples::default(); candidates.len()];
    // Round 0 warms caches, ARP and the switches' tables up and is thrown away; each round
    // takes the candidates in a new order, so no candidate always follows the same one.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    for round in 0..=rounds {
        let mut order: Vec<usize> = (0..topologies.len()).collect();
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            eprintln!(
                "round {round}/{rounds}{}: {}",
                if round == 0 { " (warm-up)" } else { "" },
                candidates[i].0
            );
            let mut scratch = Samples::default();
            let into = if round == 0 {
                &mut scratch
            } else {
                &mut samples[i]
            };
            measure(&topologies[i], secs, into)?;
        }
    }
    let devices: Vec<Vec<Value>> = topologies.iter().map(devices).collect();
    drop(topologies);
    let names: Vec<&str> = candidates.iter().map(|(name, _)| name.as_str()).collect();
    report(&names, &samples, &devices)?;
    if env("VSWITCH_E2E_SCALE", 1) == 0 {
        return Ok(());
    }
    scale(rounds, secs)
}

/// Unicast TCP between two hosts while 2, 8, 32 or 64 ports are attached (the others idle TAPs,
/// down and silent), as a ratio to the 2-port figure, measured interleaved.
fn scale(rounds: u64, secs: u64) -> BoxResult<()> {
    let sizes = [2usize, 8, 32, 64];
    let mut labs = Vec::new();
    for &n in &sizes {
        let Topology::Vswitch { lab } = vswitch(two_workers(), TAP)()? else {
            unreachable!()
        };
        for _ in 2..n {
            let name = unique_name("vbi");
            let tap = vswitch_datapath::Tap::open(&name, true)?;
            lab.switch.add_port(name, Box::new(tap))?;
        }
        labs.push(Topology::Vswitch { lab });
    }
    let mut gbits = vec![Vec::new(); sizes.len()];
    for round in 1..=rounds {
        for (i, topology) in labs.iter().enumerate() {
            eprintln!("scale round {round}/{rounds}: {} ports", sizes[i]);
            let mut srv = iperf::iperf_server(&topology.hosts()[1].ns)?;
            let result = tcp(&topology.hosts()[0].ns, SERVER, 1, secs);
            let _ = srv.kill();
            let _ = srv.wait();
            gbits[i].push(result?.gbit);
        }
    }
    let base = median(&gbits[0]);
    println!(
        "\n| ports attached (2 busy) | TCP 1 stream Gbit/s | ratio to 2 ports |\n|---|---|---|"
    );
    for (n, g) in sizes.iter().zip(&gbits) {
        println!("| {n} | {:.2} | {:.2}× |", median(g), median(g) / base);
    }
    Ok(())
}

/// The median over rounds of `get(candidate) / get(bridge)`, round by round.
fn paired(candidate: &[f64], bridge: &[f64]) -> f64 {
    let ratios: Vec<f64> = candidate
        .iter()
        .zip(bridge)
        .filter(|(_, b)| **b > 0.0)
        .map(|(c, b)| c / b)
        .collect();
    median(&ratios)
}

fn report(names: &[&str], samples: &[Samples], devices: &[Vec<Value>]) -> BoxResult<()> {
    // The kernel bridge is the reference for every ratio.
    let bridge = names
        .iter()
        .position(|n| n.starts_with("kernel bridge"))
        .ok_or("no kernel bridge among the candidates")?;
    let b = &samples[bridge];
    let mut md = String::new();
    writeln!(
        md,
        "Each cell: the median over rounds, then (in brackets) the median of the per-round ratios to the kernel bridge of the same round.\n"
    )?;
    writeln!(
        md,
        "| two namespaces joined by | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s (retransmitted segments) | UDP 64 B delivered kpps (loss) | ping p50 / p99 µs | machine CPU ms per Gbit (1 stream) |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    let mut json = Vec::new();
    for ((name, s), devices) in names.iter().zip(samples).zip(devices) {
        let (t1, t4, u, l) = (
            median(&s.tcp1),
            median(&s.tcp4),
            median(&s.udp_pps),
            median(&s.udp_loss),
        );
        let retr = median(&s.tcp4_retransmits);
        let (p50, p99, cpu) = (
            median(&s.rtt_p50),
            median(&s.rtt_p99),
            median(&s.cpu_ms_per_gbit),
        );
        let r = (
            paired(&s.tcp1, &b.tcp1),
            paired(&s.tcp4, &b.tcp4),
            paired(&s.udp_pps, &b.udp_pps),
            paired(&s.rtt_p50, &b.rtt_p50),
            paired(&s.cpu_ms_per_gbit, &b.cpu_ms_per_gbit),
        );
        writeln!(
            md,
            "| {name} | {t1:.2} ({:.2}×) | {t4:.2} ({:.2}×, {retr:.0}) | {:.0} ({:.2}×, {l:.1}% loss) | {p50:.0} / {p99:.0} ({:.2}×) | {cpu:.0} ({:.2}×) |",
            r.0,
            r.1,
            u / 1000.0,
            r.2,
            r.3,
            r.4,
        )?;
        json.push(serde_json::json!({
            "name": name, "tcp1_gbit": t1, "tcp4_gbit": t4, "tcp4_retransmits": retr, "udp64_pps": u, "udp64_loss_pct": l,
            "rtt_p50_us": p50, "rtt_p99_us": p99, "cpu_ms_per_gbit": cpu,
            "paired_ratio_to_bridge": { "tcp1": r.0, "tcp4": r.1, "udp64": r.2, "rtt_p50": r.3, "cpu_ms_per_gbit": r.4 },
            "samples": { "tcp1": s.tcp1, "tcp4": s.tcp4, "tcp4_retransmits": s.tcp4_retransmits, "udp64_pps": s.udp_pps, "udp64_loss": s.udp_loss, "rtt_p50": s.rtt_p50, "cpu_ms_per_gbit": s.cpu_ms_per_gbit },
            "devices": devices,
        }));
    }
    print!("{md}");
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "undated".into());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{date}-e2e.md")), &md)?;
    std::fs::write(
        dir.join(format!("{date}-e2e.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(
        dir.join(format!("{date}-e2e.svg")),
        svg(names, samples, bridge),
    )?;
    eprintln!("wrote {}/{date}-e2e.{{md,json,svg}}", dir.display());
    Ok(())
}

/// A grouped bar chart of each metric as a ratio to the kernel bridge (higher is better; for
/// latency the inverse ratio is drawn so that higher is better there too).
fn svg(names: &[&str], samples: &[Samples], bridge: usize) -> String {
    type Metric = (&'static str, fn(&Samples) -> &[f64], bool);
    let metrics: [Metric; 5] = [
        ("TCP 1 stream", |s| &s.tcp1, false),
        ("TCP 4 streams", |s| &s.tcp4, false),
        ("UDP 64 B pps", |s| &s.udp_pps, false),
        ("ping p50 (inverse)", |s| &s.rtt_p50, true),
        ("CPU/Gbit (inverse)", |s| &s.cpu_ms_per_gbit, true),
    ];
    let colors = [
        "#888888", "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf",
    ];
    let (w, h, top, bottom, left) = (760.0, 400.0, 40.0, 100.0, 50.0);
    let plot_h = h - top - bottom;
    let max_ratio = 2.0f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<text x="{left}" y="20" font-size="14">Median per-round ratio to the kernel bridge (1.0 = bridge, higher is better)</text>
"#
    );
    let y_of = |r: f64| top + plot_h * (1.0 - (r.min(max_ratio) / max_ratio));
    for tick in [0.0, 0.5, 1.0, 1.5, 2.0] {
        let y = y_of(tick);
        let _ = writeln!(
            out,
            r#"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="{}"/><text x="10" y="{}">{tick:.1}</text>"#,
            w - 10.0,
            if tick == 1.0 { "#000" } else { "#ddd" },
            y + 4.0
        );
    }
    let group_w = (w - left - 20.0) / metrics.len() as f64;
    let bar_w = group_w / (names.len() as f64 + 1.0);
    for (m, (label, get, inverse)) in metrics.iter().enumerate() {
        let base = get(&samples[bridge]);
        let gx = left + m as f64 * group_w;
        for (c, s) in samples.iter().enumerate() {
            let r = paired(get(s), base);
            let r = if *inverse { 1.0 / r } else { r };
            let r = if r.is_finite() { r } else { 0.0 };
            let x = gx + (c as f64 + 0.5) * bar_w;
            let y = y_of(r);
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{x:.1}" y="{:.1}" font-size="10">{r:.2}</text>"#,
                bar_w * 0.9,
                top + plot_h - y,
                colors[c % colors.len()],
                y - 3.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{label}</text>"#,
            gx + bar_w * 0.5,
            h - bottom + 18.0
        );
    }
    for (c, name) in names.iter().enumerate() {
        let (x, y) = (
            left + (c % 2) as f64 * 340.0,
            h - 50.0 + (c / 2) as f64 * 16.0,
        );
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{y}">{name}</text>"#,
            y - 10.0,
            colors[c % colors.len()],
            x + 16.0,
        );
    }
    out.push_str("</svg>\n");
    out
}
