//! What a running lab is, as `lab show`, `lab check`, `lab exec` and `lab down` need it: written
//! to `/run/vswitch/labs/NAME.json` by `lab up`, and derived the same way from a file that is
//! not up (for `lab show -f`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::topology::{Attach, End, Topology};

pub const STATE_DIR: &str = "/run/vswitch/labs";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabState {
    pub name: String,
    /// The `lab up` process (0 when the lab is not up).
    pub pid: u32,
    pub attach: Attach,
    pub switches: Vec<SwitchState>,
    pub hosts: Vec<HostState>,
    pub links: Vec<LinkState>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SwitchState {
    pub name: String,
    /// The name its control socket answers to (`vswitch stats --name ...`).
    pub control: String,
    /// Its own addresses (`addr/prefix`).
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostState {
    pub name: String,
    pub netns: String,
    /// Addresses of all its interfaces (`addr/prefix`), eth0's first.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndState {
    /// The node.
    pub node: String,
    /// The switch's port, or the host's interface.
    pub interface: String,
    pub is_switch: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkState {
    pub a: EndState,
    pub b: EndState,
    pub mtu: Option<u32>,
    /// Impairments from a to b, and b to a, as pipeline text ("" for none).
    pub a_to_b: String,
    pub b_to_a: String,
    /// Short labels for pictures.
    pub label: String,
    /// VLAN modes of switch ends, as `switch: mode`.
    pub vlan: Vec<String>,
}

impl EndState {
    fn of(end: End) -> EndState {
        match end {
            End::Switch { switch, port } => EndState {
                node: switch,
                interface: port,
                is_switch: true,
            },
            End::Host { host, ifname } => EndState {
                node: host,
                interface: ifname,
                is_switch: false,
            },
        }
    }
}

impl LabState {
    /// The lab `topology` describes, run by process `pid`.
    pub fn of(topology: &Topology, pid: u32) -> LabState {
        let switches = topology
            .switches
            .iter()
            .map(|s| SwitchState {
                name: s.name.clone(),
                control: topology.switch_name(&s.name),
                addresses: s.addresses.iter().map(ToString::to_string).collect(),
            })
            .collect();
        let hosts = topology
            .hosts
            .iter()
            .map(|h| {
                let addresses = topology
                    .host_addresses(h)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                HostState {
                    name: h.name.clone(),
                    netns: topology.netns(&h.name),
                    addresses,
                }
            })
            .collect();
        let links = topology
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (a, b) = topology.ends(i);
                let (ab, ba) = (l.a_to_b.label(), l.b_to_a.label());
                let label = if ab == ba {
                    ab
                } else {
                    [ab, ba]
                        .into_iter()
                        .map(|s| if s.is_empty() { "-".to_owned() } else { s })
                        .collect::<Vec<_>>()
                        .join(" / ")
                };
                LinkState {
                    a: EndState::of(a),
                    b: EndState::of(b),
                    mtu: topology.link_mtu(i),
                    a_to_b: l.a_to_b.pipeline().unwrap_or_default(),
                    b_to_a: l.b_to_a.pipeline().unwrap_or_default(),
                    label,
                    vlan: l.vlan.iter().map(|(s, m)| format!("{s}: {m}")).collect(),
                }
            })
            .collect();
        LabState {
            name: topology.name.clone(),
            pid,
            attach: topology.attach,
            switches,
            hosts,
            links,
        }
    }

    pub fn host(&self, name: &str) -> Option<&HostState> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("{name}.json"))
}

/// The state of running lab `name`.
pub fn read(name: &str) -> Result<LabState> {
    let path = path(name);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no lab {name} is running (no {})", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("corrupt lab state {}", path.display()))
}

pub fn write(state: &LabState) -> Result<()> {
    std::fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
    let path = path(&state.name);
    std::fs::write(&path, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("writing {}", path.display()))
}
