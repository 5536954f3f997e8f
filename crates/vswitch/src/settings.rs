//! What one switch runs with, resolved once and checked before anything is made: `run` makes
//! it from the flags and the config file (`run::resolve`), `lab up` from a topology's switch,
//! and both start the switch from it ([`Settings::start`]). This module knows nothing of
//! where the settings came from.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use vswitch_core::{MacAddr, VlanMode};
use vswitch_datapath::{Hook, PortDevice, PortSpec, Switch, SwitchConfig};

use crate::control::{ControlServer, NameLock};

/// The ports to open, in order (a MACVLAN uplink first), with MACVLAN bindings.
#[derive(Debug, Default, Clone)]
pub struct PortPlan {
    /// Every port.
    pub specs: Vec<PortSpec>,
    /// `NAME=MAC[+MAC...]` bindings.
    pub bindings: Vec<(String, Vec<MacAddr>)>,
}

/// A switch, as it will be started.
#[derive(Debug)]
pub struct Settings {
    /// Its name: the control socket's.
    pub name: String,
    /// The datapath's configuration (MACVLAN included).
    pub config: SwitchConfig,
    /// TAPs and packet sockets with virtio-net headers and offloads.
    pub offload: bool,
    /// The ports.
    pub ports: PortPlan,
    /// The switch's own addresses (a station port `self`), as given.
    pub addresses: Vec<String>,
    /// Pipelines to install at start: (port, hook, stages).
    pub pipelines: Vec<(String, Hook, String)>,
    /// VLAN modes to set at start.
    pub vlans: Vec<(String, VlanMode)>,
    /// Port flags to set at start: (port, flag, value).
    pub flags: Vec<(String, String, String)>,
    /// Where `/metrics` listens.
    pub metrics: Option<SocketAddr>,
}

impl Settings {
    /// Settings with `config` and nothing else: no ports, addresses or policies yet.
    pub fn new(name: String, config: SwitchConfig, offload: bool) -> Settings {
        Settings {
            name,
            config,
            offload,
            ports: PortPlan::default(),
            addresses: Vec::new(),
            pipelines: Vec::new(),
            vlans: Vec::new(),
            flags: Vec::new(),
            metrics: None,
        }
    }

    /// Opens every port (and the station, with addresses), starts the switch, installs the
    /// start-time pipelines, VLAN modes and flags, and serves its control socket under `lock`.
    /// On an error, what was opened is closed again (TAPs the switch created are removed).
    pub fn start(self, lock: NameLock) -> Result<(Arc<Switch>, ControlServer)> {
        let mut ports = open_ports(&self.ports.specs, self.offload, &self.config)?;
        if !self.addresses.is_empty() {
            ports.push(("self".to_owned(), station(&self.name, &self.addresses)?));
        }
        let switch = Arc::new(
            Switch::start(self.config, ports)
                .with_context(|| format!("couldn't start switch {}", self.name))?,
        );
        for (port, hook, stages) in &self.pipelines {
            switch
                .set_pipeline(port, *hook, stages)
                .with_context(|| format!("--pipeline {port}:{hook}:{stages}"))?;
        }
        for (port, mode) in self.vlans {
            switch
                .set_vlan(&port, mode)
                .with_context(|| format!("--vlan: port {port}"))?;
        }
        for (port, flag, value) in &self.flags {
            switch
                .set_port_flag(port, flag, value)
                .with_context(|| format!("--port-flag: port {port}"))?;
        }
        let control = ControlServer::start(lock, switch.clone(), self.offload)?;
        Ok((switch, control))
    }
}

/// The switch's own station port for its addresses (a MAC derived from the switch's name).
fn station(name: &str, addresses: &[String]) -> Result<Box<dyn PortDevice>> {
    let mut parsed = Vec::new();
    for a in addresses {
        let config = vswitch_datapath::TunConfig::parse(&format!("self={a}"))
            .map_err(|e| anyhow::anyhow!("--address {a}: {}", e.trim_start_matches("tun: ")))?;
        parsed.extend(config.addresses);
    }
    let mac = vswitch_datapath::local_mac(&format!("{name} self"));
    Ok(Box::new(
        vswitch_datapath::StationPort::new(mac, parsed).context("the switch's own address")?,
    ))
}

/// Opens every port or none: on an error the ones already opened are closed (TAPs the switch
/// created are removed with them). Ports get a receive queue per worker of `config`.
pub fn open_ports(
    specs: &[PortSpec],
    offload: bool,
    config: &SwitchConfig,
) -> Result<Vec<(String, Box<dyn PortDevice>)>> {
    let mut ports: Vec<(String, Box<dyn PortDevice>)> = Vec::new();
    for spec in specs {
        let device = spec.open(
            offload,
            config.threads,
            config.steering,
            config.kernel_may_carry(),
        )?;
        let can = device.capabilities();
        tracing::info!(
            port = spec.name(),
            kind = can.kind,
            offload = can.tx_vnet_header,
            "attached"
        );
        ports.push((spec.name().to_owned(), device));
    }
    Ok(ports)
}
