//! `vswitch ns ...` and `vswitch veth ...`: the namespace plumbing as commands for scripts.

use std::process::Command;

use anyhow::{Context, Result, bail};
use vswitch_netns::{Netlink, Netns};

use crate::cli::{NsCommand, VethCommand};

/// Runs an `ns` subcommand.
pub fn ns(cmd: &NsCommand) -> Result<()> {
    match cmd {
        NsCommand::Add { name } => {
            let ns = Netns::create(name)?;
            ns.run(|| Netlink::open()?.set_up("lo"))??;
        }
        NsCommand::Del { name } => Netns::delete(name)?,
        NsCommand::List => {
            for name in Netns::list()? {
                outln!("{name}");
            }
        }
        NsCommand::Exec { name, command } => {
            let ns = Netns::open(name)?;
            let (program, args) = command.split_first().context("no command given")?;
            let status = ns
                .run(|| Command::new(program).args(args).status())?
                .with_context(|| format!("couldn't run {program}"))?;
            if !status.success() {
                bail!("{program} exited with {status}");
            }
        }
    }
    Ok(())
}

/// Runs a `veth` subcommand.
pub fn veth(cmd: &VethCommand) -> Result<()> {
    match cmd {
        VethCommand::Add {
            name,
            peer,
            netns,
            peer_netns,
            mac,
            peer_mac,
        } => {
            let peer_ns = peer_netns.as_deref().map(Netns::open).transpose()?;
            let (mac, peer_mac) = (mac.map(|m| m.octets()), peer_mac.map(|m| m.octets()));
            let add =
                || Netlink::open()?.add_veth_with_macs(name, peer, peer_ns.as_ref(), mac, peer_mac);
            match netns {
                // Create the pair inside `netns`, so `name` never exists in ours (no name clash).
                Some(ns) => Netns::open(ns)?.run(add)??,
                None => add()?,
            }
        }
        VethCommand::Del { name, netns } => match netns {
            Some(ns) => Netns::open(ns)?.run(|| Netlink::open()?.delete_link(name))??,
            None => Netlink::open()?.delete_link(name)?,
        },
    }
    Ok(())
}
