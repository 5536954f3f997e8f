//! What a switch is started with, and why starting it or changing it can fail.

use std::io;
use std::time::Duration;

use vswitch_core::{ForwardingConfig, MacAddr, MacvlanError, MacvlanMode, TableConfig};

use crate::port::Steering;

/// How the switch behaves.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// Worker threads (at most one per port is useful).
    pub threads: usize,
    /// MAC table limits and ageing.
    pub table: TableConfig,
    /// Forwarding options.
    pub forwarding: ForwardingConfig,
    /// `Some`: MACVLAN-style dispatch instead of a learning switch.
    pub macvlan: Option<MacvlanConfig>,
    /// After handling traffic, a worker keeps polling without sleeping for this long before it
    /// blocks again (`--busy-poll`): lower latency for more CPU. Zero: block at once, so an idle
    /// switch uses no CPU.
    pub busy_poll: Duration,
    /// How multi-queue ports spread frames over the workers (`--steering`). With
    /// [`Steering::Cpu`] and one worker per CPU, worker `w` is pinned to CPU `w` while its load
    /// is light (`switch::affinity`).
    pub steering: Steering,
    /// Whether known unicast between `dev:` ports may take the in-kernel fast path.
    pub datapath: Datapath,
}

impl SwitchConfig {
    /// Whether the kernel may carry frames the switch decided (the fast path's condition): not
    /// with `--datapath userspace`, nor in MACVLAN mode (whose dispatch the fast path lacks).
    pub fn kernel_may_carry(&self) -> bool {
        self.datapath != Datapath::Userspace && self.macvlan.is_none()
    }
}

/// Where frames are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Datapath {
    /// Known unicast between `dev:` ports in the kernel (tc ingress, `bpf_redirect`) where
    /// the kernel allows, decided by the switch; the rest by the switch's workers. The
    /// classifier is attached through tcx (Linux 6.6+), else as a cls_bpf filter.
    #[default]
    Auto,
    /// As `Auto`, the classifier always a cls_bpf filter (what `Auto` falls back to).
    ClsBpf,
    /// Every frame through the switch's workers.
    Userspace,
}

impl std::str::FromStr for Datapath {
    type Err = vswitch_core::UnknownChoice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Datapath::Auto),
            "cls-bpf" => Ok(Datapath::ClsBpf),
            "userspace" => Ok(Datapath::Userspace),
            _ => Err(vswitch_core::UnknownChoice::new(
                "datapath",
                s,
                "auto, cls-bpf, userspace",
            )),
        }
    }
}

impl std::fmt::Display for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Datapath::Auto => "auto",
            Datapath::ClsBpf => "cls-bpf",
            Datapath::Userspace => "userspace",
        })
    }
}

impl Default for SwitchConfig {
    /// One worker per CPU, the default table, no link-local forwarding.
    fn default() -> Self {
        SwitchConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            table: TableConfig::default(),
            forwarding: ForwardingConfig::default(),
            macvlan: None,
            busy_poll: Duration::ZERO,
            steering: Steering::default(),
            datapath: Datapath::default(),
        }
    }
}

/// A MACVLAN switch, by port name.
#[derive(Debug, Clone)]
pub struct MacvlanConfig {
    /// How sub-ports relate.
    pub mode: MacvlanMode,
    /// The uplink's port name.
    pub uplink: String,
    /// MACs bound to sub-ports by name; a sub-port not listed, or listed with no MACs, is bound
    /// to its device's own MAC (in source mode: the sources it accepts, none by default). Every
    /// port but the uplink is a sub-port.
    pub bindings: Vec<(String, Vec<MacAddr>)>,
    /// Sub-ports whose source MACs are not checked.
    pub allow_spoofing: Vec<String>,
}

/// Why the switch could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// A switch needs at least one port.
    #[error("no ports given")]
    NoPorts,
    /// Two ports with one name.
    #[error("port {0} is given twice")]
    DuplicatePort(String),
    /// More ports than port ids.
    #[error("too many ports (at most {max})")]
    TooManyPorts {
        /// The limit.
        max: usize,
    },
    /// A MACVLAN setting names a port that isn't there.
    #[error("macvlan: no port {0}")]
    UnknownPort(String),
    /// A sub-port without a binding whose device can't say its MAC.
    #[error("macvlan: sub-port {0} has no MAC of its own; bind one explicitly (NAME=MAC)")]
    NoMac(String),
    /// The bindings are inconsistent.
    #[error("macvlan: {0}")]
    Macvlan(#[from] MacvlanError),
    /// The housekeeping thread couldn't be started.
    #[error("couldn't start the housekeeping thread")]
    Housekeeping(#[source] io::Error),
    /// epoll or thread setup failed.
    #[error("couldn't set up worker {worker}")]
    Worker {
        /// Which worker.
        worker: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Why a runtime change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No port of that name.
    #[error("no port {0}")]
    UnknownPort(String),
    /// A port of that name is attached already.
    #[error("port {0} exists already")]
    DuplicatePort(String),
    /// MACVLAN bindings are fixed at start.
    #[error("ports can't be added to or removed from a macvlan switch while it runs")]
    Macvlan,
    /// The FDB of a MACVLAN switch is its bindings.
    #[error("a macvlan switch has no learning table")]
    NoTable,
    /// Too many ports.
    #[error("too many ports")]
    TooManyPorts,
    /// The switch is stopping.
    #[error("the switch is stopping")]
    Stopping,
    /// A pipeline text that doesn't parse, or a mirror file that can't be opened.
    #[error("{0}")]
    Pipeline(String),
    /// A VLAN mode or port flag that doesn't parse, or a binding refused.
    #[error("{0}")]
    Policy(String),
    /// MACVLAN bindings asked of a learning switch.
    #[error("this switch is not in macvlan mode (start it with --macvlan)")]
    NotMacvlan,
}
