//! `vswitch lab`: N namespaces joined by one switch in a single command, torn down on Ctrl-C.
//!
//! Host `i` lives in namespace `LAB-hi` and has address `subnet + i`. With `--via tap` each host
//! gets a TAP of the switch (named `LABhi`) moved into its namespace; with `--via veth` a veth
//! pair, `eth0` inside and `LABhi` outside as a `dev:` port of the switch. A state file under
//! `/run/vswitch/labs/` records the hosts so `lab check` and `lab down` find them.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vswitch_datapath::{PortSpec, Switch};
use vswitch_netns::{EchoOptions, LinkGuard, Netlink, Netns, NetnsGuard, Pinger};

use crate::cli::{LabCommand, LabUpArgs, Via};
use crate::control::ControlServer;
use crate::report;
use crate::run::{open_ports, switch_config};

const STATE_DIR: &str = "/run/vswitch/labs";

/// An IPv4 subnet such as 10.0.1.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: Ipv4Addr,
    prefix: u8,
}

impl std::str::FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("{s:?} is not an IPv4 subnet like 10.0.1.0/24");
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("prefix /{prefix} must be between /8 and /30"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet {
            base: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl Subnet {
    /// Host `i` (1-based), if it fits below the broadcast address.
    pub fn host(&self, i: usize) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix);
        (i as u64 + 1 < size).then(|| Ipv4Addr::from(u32::from(self.base) + i as u32))
    }
}

/// One host of a lab.
#[derive(Debug, Clone)]
struct LabHost {
    netns: String,
    addr: Ipv4Addr,
}

fn check_lab_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 10
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        bail!("lab name {name:?} must be 1 to 10 letters, digits or '-' (it prefixes link names)");
    }
    Ok(())
}

fn state_path(name: &str) -> PathBuf {
    PathBuf::from(STATE_DIR).join(name)
}

fn read_state(name: &str) -> Result<Vec<LabHost>> {
    let path = state_path(name);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no lab {name} is running (no {})", path.display()))?;
    text.lines()
        .map(|line| {
            let (netns, addr) = line.split_once(' ').context("corrupt lab state")?;
            Ok(LabHost {
                netns: netns.to_owned(),
                addr: addr.parse().context("corrupt lab state")?,
            })
        })
        .collect()
}

/// Runs a `lab` subcommand.
pub fn run(cmd: &LabCommand) -> Result<()> {
    match cmd {
        LabCommand::Up(args) => up(args),
        LabCommand::Down { name } => down(name),
        LabCommand::Check { name } => {
            check_lab_name(name)?;
            let hosts = read_state(name)?;
            let (matrix, failures) = reachability(&hosts)?;
            out!("{matrix}");
            if failures > 0 {
                bail!("{failures} host pairs can't reach each other");
            }
            Ok(())
        }
    }
}

fn up(args: &LabUpArgs) -> Result<()> {
    check_lab_name(&args.name)?;
    if args.hosts == 0 || args.hosts > 250 {
        bail!("--hosts must be between 1 and 250");
    }
    if state_path(&args.name).exists() {
        bail!(
            "lab {} exists (a running or crashed lab); remove it with `vswitch lab down --name {}`",
            args.name,
            args.name
        );
    }
    let name_lock = crate::control::NameLock::acquire(&args.name)?;
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("couldn't install signal handlers")?;
    let hosts: Vec<LabHost> = (1..=args.hosts)
        .map(|i| {
            let addr = args
                .subnet
                .host(i)
                .with_context(|| format!("{} hosts don't fit in the subnet", args.hosts))?;
            Ok(LabHost {
                netns: format!("{}-h{i}", args.name),
                addr,
            })
        })
        .collect::<Result<_>>()?;
    let links: Vec<String> = (1..=args.hosts)
        .map(|i| format!("{}h{i}", args.name))
        .collect();

    // Guards first: whatever fails below, dropping them removes what was made.
    let mut namespaces = Vec::new();
    for host in &hosts {
        namespaces.push(NetnsGuard::create(&host.netns)?);
    }
    let mut netlink = Netlink::open()?;
    // Outer veth ends are deleted explicitly: a namespace's links go away asynchronously after
    // the namespace, and `lab up` returns only when everything is gone.
    let mut veth_guards = Vec::new();
    let specs: Vec<PortSpec> = match args.via {
        Via::Tap => links.iter().map(|l| PortSpec::Tap(l.clone())).collect(),
        Via::Veth => {
            for (link, ns) in links.iter().zip(&namespaces) {
                netlink.add_veth(link, "eth0", Some(ns))?;
                veth_guards.push(LinkGuard::new(link));
            }
            links.iter().map(|l| PortSpec::Dev(l.clone())).collect()
        }
    };
    let config = switch_config(&args.switch_args());
    let ports = open_ports(&specs, !args.no_offload, &config)?;
    let switch = Arc::new(Switch::start(config, ports).context("couldn't start the switch")?);
    let control = ControlServer::start(name_lock, switch.clone(), true)?;
    for ((host, ns), link) in hosts.iter().zip(&namespaces).zip(&links) {
        let inner = match args.via {
            Via::Tap => {
                netlink.move_to(link, ns)?;
                link.as_str()
            }
            Via::Veth => "eth0",
        };
        ns.run(|| -> Result<()> {
            let mut nl = Netlink::open()?;
            nl.add_address(inner, IpAddr::V4(host.addr), args.subnet.prefix)?;
            nl.set_up(inner)?;
            Ok(())
        })??;
    }
    std::fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
    let state: String = hosts
        .iter()
        .map(|h| format!("{} {}\n", h.netns, h.addr))
        .collect();
    std::fs::write(state_path(&args.name), state).context("writing the lab state")?;

    outln!(
        "lab {}: {} hosts via {:?}, switch ports {}",
        args.name,
        hosts.len(),
        args.via,
        links.join(",")
    );
    for host in &hosts {
        outln!(
            "  {:<16} {}/{}   ip netns exec {} ...",
            host.netns,
            host.addr,
            args.subnet.prefix,
            host.netns
        );
    }
    if args.check {
        let (matrix, failures) = reachability(&hosts)?;
        out!("{matrix}");
        if failures > 0 {
            eprintln!("lab: {failures} host pairs can't reach each other");
        }
    }
    outln!(
        "lab {} is up; `vswitch stats --name {}` shows its counters; Ctrl-C tears it down",
        args.name,
        args.name
    );
    let _ = signals.forever().next();
    drop(control);
    switch.stop();
    out!("{}", report::render(&switch));
    drop(switch);
    drop(veth_guards);
    drop(namespaces);
    let _ = std::fs::remove_file(state_path(&args.name));
    outln!("lab {}: removed", args.name);
    Ok(())
}

