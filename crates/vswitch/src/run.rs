//! `vswitch --ports ...`: resolve the flags and config file into [`Settings`], run the switch
//! until a signal, report.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use vswitch_core::{ForwardingConfig, MacAddr, TableConfig};
use vswitch_datapath::{MacvlanConfig, PortSpec, SwitchConfig};

use crate::cli::SwitchArgs;
use crate::metrics::MetricsServer;
use crate::report;
use crate::settings::{PortPlan, Settings};

/// Parses and checks the port list before anything is created, so a bad list leaves nothing
/// behind.
pub fn parse_ports(args: &SwitchArgs) -> Result<PortPlan> {
    let mut seen = std::collections::HashSet::new();
    let mut plan = PortPlan::default();
    let vxlan: Vec<String> = args.vxlan.iter().map(|v| format!("vxlan:{v}")).collect();
    for (i, spec) in args
        .uplink
        .iter()
        .chain(&args.ports)
        .chain(&vxlan)
        .enumerate()
    {
        let (spec, macs) = match spec.split_once('=') {
            // A VXLAN spec's parameters are KEY=VALUE, a TUN's addresses follow `=`: neither
            // are MAC bindings.
            Some(_) if spec.starts_with("vxlan:") || spec.starts_with("tun:") => {
                (spec.as_str(), None)
            }
            Some((spec, macs)) => (spec, Some(macs)),
            None => (spec.as_str(), None),
        };
        let port: PortSpec = spec.parse().with_context(|| format!("bad port {spec:?}"))?;
        if !seen.insert(port.name().to_owned()) {
            bail!("port {} is given twice", port.name());
        }
        if let Some(macs) = macs {
            if args.macvlan.is_none() {
                bail!("port {spec}: MAC bindings (NAME=MAC) need --macvlan");
            }
            if i == 0 && args.uplink.is_some() {
                bail!("the uplink can't have MAC bindings");
            }
            let macs = macs
                .split('+')
                .map(|m| m.parse::<MacAddr>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("port {spec}"))?;
            plan.bindings.push((port.name().to_owned(), macs));
        }
        plan.specs.push(port);
    }
    Ok(plan)
}

/// `--vlan PORT=MODE` values, checked: a mode that parses, and one mode per port.
pub fn parse_vlans(specs: &[String]) -> Result<Vec<(String, vswitch_core::VlanMode)>> {
    let mut modes: Vec<(String, vswitch_core::VlanMode)> = Vec::new();
    for spec in specs {
        let (port, mode) = spec
            .split_once('=')
            .with_context(|| format!("--vlan {spec:?}: say PORT=MODE, e.g. 'tap1=access 10'"))?;
        let mode: vswitch_core::VlanMode = mode
            .parse()
            .map_err(|e| anyhow::anyhow!("--vlan: port {port}: {e}"))?;
        if let Some((_, first)) = modes.iter().find(|(p, _)| p == port) {
            bail!("--vlan: port {port} is given two VLAN modes ({first}; {mode}): give it one");
        }
        modes.push((port.to_owned(), mode));
    }
    Ok(modes)
}

/// `--port-flag PORT=FLAG on|off ...` values, checked: (port, flag, value) in order.
pub fn parse_port_flags(specs: &[String]) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for spec in specs {
        let (port, words) = spec.split_once('=').with_context(|| {
            format!("--port-flag {spec:?}: say PORT=FLAG on|off, e.g. 'tap1=isolated on'")
        })?;
        let words: Vec<&str> = words.split_whitespace().collect();
        if words.is_empty() || !words.len().is_multiple_of(2) {
            bail!(
                "--port-flag: port {port}: say FLAG on|off pairs, e.g. 'isolated on learning off'"
            );
        }
        let mut check = vswitch_core::PortFlags::default();
        for pair in words.chunks(2) {
            check
                .set(pair[0], pair[1])
                .map_err(|e| anyhow::anyhow!("--port-flag: port {port}: {e}"))?;
            out.push((port.to_owned(), pair[0].to_owned(), pair[1].to_owned()));
        }
    }
    Ok(out)
}

/// Switch configuration from the command line.
fn switch_config(args: &SwitchArgs) -> SwitchConfig {
    let defaults = SwitchConfig::default();
    SwitchConfig {
        threads: args.threads.map_or(defaults.threads, usize::from),
        table: TableConfig {
            capacity: args.max_macs,
            per_port_limit: args.max_macs_per_port,
            ageing_time: Duration::from_secs(args.ageing_time),
        },
        forwarding: ForwardingConfig {
            link_local_mask: args.forward_link_local,
        },
        busy_poll: Duration::from_micros(args.busy_poll),
        steering: args.steering,
        datapath: args.datapath,
        macvlan: None,
    }
}

