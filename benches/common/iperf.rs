//! iperf3 and ping helpers shared by the end-to-end benchmarks.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vswitch_netns::Netns;

pub type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

pub fn in_ns(ns: &Netns, cmd: &mut Command) -> BoxResult<std::process::Output> {
    Ok(ns.run(|| cmd.output())??)
}

pub fn iperf_server(ns: &Netns) -> BoxResult<Child> {
    let child = ns.run(|| {
        Command::new("iperf3")
            .args(["-s", "-p", "5299"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    })??;
    std::thread::sleep(Duration::from_millis(300));
    Ok(child)
}

/// Runs an iperf3 client against the server and returns its JSON report. A server still
/// closing the previous test answers "busy" for a moment: wait and try again, a few times.
pub fn iperf_json(client: &Netns, server: Ipv4Addr, args: &[&str], secs: u64) -> BoxResult<Value> {
    let mut attempt = 0;
    loop {
        let out = in_ns(
            client,
            Command::new("iperf3")
                .args([
                    "-c",
                    &server.to_string(),
                    "-p",
                    "5299",
                    "-J",
                    "-t",
                    &secs.to_string(),
                ])
                .args(args),
        )?;
        let json: Value = serde_json::from_slice(&out.stdout)?;
        match json.get("error") {
            None => return Ok(json),
            Some(err) if attempt < 5 && err.to_string().contains("busy") => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            Some(err) => return Err(format!("iperf3: {err}").into()),
        }
    }
}

/// Gbit/s received and bytes moved.
pub fn tcp(client: &Netns, server: Ipv4Addr, streams: u32, secs: u64) -> BoxResult<Tcp> {
    let json = iperf_json(client, server, &["-P", &streams.to_string()], secs)?;
    let sum = &json["end"]["sum_received"];
    Ok(Tcp {
        gbit: sum["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        bytes: sum["bytes"].as_f64().unwrap_or(0.0),
        retransmits: json["end"]["sum_sent"]["retransmits"]
            .as_f64()
            .unwrap_or(f64::NAN),
    })
}

/// One iperf3 TCP run: throughput, bytes received, and segments the senders retransmitted (a
/// switch that drops or reorders shows there first).
pub struct Tcp {
    pub gbit: f64,
    pub bytes: f64,
    pub retransmits: f64,
}

/// 64-byte UDP datagrams: received packets per second and loss percentage.
pub fn udp64(client: &Netns, server: Ipv4Addr, secs: u64) -> BoxResult<(f64, f64)> {
    let json = iperf_json(client, server, &["-u", "-l", "64", "-b", "0"], secs)?;
    let sum = &json["end"]["sum"];
    let packets = sum["packets"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let seconds = sum["seconds"].as_f64().unwrap_or(secs as f64).max(0.001);
    Ok((
        (packets - lost) / seconds,
        sum["lost_percent"].as_f64().unwrap_or(0.0),
    ))
}

/// Ping RTT p50 and p99 in microseconds over 500 echoes 2 ms apart.
pub fn rtt(client: &Netns, server: Ipv4Addr) -> BoxResult<(f64, f64)> {
    let report = vswitch_testkit::ping_with(
        client,
        server,
        vswitch_testkit::EchoOptions {
            count: 500,
            interval: Duration::from_millis(2),
            ..vswitch_testkit::EchoOptions::default()
        },
    );
    let mut samples: Vec<f64> = report.rtts.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    if samples.is_empty() {
        return Err("no ping replies".into());
    }
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Ok((pick(0.5), pick(0.99)))
}

/// The number in environment variable `key`, or `default`.
pub fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
