//! The `vswitch lab` subcommands and their options.

use std::time::Duration;

use clap::{Args, Subcommand};
use vswitch_core::TableConfig;
use vswitch_datapath::SwitchConfig;

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create the lab's hosts, switches and links, run them until Ctrl-C or `lab down`, then
    /// remove everything. Without -f or --topology: --hosts hosts on one switch.
    Up(LabUpArgs),
    /// Stop a running lab, or remove what a crashed one left behind; idempotent.
    Down {
        /// The lab's name.
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Ping every pair of hosts (and each switch address) of a running lab: a matrix of RTTs.
    Check {
        /// The lab's name.
        #[arg(long, default_value = "lab")]
        name: String,
        /// Print the pairs as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a lab's nodes and links with live per-link rates, or draw it (--dot, --svg). A
    /// running lab by --name, or a file (-f) or generator (--topology) that need not be up.
    Show(LabShowArgs),
    /// Run a command in a host of a running lab: `vswitch lab exec h1 -- ip addr`.
    Exec {
        /// The host.
        host: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
        /// The lab's name.
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Check a topology file without making anything; errors name the line and the field.
    CheckFile {
        /// The file.
        file: std::path::PathBuf,
    },
}

/// Options of `lab show`.
#[derive(Debug, Args)]
pub struct LabShowArgs {
    #[command(flatten)]
    pub lab: LabTopologyArgs,
    /// Print Graphviz DOT instead (`| dot -Tpng > lab.png`).
    #[arg(long)]
    pub dot: bool,
    /// Write an SVG picture of the topology to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,
    /// Print the lab as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which lab: a topology file, a generator, or N hosts on one switch.
#[derive(Debug, Args)]
pub struct LabTopologyArgs {
    /// A topology file (TOML: switches, hosts, links with impairments and VLANs).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// A generated topology, as mininet's: linear:N[,M] (N switches in a chain, M hosts on
    /// each), star:N (one switch, N hosts), tree:DEPTH,FANOUT.
    #[arg(long, value_name = "SHAPE")]
    pub topology: Option<super::generate::Shape>,
    /// N hosts on one switch (star:N) [default: 2].
    #[arg(long)]
    pub hosts: Option<usize>,
    /// Subnet for generated hosts; host i gets address i in it.
    #[arg(long, default_value = "10.0.1.0/24")]
    pub subnet: super::generate::Subnet,
    /// How hosts join their switch: `veth` (the default) lets the in-kernel fast path forward
    /// between them at the kernel bridge's speed; `tap` keeps every frame in the switch.
    #[arg(long, value_enum)]
    pub via: Option<super::topology::Attach>,
    /// The lab's name (a file's `name`, else "lab"): prefixes namespaces (LAB-HOST), links
    /// (LABlN) and switch names (LAB-SWITCH); at most 10 characters.
    #[arg(long)]
    pub name: Option<String>,
}

/// Options of `lab up`.
#[derive(Debug, Args)]
pub struct LabUpArgs {
    #[command(flatten)]
    pub lab: LabTopologyArgs,
    /// Ping all pairs once the lab is up and print the matrix.
    #[arg(long)]
    pub check: bool,
    /// Seconds a silent MAC stays in the switches' tables.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub ageing_time: u64,
    /// Worker threads per switch [default: number of CPUs]; a file's switch may set its own.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// As for the switch: how port queues split traffic over the workers.
    #[arg(long, default_value_t = vswitch_datapath::Steering::Cpu, value_name = "cpu|flow")]
    pub steering: vswitch_datapath::Steering,
    /// As for the switch: microseconds to keep polling after traffic before sleeping.
    #[arg(long, default_value_t = 0, value_name = "MICROS")]
    pub busy_poll: u64,
    /// As for the switch: TAPs without virtio-net headers and offloads.
    #[arg(long)]
    pub no_offload: bool,
    /// As for the switch: `auto` forwards known unicast between veth ports in the kernel.
    #[arg(long, default_value_t = vswitch_datapath::Datapath::Auto, value_name = "auto|cls-bpf|userspace")]
    pub datapath: vswitch_datapath::Datapath,
}

impl LabUpArgs {
    /// What every switch of the lab runs with, unless the topology says otherwise.
    pub fn switch_config(&self) -> SwitchConfig {
        let defaults = SwitchConfig::default();
        SwitchConfig {
            threads: self.threads.map_or(defaults.threads, usize::from),
            table: TableConfig {
                capacity: 65536,
                per_port_limit: None,
                ageing_time: Duration::from_secs(self.ageing_time),
            },
            busy_poll: Duration::from_micros(self.busy_poll),
            steering: self.steering,
            datapath: self.datapath,
            ..defaults
        }
    }
}
