//! `vswitch --ports ...`: open the ports, run the switch until a signal, report.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use vswitch_core::{ForwardingConfig, TableConfig};
use vswitch_datapath::{PortDevice, PortSpec, Switch, SwitchConfig};

use crate::cli::SwitchArgs;
use crate::report;

/// Parses and checks the port list before anything is created, so a bad list leaves nothing
/// behind.
pub fn parse_ports(specs: &[String]) -> Result<Vec<PortSpec>> {
    let mut seen = std::collections::HashSet::new();
    let mut ports = Vec::new();
    for spec in specs {
        let port: PortSpec = spec.parse().with_context(|| format!("bad port {spec:?}"))?;
        if !seen.insert(port.name().to_owned()) {
            bail!("port {} is given twice", port.name());
        }
        ports.push(port);
    }
    Ok(ports)
}

/// Switch configuration from the command line.
pub fn switch_config(args: &SwitchArgs) -> SwitchConfig {
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
    }
}

/// Opens every port or none: on an error the ones already opened are closed (TAPs the switch
/// created are removed with them).
pub fn open_ports(specs: &[PortSpec], offload: bool) -> Result<Vec<(String, Box<dyn PortDevice>)>> {
    let mut ports: Vec<(String, Box<dyn PortDevice>)> = Vec::new();
    for spec in specs {
        let device = spec.open(offload)?;
        tracing::info!(
            port = spec.name(),
            kind = device.kind(),
            offload = device.vnet_header(),
            "attached"
        );
        ports.push((spec.name().to_owned(), device));
    }
    Ok(ports)
}

/// Runs the switch in the foreground until SIGINT or SIGTERM.
pub fn run(args: &SwitchArgs) -> Result<()> {
    let specs = parse_ports(&args.ports)?;
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGUSR1]).context("couldn't install signal handlers")?;
    let ports = open_ports(&specs, !args.no_offload)?;
    let mut switch =
        Switch::start(switch_config(args), ports).context("couldn't start the switch")?;
    println!(
        "vswitch: switching among {}; Ctrl-C to stop, SIGUSR1 for counters",
        args.ports.join(", ")
    );
    for signal in signals.forever() {
        if signal == SIGUSR1 {
            print!("{}", report::render(&switch));
            continue;
        }
        tracing::info!(signal, "stopping");
        break;
    }
    switch.stop();
    print!("{}", report::render(&switch));
    drop(switch);
    Ok(())
}
