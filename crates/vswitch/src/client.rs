//! Subcommands that talk to a running switch over its control socket: fdb, stats, port.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::{
    CaptureArgs, FdbCommand, MacvlanCommand, PipelineCommand, PortCommand, StatsArgs, VlanCommand,
};
use crate::control::{Request, call, open};

/// Runs an `fdb` subcommand.
pub fn fdb(cmd: &FdbCommand) -> Result<()> {
    match cmd {
        FdbCommand::Show { name, json } => {
            let rows = call(name, Request::FdbShow)?;
            if *json {
                outln!("{rows}");
                return Ok(());
            }
            outln!(
                "{:<19} {:>4}  {:<15} {:<8} {:>8}",
                "MAC",
                "VLAN",
                "PORT",
                "TYPE",
                "AGE"
            );
            for row in rows.as_array().into_iter().flatten() {
                let age = match row["age_ms"].as_u64() {
                    Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
                    None => "-".into(),
                };
                outln!(
                    "{:<19} {:>4}  {:<15} {:<8} {:>8}",
                    row["mac"].as_str().unwrap_or("?"),
                    row["vlan"].as_u64().unwrap_or(0),
                    row["port"].as_str().unwrap_or("?"),
                    if row["static"].as_bool() == Some(true) {
                        "static"
                    } else {
                        "dynamic"
                    },
                    age
                );
            }
        }
        FdbCommand::Add {
            mac,
            port,
            dst,
            name,
        } => {
            call(
                name,
                Request::FdbAdd {
                    mac: *mac,
                    port: port.clone(),
                    dst: *dst,
                },
            )?;
        }
        FdbCommand::Del { mac, name } => {
            call(name, Request::FdbDel { mac: *mac })?;
        }
        FdbCommand::Flush { port, name } => {
            let result = call(name, Request::FdbFlush { port: port.clone() })?;
            outln!("flushed {} entries", result["flushed"]);
        }
    }
    Ok(())
}

/// Runs a `port` subcommand.
pub fn port(cmd: &PortCommand) -> Result<()> {
    match cmd {
        PortCommand::Add { spec, name } => {
            call(name, Request::PortAdd { spec: spec.clone() })?;
        }
        PortCommand::Del { port, name } => {
            call(name, Request::PortDel { port: port.clone() })?;
        }
        PortCommand::Set {
            port,
            flag,
            value,
            name,
        } => {
            call(
                name,
                Request::PortSet {
                    port: port.clone(),
                    flag: flag.clone(),
                    value: value.clone(),
                },
            )?;
        }
    }
    Ok(())
}

/// Runs a `macvlan` subcommand.
pub fn macvlan(cmd: &MacvlanCommand) -> Result<()> {
    match cmd {
        MacvlanCommand::Bind { port, mac, name } => {
            call(
                name,
                Request::MacvlanBind {
                    port: port.clone(),
                    mac: *mac,
                },
            )?;
        }
        MacvlanCommand::Unbind { port, mac, name } => {
            call(
                name,
                Request::MacvlanUnbind {
                    port: port.clone(),
                    mac: *mac,
                },
            )?;
        }
        MacvlanCommand::Show { json, name } => {
            let result = call(name, Request::MacvlanShow)?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                outln!("{:<18} PORT", "MAC");
                for row in result.as_array().into_iter().flatten() {
                    outln!(
                        "{:<18} {}",
                        row["mac"].as_str().unwrap_or("?"),
                        row["port"].as_str().unwrap_or("?")
                    );
                }
            }
        }
    }
    Ok(())
}