/// Removes what a lab left behind: its namespaces (`LAB-h*`), its links (`LABh*`), its state and
/// its control socket.
fn down(name: &str) -> Result<()> {
    check_lab_name(name)?;
    let mut removed = 0;
    // Links first: deleting a veth end removes its pair at once, while a namespace's links
    // disappear asynchronously after it.
    let mut netlink = Netlink::open()?;
    for i in 1..=250 {
        let link = format!("{name}h{i}");
        if netlink.link_exists(&link)? {
            netlink.delete_link(&link)?;
            removed += 1;
        }
    }
    let prefix = format!("{name}-h");
    for ns in Netns::list()? {
        if ns
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.parse::<u32>().is_ok())
        {
            Netns::delete(&ns)?;
            removed += 1;
        }
    }
    let _ = std::fs::remove_file(state_path(name));
    // The crashed switch's control socket, unless a switch of that name is running after all.
    if crate::control::ensure_name_free(name).is_ok() {
        let _ = std::fs::remove_file(crate::control::socket_path(name));
    }
    outln!("lab {name}: removed {removed} namespaces and links");
    Ok(())
}

/// Pings every ordered pair once; returns the matrix (RTT in ms, or `x`) and the failure count.
fn reachability(hosts: &[LabHost]) -> Result<(String, usize)> {
    let mut out = String::new();
    let mut failures = 0;
    let _ = write!(out, "{:<8}", "from\\to");
    for j in 1..=hosts.len() {
        let _ = write!(out, "{:>9}", format!("h{j}"));
    }
    out.push('\n');
    for (i, from) in hosts.iter().enumerate() {
        let ns = Netns::open(&from.netns)?;
        let _ = write!(out, "{:<8}", format!("h{}", i + 1));
        for (j, to) in hosts.iter().enumerate() {
            if i == j {
                let _ = write!(out, "{:>9}", "-");
                continue;
            }
            let mut pinger = Pinger::open_in(&ns, IpAddr::V4(to.addr))?
                .context("couldn't open an ICMP socket")?;
            let report = pinger.run(&EchoOptions::default())?;
            match report.median_rtt().filter(|_| report.all_replied()) {
                Some(rtt) => {
                    let _ = write!(out, "{:>9}", format!("{:.3}ms", rtt.as_secs_f64() * 1e3));
                }
                None => {
                    failures += 1;
                    let _ = write!(out, "{:>9}", "x");
                }
            }
        }
        out.push('\n');
    }
    Ok((out, failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_hosts() {
        let s: Subnet = "10.0.1.77/24".parse().unwrap();
        assert_eq!(s.host(1), Some(Ipv4Addr::new(10, 0, 1, 1)));
        assert_eq!(s.host(254), Some(Ipv4Addr::new(10, 0, 1, 254)));
        assert_eq!(s.host(255), None, "the broadcast address is no host");
        assert!("10.0.1.0".parse::<Subnet>().is_err());
        assert!("10.0.1.0/31".parse::<Subnet>().is_err());
    }

    #[test]
    fn lab_names_fit_link_names() {
        assert!(check_lab_name("lab").is_ok());
        assert!(check_lab_name("a234567890").is_ok());
        assert!(check_lab_name("a2345678901").is_err());
        assert!(check_lab_name("a b").is_err());
    }
}
