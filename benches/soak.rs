//! Soak, as root: a lab of three hosts on TAP ports under mixed load for
//! `VSWITCH_SOAK_SECONDS` (default 600): TCP transfers checked by hash, a UDP flood, a ping
//! flood counted exactly, a churn of random source MACs, ports added and removed, pipelines set
//! and cleared, captures started and abandoned. Every 10 s it prints resident memory, threads,
//! table size and drops; at the end, whether memory and threads held steady and what every lost
//! echo is explained by. `cargo bench --bench soak`.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use vswitch_core::MacAddr;
use vswitch_datapath::{Capture, Direction, Hook, MemoryPort, SwitchConfig};
use vswitch_testkit::{Attach, EchoOptions, SwitchLab, ping_with, tcp_transfer};

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if !vswitch_testkit::is_root() {
        eprintln!("soak skipped: needs root (namespaces, TAPs)");
        return;
    }
    let seconds: u64 = std::env::var("VSWITCH_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let config = SwitchConfig {
        threads: 2,
        ..SwitchConfig::default()
    };
    let lab = SwitchLab::new(3, config, Attach::Tap { offload: true }).expect("lab");
    let (a, b, c) = (&lab.hosts[0], &lab.hosts[1], &lab.hosts[2]);
    let stop = AtomicBool::new(false);
    let transfers = AtomicU64::new(0);
    let bad_transfers = AtomicU64::new(0);
    let churned = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let port_b = lab.switch.ports()[1].name().to_owned();
    let mut samples = Vec::new();
    let echo = std::thread::scope(|s| {
        // TCP a -> b, 8 MiB at a time, hashed.
        s.spawn(|| {
            let mut port = 6000;
            while !stop.load(Relaxed) {
                port = if port > 6900 { 6000 } else { port + 1 };
                match tcp_transfer(&a.ns, &b.ns, b.addr, port, 8 << 20) {
                    Ok(t) if t.received_digest == t.sent_digest => transfers.fetch_add(1, Relaxed),
                    _ => bad_transfers.fetch_add(1, Relaxed),
                };
            }
        });
        // A UDP flood c -> b in bursts (b doesn't read it: the socket drops, as a wire would).
        s.spawn(|| {
            let sock =
                c.ns.run(|| UdpSocket::bind((c.addr, 0)))
                    .expect("enter")
                    .expect("bind");
            while !stop.load(Relaxed) {
                for _ in 0..2000 {
                    let _ = sock.send_to(&[0u8; 64], (b.addr, 9));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // Random source MACs from an in-memory port, added and removed every few seconds.
        s.spawn(|| {
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut round = 0u64;
            while !stop.load(Relaxed) {
                round += 1;
                let name = format!("churn{round}");
                let (port, peer) = MemoryPort::pair(1500).expect("socketpair");
                lab.switch
                    .add_port(name.clone(), Box::new(port))
                    .expect("add");
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until && !stop.load(Relaxed) {
                    for _ in 0..500 {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let b = state.to_be_bytes();
                        let src = MacAddr([0x02, b[1], b[2], b[3], b[4], b[5]]);
                        let mut f = vec![0xffu8; 6];
                        f.extend_from_slice(&src.0);
                        f.extend_from_slice(&[0x88, 0xb5]);
                        f.resize(60, 0);
                        if peer.send(&f).is_ok() {
                            churned.fetch_add(1, Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                lab.switch.remove_port(&name).expect("del");
            }
        });
        // Pipelines set and cleared, captures started and abandoned, on b's port.
        s.spawn(|| {
            while !stop.load(Relaxed) {
                let _ = lab.switch.set_pipeline(
                    &port_b,
                    Hook::Egress,
                    "filter count proto tcp; impair delay 1ms; rate 5gbit",
                );
                std::thread::sleep(Duration::from_millis(500));
                let _ = lab.switch.clear_pipeline(&port_b, Hook::Egress);
                if let Some(port) = lab.switch.port(&port_b)
                    && let Ok(capture) = Capture::start(port, Direction::Both, 4096)
                {
                    lab.switch.captures_changed();
                    std::thread::sleep(Duration::from_millis(300));
                    drop(capture); // never read
                    lab.switch.captures_changed();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        // Sampling.
        s.spawn(|| {
            let start = Instant::now();
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_secs(10).min(
                    deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1),
                ));
                let (entries, _) = lab.switch.table_size();
                let drops: u64 = lab
                    .switch
                    .ports()
                    .iter()
                    .map(|p| p.counters().snapshot().total_drops())
                    .sum();
                let line = format!(
                    "{:>5} s  rss {:>7} kB  threads {:>3}  macs {:>6}  transfers {:>4} (bad {})  churned {:>8}  drops {}",
                    start.elapsed().as_secs(),
                    status("VmRSS:"),
                    status("Threads:"),
                    entries,
                    transfers.load(Relaxed),
                    bad_transfers.load(Relaxed),
                    churned.load(Relaxed),
                    drops
                );
                println!("{line}");
                samples.push((status("VmRSS:"), status("Threads:")));
            }
            stop.store(true, Relaxed);
        });
        // Echoes a -> b all along, counted exactly.
        let mut total = (0u64, 0u64, 0u64);
        while !stop.load(Relaxed) {
            let r = ping_with(
                &a.ns,
                b.addr,
                EchoOptions {
                    count: 500,
                    interval: Duration::from_millis(5),
                    timeout: Duration::from_secs(2),
                    ..EchoOptions::default()
                },
            );
            total.0 += u64::from(r.sent);
            total.1 += u64::from(r.received);
            total.2 += u64::from(r.duplicates);
        }
        total
    });
    let half = samples.len() / 2;
    let (rss, threads): (Vec<u64>, Vec<u64>) = samples.iter().copied().unzip();
    let steady = |v: &[u64]| {
        let (first, second) = v.split_at(half.max(1).min(v.len()));
        let max = |x: &[u64]| x.iter().copied().max().unwrap_or(0);
        (max(first), max(second))
    };
    let b_stats = lab.port_stats(1);
    println!(
        "\nafter {seconds} s: resident memory max {} kB in the first half, {} kB in the second; threads max {} and {}",
        steady(&rss).0,
        steady(&rss).1,
        steady(&threads).0,
        steady(&threads).1
    );
    println!(
        "TCP transfers: {} whole, {} failed; MACs churned: {}; echoes: {} sent, {} answered, {} duplicates",
        transfers.load(Relaxed),
        bad_transfers.load(Relaxed),
        churned.load(Relaxed),
        echo.0,
        echo.1,
        echo.2
    );
    println!(
        "b's port: tx {} frames; drops {:?}; kernel drops {}",
        b_stats.tx_packets,
        vswitch_core::DropReason::ALL
            .iter()
            .filter(|r| b_stats.drops(**r) > 0)
            .map(|r| (r.name(), b_stats.drops(*r)))
            .collect::<Vec<_>>(),
        b_stats.kernel_drops
    );
}