/// Runs a `vlan` subcommand.
pub fn vlan(cmd: &VlanCommand) -> Result<()> {
    match cmd {
        VlanCommand::Set { port, mode, name } => {
            call(
                name,
                Request::VlanSet {
                    port: port.clone(),
                    mode: mode.join(" "),
                },
            )?;
        }
        VlanCommand::Add { port, vids, name } => {
            call(
                name,
                Request::VlanAdd {
                    port: port.clone(),
                    vids: vids.clone(),
                },
            )?;
        }
        VlanCommand::Del { port, vids, name } => {
            call(
                name,
                Request::VlanDel {
                    port: port.clone(),
                    vids: vids.clone(),
                },
            )?;
        }
        VlanCommand::Show { json, name } => {
            let result = call(name, Request::VlanShow)?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                outln!("{:<15} {:<30} FLAGS", "PORT", "VLAN");
                for row in result["ports"].as_array().into_iter().flatten() {
                    outln!(
                        "{:<15} {:<30} {}",
                        row["port"].as_str().unwrap_or("?"),
                        row["vlan"].as_str().unwrap_or("?"),
                        row["flags"].as_str().unwrap_or("?")
                    );
                }
                if let Some(drops) = result["drops_by_vid"].as_object()
                    && !drops.is_empty()
                {
                    let list: Vec<String> = drops
                        .iter()
                        .map(|(vid, n)| match vid.as_str() {
                            "0" => format!("untagged {n}"),
                            vid => format!("vid {vid} {n}"),
                        })
                        .collect();
                    outln!("dropped by VLAN membership: {}", list.join(", "));
                }
            }
        }
    }
    Ok(())
}

/// Runs a `pipeline` subcommand.
pub fn pipeline(cmd: &PipelineCommand) -> Result<()> {
    match cmd {
        PipelineCommand::Show { port, name } => {
            let result = call(name, Request::PipelineShow { port: port.clone() })?;
            for hook in ["in", "out"] {
                let stages = result[hook].as_array().cloned().unwrap_or_default();
                outln!(
                    "{port} {hook}:{}",
                    if stages.is_empty() { " (none)" } else { "" }
                );
                for stage in stages {
                    for line in stage.as_str().unwrap_or("").lines() {
                        outln!("  {line}");
                    }
                }
            }
        }
        PipelineCommand::Set {
            port,
            hook,
            stages,
            name,
        } => {
            call(
                name,
                Request::PipelineSet {
                    port: port.clone(),
                    hook: hook.parse()?,
                    stages: absolute_mirror_paths(stages)?,
                },
            )?;
        }
        PipelineCommand::Clear { port, hook, name } => {
            call(
                name,
                Request::PipelineClear {
                    port: port.clone(),
                    hook: hook.as_deref().map(str::parse).transpose()?,
                },
            )?;
        }
    }
    Ok(())
}

/// `stages` with every `mirror file PATH` made absolute against this process's working
/// directory: the switch creates mirror files only at absolute paths (its own working directory
/// is not the user's).
pub fn absolute_mirror_paths(stages: &str) -> Result<String> {
    stages
        .split(';')
        .map(|stage| {
            let words: Vec<&str> = stage.split_whitespace().collect();
            match words.as_slice() {
                ["mirror", "file", path] if !std::path::Path::new(path).is_absolute() => {
                    let absolute = std::path::absolute(path)
                        .with_context(|| format!("resolving mirror file {path}"))?;
                    Ok(format!(" mirror file {}", absolute.display()))
                }
                _ => Ok(stage.to_owned()),
            }
        })
        .collect::<Result<Vec<_>>>()
        .map(|stages| stages.join(";"))
}

