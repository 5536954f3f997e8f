//! Command-line syntax.

use clap::{Args, Parser, Subcommand};

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
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// TAP devices to switch among, comma-separated (e.g. tap0,tap1,tap2). Each is created, or
    /// attached to if a persistent TAP of that name exists; names are at most 15 bytes.
    #[arg(long, value_delimiter = ',', required = true, value_name = "NAMES")]
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build two namespaces joined by the switch, ping across, print counters, clean up.
    Demo(DemoArgs),
}

/// Options of the demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Pings to send each way.
    #[arg(long, default_value_t = 3)]
    pub count: u32,
}

fn parse_link_local_mask(s: &str) -> Result<u16, String> {
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
