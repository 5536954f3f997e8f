//! `vswitch --ports ...`: open the TAPs, run the switch until a signal, report.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use vswitch_core::{ForwardingConfig, TableConfig};
use vswitch_datapath::{PortDevice, Switch, SwitchConfig, Tap, validate_ifname};

use crate::cli::SwitchArgs;
use crate::report;

/// Checks the port list before anything is created, so a bad list leaves nothing behind.
pub fn check_port_names(names: &[String]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        validate_ifname(name).with_context(|| format!("bad port name {name:?}"))?;
        if !seen.insert(name) {
            bail!("port {name} is given twice");
        }
    }
    Ok(())
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
    }
}

/// Opens every TAP or none: on an error the ones already opened are closed (and so removed).
pub fn open_taps(names: &[String], offload: bool) -> Result<Vec<(String, Box<dyn PortDevice>)>> {
    let mut ports: Vec<(String, Box<dyn PortDevice>)> = Vec::new();
    for name in names {
        let tap = Tap::open(name, offload)?;
        tracing::info!(
            port = name,
            offload = tap.offload(),
            "{} TAP",
            if tap.created() {
                "created"
            } else {
                "attached to existing"
            }
        );
        ports.push((name.clone(), Box::new(tap)));
    }
    Ok(ports)
}

/// Runs the switch in the foreground until SIGINT or SIGTERM.
pub fn run(args: &SwitchArgs) -> Result<()> {
    check_port_names(&args.ports)?;
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGUSR1]).context("couldn't install signal handlers")?;
    let ports = open_taps(&args.ports, !args.no_offload)?;
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