/// `capture`: the port's frames as pcap, to a file or standard output.
pub fn capture(args: &CaptureArgs) -> Result<()> {
    let (_, mut stream) = open(
        &args.name,
        Request::Capture {
            port: args.port.clone(),
            count: args.count,
            direction: args.direction.parse()?,
        },
    )?;
    stream.get_ref().set_read_timeout(None)?;
    // `-w -` is standard output, as with tcpdump: `vswitch capture tap1 -w - | wireshark -k -i -`.
    let file = args.write.as_ref().filter(|p| p.as_os_str() != "-");
    let mut out: Box<dyn std::io::Write> = match file {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    // The switch accepted: from here on every frame of the port is offered to us.
    eprintln!(
        "capture: listening on {} ({}), {} frames",
        args.port,
        args.direction,
        args.count.map_or("all".to_owned(), |c| c.to_string())
    );
    let bytes = std::io::copy(&mut stream, &mut out).context("writing the capture")?;
    out.flush()?;
    if let Some(path) = file {
        eprintln!("capture: wrote {bytes} bytes to {}", path.display());
    }
    Ok(())
}

/// `stats`: a table of counters, once or every second with rates.
pub fn stats(args: &StatsArgs) -> Result<()> {
    let mut previous: Option<(Instant, Value)> = None;
    loop {
        let now = Instant::now();
        let stats = call(&args.name, Request::Stats)?;
        if args.json {
            outln!("{stats}");
        } else {
            if args.watch {
                out!("\x1b[2J\x1b[H"); // clear the screen
            }
            out!(
                "{}",
                render(
                    &stats,
                    previous.as_ref().map(|(t, v)| (now.duration_since(*t), v))
                )
            );
        }
        if !args.watch {
            return Ok(());
        }
        previous = Some((now, stats));
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn render(stats: &Value, previous: Option<(Duration, &Value)>) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<15} {:<5} {:>12} {:>15} {:>12} {:>15} {:>10} {:>12}",
        "PORT", "STATE", "RX-PKTS", "RX-BYTES", "TX-PKTS", "TX-BYTES", "DROPS", "KERNEL-DROPS"
    );
    if previous.is_some() {
        let _ = write!(
            out,
            " {:>10} {:>10} {:>10} {:>10}",
            "RX-PPS", "RX-MBIT/S", "TX-PPS", "TX-MBIT/S"
        );
    }
    out.push('\n');
    for port in stats["ports"].as_array().into_iter().flatten() {
        let n = |k: &str| port[k].as_u64().unwrap_or(0);
        let drops: u64 = port["drops"]
            .as_object()
            .map_or(0, |d| d.values().filter_map(Value::as_u64).sum());
        let _ = write!(
            out,
            "{:<15} {:<5} {:>12} {:>15} {:>12} {:>15} {:>10} {:>12}",
            port["name"].as_str().unwrap_or("?"),
            port["state"].as_str().unwrap_or("?"),
            n("rx_packets"),
            n("rx_bytes"),
            n("tx_packets"),
            n("tx_bytes"),
            drops,
            n("kernel_drops")
        );
        if let Some((elapsed, prev)) = previous {
            let before = prev["ports"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == port["name"]));
            let rate = |k: &str| {
                let b = before.and_then(|p| p[k].as_u64()).unwrap_or(0);
                n(k).saturating_sub(b) as f64 / elapsed.as_secs_f64().max(0.001)
            };
            let _ = write!(
                out,
                " {:>10.0} {:>10.1} {:>10.0} {:>10.1}",
                rate("rx_packets"),
                rate("rx_bytes") * 8.0 / 1e6,
                rate("tx_packets"),
                rate("tx_bytes") * 8.0 / 1e6
            );
        }
        out.push('\n');
        if let Some(reasons) = port["drops"].as_object() {
            let nonzero: Vec<String> = reasons
                .iter()
                .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !nonzero.is_empty() {
                let _ = writeln!(out, "{:<15} drops: {}", "", nonzero.join(" "));
            }
        }
        if port["fast_path"].as_bool() == Some(true) {
            let _ = writeln!(
                out,
                "{:<15} in-kernel fast path: {} of the received and {} of the sent frames",
                "",
                n("fast_path_rx_packets"),
                n("fast_path_tx_packets")
            );
        }
    }
    let t = &stats["table"];
    let _ = writeln!(
        out,
        "mac table: {} of {} entries; learned {}, moved {}, aged {}, evicted {}",
        t["entries"], t["capacity"], t["learned"], t["moved"], t["aged"], t["evicted"]
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_files_become_absolute_and_other_stages_stay() {
        let cwd = std::env::current_dir().expect("cwd");
        let out = absolute_mirror_paths("filter drop proto icmp; mirror file a.pcap").expect("ok");
        assert_eq!(
            out,
            format!(
                "filter drop proto icmp; mirror file {}",
                cwd.join("a.pcap").display()
            )
        );
        let kept = "mirror file /tmp/x.pcap;rate 10mbit";
        assert_eq!(absolute_mirror_paths(kept).expect("ok"), kept);
    }
}
