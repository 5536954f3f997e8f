//! `vswitch lab check`: every host pings every other host and every switch address (the first
//! IPv4 and the first IPv6 address of each), with our own ICMP client, one thread per host,
//! all at once.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{Context, Result};
use serde::Serialize;
use vswitch_netns::{EchoOptions, Netns, Pinger};

use super::state::LabState;
use super::up::probe_addresses;

/// One ordered pair's result.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub from: String,
    pub to: String,
    pub address: IpAddr,
    /// Round-trip time in milliseconds, or `None` when no reply came.
    pub rtt_ms: Option<f64>,
}

/// All pairs of a lab.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub lab: String,
    pub pairs: Vec<Pair>,
    /// Columns in order: hosts, then switches with an address.
    #[serde(skip)]
    targets: Vec<String>,
    #[serde(skip)]
    sources: Vec<String>,
}

/// Pings every target from every host.
pub fn run(lab: &LabState) -> Result<CheckResult> {
    let targets: Vec<(String, IpAddr)> = lab
        .hosts
        .iter()
        .map(|h| (&h.name, &h.addresses))
        .chain(lab.switches.iter().map(|s| (&s.name, &s.addresses)))
        .flat_map(|(n, addrs)| {
            probe_addresses(addrs)
                .into_iter()
                .map(move |a| (n.clone(), a))
        })
        .collect();
    let results: Vec<Result<Vec<Pair>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = lab
            .hosts
            .iter()
            .map(|from| {
                let targets = &targets;
                scope.spawn(move || -> Result<Vec<Pair>> {
                    let ns = Netns::open(&from.netns)?;
                    let mut pairs = Vec::new();
                    for (to, address) in targets.iter().filter(|(n, _)| *n != from.name) {
                        let mut pinger = Pinger::open_in(&ns, *address)?
                            .context("couldn't open an ICMP socket")?;
                        let report = pinger.run(&EchoOptions::default())?;
                        pairs.push(Pair {
                            from: from.name.clone(),
                            to: to.clone(),
                            address: *address,
                            rtt_ms: report
                                .median_rtt()
                                .filter(|_| report.all_replied())
                                .map(|d| d.as_secs_f64() * 1e3),
                        });
                    }
                    Ok(pairs)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut pairs = Vec::new();
    for r in results {
        pairs.extend(r?);
    }
    Ok(CheckResult {
        lab: lab.name.clone(),
        pairs,
        targets: {
            let mut names: Vec<String> = targets.into_iter().map(|(n, _)| n).collect();
            names.dedup();
            names
        },
        sources: lab.hosts.iter().map(|h| h.name.clone()).collect(),
    })
}

impl CheckResult {
    /// Pairs without a reply.
    pub fn failures(&self) -> usize {
        self.pairs.iter().filter(|p| p.rtt_ms.is_none()).count()
    }

    /// A from × to matrix: RTT in ms (of the first address probed), `x` when any address of
    /// the target went unanswered, `-` for self.
    pub fn matrix(&self) -> String {
        let width = self
            .targets
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(8)
            + 1;
        let mut out = String::new();
        let _ = write!(out, "{:<width$}", "from\\to");
        for t in &self.targets {
            let _ = write!(out, "{t:>width$}");
        }
        out.push('\n');
        for from in &self.sources {
            let _ = write!(out, "{from:<width$}");
            for to in &self.targets {
                let probes: Vec<&Pair> = self
                    .pairs
                    .iter()
                    .filter(|p| p.from == *from && p.to == *to)
                    .collect();
                let cell = match probes.first() {
                    None => "-".to_owned(),
                    Some(_) if probes.iter().any(|p| p.rtt_ms.is_none()) => "x".to_owned(),
                    Some(p) => format!("{:.3}ms", p.rtt_ms.unwrap_or_default()),
                };
                let _ = write!(out, "{cell:>width$}");
            }
            out.push('\n');
        }
        out
    }
}