/// The flags, with the config file (if `--config`) filling what the command line left at its
/// default, resolved into one switch's settings and checked: a bad port, mode, flag or pipeline
/// is refused here, before anything is made.
pub fn resolve(args: SwitchArgs, matches: &clap::ArgMatches) -> Result<Settings> {
    let config = args
        .config
        .as_deref()
        .map(crate::config::Config::load)
        .transpose()?;
    resolve_with(args, config.as_ref(), matches)
}

/// [`resolve`] with the config file already read (`config check` reads it alone).
pub fn resolve_with(
    mut args: SwitchArgs,
    config: Option<&crate::config::Config>,
    matches: &clap::ArgMatches,
) -> Result<Settings> {
    if let Some(config) = config {
        config.check_ports()?;
        config.apply(&mut args, matches)?;
    }
    let plan = parse_ports(&args)?;
    let vlans = parse_vlans(&args.vlan)?;
    let flags = parse_port_flags(&args.port_flag)?;
    for port in vlans
        .iter()
        .map(|(p, _)| p)
        .chain(flags.iter().map(|(p, _, _)| p))
    {
        if !plan.specs.iter().any(|s| s.name() == port) {
            bail!("no port {port} (--vlan and --port-flag name ports of --ports)");
        }
    }
    let mut pipelines = Vec::new();
    for spec in &args.pipeline {
        let (port, rest) = spec
            .split_once(':')
            .context("--pipeline wants PORT:in|out:STAGES")?;
        let (hook, stages) = rest
            .split_once(':')
            .context("--pipeline wants PORT:in|out:STAGES")?;
        let hook: vswitch_datapath::Hook =
            hook.parse().with_context(|| format!("--pipeline {spec}"))?;
        let stages = crate::client::absolute_mirror_paths(stages)?;
        pipelines.push((port.to_owned(), hook, stages));
    }
    let mut config = switch_config(&args);
    if let (Some(mode), Some(uplink)) = (args.macvlan, &plan.specs.first()) {
        config.macvlan = Some(MacvlanConfig {
            mode,
            uplink: uplink.name().to_owned(),
            bindings: plan.bindings.clone(),
            allow_spoofing: args.allow_spoofing.clone(),
        });
    }
    let mut settings = Settings::new(args.name, config, !args.no_offload);
    settings.ports = plan;
    settings.addresses = args.address;
    settings.pipelines = pipelines;
    settings.vlans = vlans;
    settings.flags = flags;
    settings.metrics = args.metrics;
    Ok(settings)
}

/// Runs the switch in the foreground until SIGINT or SIGTERM.
pub fn run(settings: Settings) -> Result<()> {
    // Before anything is made or any thread started: every thread has only what it needs.
    crate::privileges::restrict_to(&crate::privileges::switch_needs(
        settings.metrics.map(|m| m.port()),
    ))?;
    // Taken before any port is opened, so a refused start leaves nothing behind.
    let name_lock = crate::control::NameLock::acquire(&settings.name)?;
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGUSR1]).context("couldn't install signal handlers")?;
    let names: Vec<String> = settings
        .ports
        .specs
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    let metrics_addr = settings.metrics;
    let (switch, control) = settings.start(name_lock)?;
    let metrics = metrics_addr
        .map(|addr| MetricsServer::start(addr, switch.clone()))
        .transpose()?;
    outln!(
        "vswitch: switching among {}; Ctrl-C to stop, SIGUSR1 for counters",
        names.join(", ")
    );
    let fast = switch.fast_path_ports();
    if !fast.is_empty() {
        outln!(
            "vswitch: known unicast among {} is forwarded in the kernel ({} at tc ingress; --datapath userspace to turn it off)",
            fast.join(", "),
            switch.fast_path_attachment().unwrap_or("-")
        );
    }
    for signal in signals.forever() {
        if signal == SIGUSR1 {
            out!("{}", report::render(&switch.stats()));
            continue;
        }
        tracing::info!(signal, "stopping");
        break;
    }
    drop(metrics);
    drop(control);
    switch.stop();
    out!("{}", report::render(&switch.stats()));
    drop(switch);
    Ok(())
}
