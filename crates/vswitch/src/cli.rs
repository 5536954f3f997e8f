//! Command-line syntax.

use clap::{Args, Parser, Subcommand};
use vswitch_core::MacAddr;

/// A userspace learning Ethernet switch over TAP devices.
///
/// Creates (or attaches to) the TAP devices named in --ports and switches frames among them until
/// SIGINT or SIGTERM, then removes the TAPs it created and prints per-port counters (also printed
/// on SIGUSR1). Move a TAP into a namespace with `ip link set tap0 netns NS` while the switch runs
/// to connect that namespace.
#[derive(Debug, Parser)]
#[command(
    name = "vswitch",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub switch: SwitchArgs,
}

/// Options of the switch itself.
#[derive(Debug, Clone, Args)]
pub struct SwitchArgs {
    /// Ports to switch among, comma-separated: `tap:NAME` creates TAP NAME (or attaches to a
    /// persistent TAP of that name); `tap:NAME@NS` creates it in namespace NS, relayed so the
    /// fast path carries it; `dev:NAME` attaches to existing interface NAME (a veth end, a NIC)
    /// with a packet socket; a bare NAME is `dev:` if NAME exists and is not a TAP, else `tap:`.
    /// Names are at most 15 bytes. Example: tap0,tap:tap1@h1,dev:veth0
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present_any = ["config", "vxlan", "address"],
        value_name = "PORTS"
    )]
    pub ports: Vec<String>,

    /// Seconds a silent MAC address stays in the table.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub ageing_time: u64,

    /// Capacity of the MAC table; when full, the least recently used entry of the port with the
    /// most entries is evicted.
    #[arg(long, default_value_t = 65536, value_name = "N")]
    pub max_macs: usize,

    /// Most MAC addresses one port may hold [default: no limit].
    #[arg(long, value_name = "N")]
    pub max_macs_per_port: Option<usize>,

    /// Which IEEE 802.1D link-local groups 01:80:C2:00:00:0X to forward: a 16-bit mask where bit
    /// X enables group X (e.g. 0x4000 for LLDP, 0x0001 for STP), or "all".
    #[arg(long, default_value = "0", value_name = "MASK", value_parser = parse_link_local_mask)]
    pub forward_link_local: u16,

    /// Open TAPs without virtio-net headers and offloads: every TCP segment then crosses the
    /// switch as MTU-sized frames with full checksums (slower; for comparison and debugging).
    #[arg(long)]
    pub no_offload: bool,

    /// Worker threads [default: number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Dispatch by destination MAC like the kernel's macvlan, in this mode (bridge, private,
    /// vepa, passthru, source), instead of learning. Needs --uplink; every port in --ports is
    /// then a sub-port, bound to its own MAC or to the MACs given as NAME=MAC[+MAC...] (in source
    /// mode: the source MACs it accepts).
    #[arg(long, value_name = "MODE", requires = "uplink")]
    pub macvlan: Option<vswitch_core::MacvlanMode>,

    /// The uplink port of a --macvlan switch (a port spec, e.g. dev:veth0 or tap:up0).
    #[arg(long, value_name = "PORT", requires = "macvlan")]
    pub uplink: Option<String>,

    /// Sub-ports of a --macvlan switch that may send with any source MAC (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PORTS",
        requires = "macvlan"
    )]
    pub allow_spoofing: Vec<String>,

    /// Read settings from this TOML file (see the README); flags given here win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// A pipeline for a port, as PORT:in:STAGES or PORT:out:STAGES (repeatable), e.g.
    /// 'tap1:out:impair delay 20ms loss 1% seed 7'. Stages are separated by ';'.
    #[arg(long, value_name = "PORT:DIR:STAGES")]
    pub pipeline: Vec<String>,

    /// An address of the switch's own (repeatable), e.g. 10.0.1.254/24: the switch becomes a
    /// station on its segment (a port named `self`) that answers ARP and ping. IPv4.
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub address: Vec<String>,

    /// A VXLAN port (repeatable): NAME:vni=N,local=IP,remote=IP[+IP...][,dstport=P][,mtu=M]
    /// [,netns=NS][,learning=off][,srcport=MIN-MAX][,udp6zerocsumrx=on][,carrier=kernel].
    /// RFC 7348 as Linux speaks it; the destination port defaults to IANA's 4789, while
    /// Linux's vxlan uses 8472 when `dstport` is omitted: give the same port on both ends. The
    /// port's MTU is the underlay's (`mtu`, 1500) minus 50. `carrier=kernel`: a Linux vxlan
    /// device the switch creates carries the tunnel, and the fast path serves it (the kernel's
    /// speed; its counters in `ip -s link`); the default, `carrier=switch`, counts per VTEP.
    /// Also `vswitch port add 'vxlan:NAME:...'` and `"vxlan:NAME:..."` in the config file.
    #[arg(long, value_name = "NAME:PARAMS")]
    pub vxlan: Vec<String>,

    /// A port's VLAN mode at start, as PORT=MODE (repeatable), e.g. 'tap1=access 10',
    /// 'tap3=trunk 10,20 native 10', 'tap4=tunnel 100'. Ports without one carry untagged
    /// traffic and pass tags through, as without VLANs.
    #[arg(long, value_name = "PORT=MODE")]
    pub vlan: Vec<String>,

    /// A port's flags at start, as PORT=FLAG on|off [FLAG on|off ...] (repeatable), the words
    /// of `vswitch port set`: e.g. 'tap1=isolated on learning off'. Flags: learning, flood,
    /// mcast-flood, bcast-flood, isolated, hairpin.
    #[arg(long, value_name = "PORT=FLAGS")]
    pub port_flag: Vec<String>,

    /// The switch's name: its control socket is /run/vswitch/NAME.sock, which `vswitch fdb`,
    /// `stats` and `port` talk to. Two running switches can't share a name.
    #[arg(long, default_value = "vswitch0")]
    pub name: String,

    /// Serve counters in the Prometheus text format at http://ADDR/metrics
    /// (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Keep polling for this many microseconds after traffic before sleeping: lower latency
    /// for CPU time. 0 sleeps at once, so an idle switch uses no CPU.
    #[arg(long, default_value_t = 0, value_name = "MICROS")]
    pub busy_poll: u64,

    /// How a port's receive queues split its traffic over the workers: `cpu` by the CPU that
    /// sent each frame (a busy flow keeps its queue), with worker N pinned to CPU N while its
    /// load is light when there is a worker per CPU (frames are forwarded on their sender's CPU,
    /// as the kernel bridge does: lower latency, fewer wake-ups), or `flow` by flow hash (strict
    /// per-flow order wherever senders run; better for --no-offload).
    #[arg(long, default_value_t = vswitch_datapath::Steering::Cpu, value_name = "cpu|flow")]
    pub steering: vswitch_datapath::Steering,

    /// `auto`: known unicast between `dev:` ports (veth ends, NICs) and relayed TAPs
    /// (`tap:NAME@NS`) is forwarded in the kernel by an eBPF program at tc ingress, from maps
    /// the switch keeps equal to its table (needs CAP_BPF; attached through tcx on Linux 6.6+,
    /// else as a cls_bpf filter; for other TAPs, ports
    /// with a pipeline or a capture, unknown, broadcast, multicast and tagged frames, the switch
    /// forwards as always). `cls-bpf`: as auto, always attached as a cls_bpf filter.
    /// `userspace`: every frame through the switch. Counters include both.
    #[arg(long, default_value_t = vswitch_datapath::Datapath::Auto, value_name = "auto|cls-bpf|userspace")]
    pub datapath: vswitch_datapath::Datapath,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build two namespaces joined by the switch, ping across, print counters, clean up.
    Demo(DemoArgs),
    /// Labs: switches, hosts and links from a topology file or a generator (`lab up -f`).
    #[command(subcommand)]
    Lab(crate::lab::cli::LabCommand),
    /// Named network namespaces, as `ip netns` (add, del, list, exec).
    #[command(subcommand)]
    Ns(NsCommand),
    /// veth pairs, as `ip link add type veth`.
    #[command(subcommand)]
    Veth(VethCommand),
    /// The forwarding table of a running switch: show, add, del, flush.
    #[command(subcommand)]
    Fdb(FdbCommand),
    /// Counters of a running switch.
    Stats(StatsArgs),
    /// Add or remove ports of a running switch.
    #[command(subcommand)]
    Port(PortCommand),
    /// VLAN membership of a running switch's ports: set, show.
    #[command(subcommand)]
    Vlan(VlanCommand),
    /// MACVLAN bindings of a running switch (started with --macvlan): bind, unbind, show.
    #[command(subcommand)]
    Macvlan(MacvlanCommand),
    /// Check a configuration file without starting anything.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Remove what a switch that died without cleaning up (SIGKILL, a crash) left: its control
    /// socket and name lock. Its TAPs and kernel programs went with its process. Idempotent;
    /// refuses while a switch of that name runs. (A lab: `vswitch lab down`.)
    Cleanup {
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Per-port pipelines of a running switch: filters, rate limits, impairments, mirrors.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Copy a port's frames of a running switch as pcap (tcpdump -r and Wireshark read it).
    Capture(CaptureArgs),
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// The port's ingress and egress stages with their counters.
    Show {
        /// The port.
        port: String,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Install stages on a port, replacing its pipeline for that direction. Example:
    /// `vswitch pipeline set tap1 out 'filter drop proto icmp; rate 10mbit queue 50ms'`
    Set {
        /// The port.
        port: String,
        /// `in` (frames the port receives) or `out` (frames leaving through it).
        #[arg(value_parser = ["in", "out"])]
        hook: String,
        /// The stages, separated by `;`, quoted as one argument (see the README).
        stages: String,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Remove a port's pipeline (both directions unless one is given).
    Clear {
        /// The port.
        port: String,
        /// `in` or `out`.
        #[arg(value_parser = ["in", "out"])]
        hook: Option<String>,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE: syntax, fields, ports, MACs, modes; errors name the line and field.
    Check {
        /// The file.
        file: std::path::PathBuf,
    },
}

/// Options of `capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// The port.
    pub port: String,
    /// Write to this file [default: standard output].
    #[arg(short = 'w', long, value_name = "FILE")]
    pub write: Option<std::path::PathBuf>,
    /// Stop after this many frames [default: until interrupted].
    #[arg(short = 'c', long, value_name = "COUNT")]
    pub count: Option<u64>,
    /// Frames received by the port (in), sent out of it (out), or both.
    #[arg(long, default_value = "both", value_parser = ["in", "out", "both"])]
    pub direction: String,
    /// The switch.
    #[arg(long, default_value = "vswitch0")]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum FdbCommand {
    /// List entries: MAC, VLAN, port, static or dynamic, age.
    Show {
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a static entry: never aged, never moved by learning.
    Add {
        /// The MAC.
        mac: MacAddr,
        /// The port.
        port: String,
        /// For a VXLAN port: the remote VTEP the MAC is behind (as `bridge fdb append ... dst`).
        #[arg(long, value_name = "IP")]
        dst: Option<std::net::IpAddr>,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Remove an entry, static or learned.
    Del {
        /// The MAC.
        mac: MacAddr,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Forget learned entries (static ones stay).
    Flush {
        /// Only those of this port.
        #[arg(long)]
        port: Option<String>,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
}

/// Options of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The switch.
    #[arg(long, default_value = "vswitch0")]
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Refresh every second, with per-second rates.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Attach a port (any form --ports takes) without disturbing the others.
    Add {
        /// The port spec.
        spec: String,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Detach a port and forget its MACs (a TAP the switch created is removed).
    Del {
        /// The port's name.
        port: String,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Set a port's flag, as `bridge link set`: learning, flood (unknown unicast), mcast-flood,
    /// bcast-flood, isolated (reaches only ports that aren't), hairpin (may send a frame back
    /// where it came from). Example: `vswitch port set tap1 isolated on`.
    Set {
        /// The port's name.
        port: String,
        /// The flag.
        flag: String,
        /// on or off.
        value: String,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MacvlanCommand {
    /// Bind a MAC to a sub-port from the next frame on (in source mode: a source MAC whose
    /// frames from the uplink the sub-port gets). A MAC bound elsewhere is refused.
    Bind {
        /// The sub-port.
        port: String,
        /// The MAC.
        mac: MacAddr,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Take a MAC off a sub-port.
    Unbind {
        /// The sub-port.
        port: String,
        /// The MAC.
        mac: MacAddr,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Every binding: MAC and sub-port.
    Show {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VlanCommand {
    /// Put a port in a VLAN: `access VID` (untagged member; tagged frames dropped), `trunk
    /// VIDS [native VID [tagged]]` (tagged members of VIDS, e.g. 10,20-29 or all; untagged
    /// frames in the native VLAN), `tunnel VID [tpid 0x88a8]` (dot1q-tunnel: every frame in the
    /// service VLAN, crossing trunks with an outer tag), or `none` (no VLANs, tags pass).
    /// Example: `vswitch vlan set tap1 trunk 10,20 native 10`. The port's learned MACs are
    /// forgotten.
    Set {
        /// The port's name.
        port: String,
        /// The mode, as words.
        #[arg(required = true, num_args = 1..)]
        mode: Vec<String>,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Every port's VLAN mode and flags.
    Show {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Add VLANs to a trunk port's list, e.g. `vswitch vlan add dev:up0 30,40-49`.
    Add {
        /// The trunk port.
        port: String,
        /// The VIDs.
        vids: String,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
    /// Take VLANs off a trunk port's list (not its native VLAN).
    Del {
        /// The trunk port.
        port: String,
        /// The VIDs.
        vids: String,
        /// The switch.
        #[arg(long, default_value = "vswitch0")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NsCommand {
    /// Create a named namespace (loopback up), visible to `ip netns`.
    Add {
        /// Its name.
        name: String,
    },
    /// Delete a named namespace.
    Del {
        /// Its name.
        name: String,
    },
    /// List named namespaces.
    List,
    /// Run a command inside a namespace.
    Exec {
        /// The namespace.
        name: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum VethCommand {
    /// Create a veth pair NAME/PEER.
    Add {
        /// One end.
        name: String,
        /// The other end.
        peer: String,
        /// Namespace for NAME [default: the current one].
        #[arg(long)]
        netns: Option<String>,
        /// Namespace for PEER [default: NAME's].
        #[arg(long)]
        peer_netns: Option<String>,
        /// MAC address for NAME [default: random].
        #[arg(long)]
        mac: Option<vswitch_core::MacAddr>,
        /// MAC address for PEER [default: random].
        #[arg(long)]
        peer_mac: Option<vswitch_core::MacAddr>,
    },
    /// Delete a veth pair by either end.
    Del {
        /// Either end.
        name: String,
        /// The namespace it is in [default: the current one].
        #[arg(long)]
        netns: Option<String>,
    },
}

/// Options of the demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Pings to send each way.
    #[arg(long, default_value_t = 3)]
    pub count: u32,
}

/// Parses `--forward-link-local`.
pub fn parse_link_local_mask(s: &str) -> Result<u16, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(0xffff);
    }
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => s.parse::<u16>(),
    };
    parsed.map_err(|_| format!("{s:?} is not a 16-bit mask (e.g. 0x4000, 16384 or all)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_mask_forms() {
        assert_eq!(parse_link_local_mask("all"), Ok(0xffff));
        assert_eq!(parse_link_local_mask("0x4000"), Ok(0x4000));
        assert_eq!(parse_link_local_mask("1"), Ok(1));
        assert!(parse_link_local_mask("0x10000").is_err());
        assert!(parse_link_local_mask("lldp").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
