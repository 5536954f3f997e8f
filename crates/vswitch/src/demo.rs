//! `vswitch demo`: two namespaces joined by the switch over TAPs, a ping each way, counters,
//! and everything removed again — the quickest proof that the switch works on this machine.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use vswitch_datapath::{PortSpec, Switch, SwitchConfig};
use vswitch_netns::{EchoOptions, Netlink, NetnsGuard, Pinger};

use crate::cli::DemoArgs;
use crate::report;
use crate::settings::open_ports;

/// Runs the demo; every namespace and TAP it made is gone when it returns, error or not.
pub fn run(args: &DemoArgs) -> Result<()> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Keep running on Ctrl-C so the guards below can clean up; the probes stop by themselves.
        signal_hook::flag::register(signal, interrupted.clone())
            .context("couldn't install signal handlers")?;
    }
    let pid = std::process::id();
    let hosts = [
        (
            format!("vsdemo{pid}-h1"),
            format!("vsd{pid}a"),
            Ipv4Addr::new(10, 0, 1, 1),
        ),
        (
            format!("vsdemo{pid}-h2"),
            format!("vsd{pid}b"),
            Ipv4Addr::new(10, 0, 1, 2),
        ),
    ];
    let taps: Vec<String> = hosts.iter().map(|(_, tap, _)| tap.clone()).collect();
    outln!(
        "demo: creating TAPs {} and namespaces {}, {}",
        taps.join(", "),
        hosts[0].0,
        hosts[1].0
    );
    let specs: Vec<PortSpec> = taps
        .iter()
        .map(|t| PortSpec::Tap(vswitch_datapath::TapSpec::named(t)))
        .collect();
    let ports = open_ports(&specs, true, &SwitchConfig::default())?;
    let switch =
        Switch::start(SwitchConfig::default(), ports).context("couldn't start the switch")?;

    let mut namespaces = Vec::new();
    let mut netlink = Netlink::open()?;
    for (ns_name, tap, addr) in &hosts {
        let ns = NetnsGuard::create(ns_name)?;
        netlink
            .move_to(tap, &ns)
            .with_context(|| format!("moving {tap} into {ns_name}"))?;
        ns.run(|| -> Result<()> {
            let mut nl = Netlink::open()?;
            nl.add_address(tap, IpAddr::V4(*addr), 24)?;
            nl.set_up(tap)?;
            // It sends once the kernel has started its queue; a first probe before is lost.
            nl.wait_running(tap, std::time::Duration::from_secs(5))?;
            Ok(())
        })??;
        outln!("demo: {ns_name}: {tap} = {addr}/24");
        namespaces.push(ns);
    }

    let mut failures = 0;
    for (from, to) in [(0, 1), (1, 0)] {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let target = hosts[to].2;
        outln!(
            "demo: from {} ping {target} ({} probes, our own ICMP client)",
            hosts[from].0,
            args.count
        );
        let mut pinger = Pinger::open_in(&namespaces[from], IpAddr::V4(target))?
            .context("couldn't open an ICMP socket")?;
        let report = pinger.run(&EchoOptions {
            count: args.count,
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
            ..EchoOptions::default()
        })?;
        outln!("demo: {report}");
        if !report.all_replied() {
            failures += 1;
        }
    }
    switch.stop();
    out!("{}", report::render(&switch.stats()));
    drop(switch);
    drop(namespaces);
    outln!("demo: removed the namespaces and TAPs");
    if failures > 0 {
        bail!("{failures} of 2 ping runs lost replies");
    }
    outln!("demo: OK, the two namespaces reached each other through vswitch");
    Ok(())
}
