//! `vswitch lab`: switches, hosts and links from a topology file or a generator, brought up in
//! one command, seen, checked and torn down.
//!
//! - [`topology`]: the model and every check that needs the whole lab (pure).
//! - [`file`]: the TOML topology file, errors naming line and field.
//! - [`generate`]: `linear:N`, `star:N`, `tree:DEPTH,FANOUT`.
//! - [`up`]: making it real; [`state`]: what a running lab is, for the other subcommands.
//! - [`check`]: all-pairs reachability; [`render`]: text, DOT and SVG.
//!
//! Names: host H of lab L lives in namespace `L-H`; link n's switch ends are `Lln` (to a host)
//! or `Llna`/`Llnb` (between switches); switch S answers on control socket `L-S`.

mod check;
pub mod cli;
pub(crate) mod file;
pub mod generate;
mod render;
mod state;
pub mod topology;
mod up;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vswitch_netns::{Netlink, Netns};

use crate::control::{Request, call, ensure_name_free, socket_path};
use cli::{LabCommand, LabShowArgs, LabTopologyArgs};
use state::LabState;
use topology::{MAX_LAB_NAME, Topology, check_name};

/// Runs a `lab` subcommand.
pub fn run(cmd: &LabCommand) -> Result<()> {
    match cmd {
        LabCommand::Up(args) => {
            let topology = topology_of(&args.lab)?;
            up::up(
                &topology,
                &args.switch_config(),
                !args.no_offload,
                args.check,
            )
        }
        LabCommand::Down { name } => down(name),
        LabCommand::Check { name, json } => {
            check_name("lab", name, MAX_LAB_NAME, true).map_err(anyhow::Error::msg)?;
            let lab = state::read(name)?;
            let result = check::run(&lab)?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                out!("{}", result.matrix());
            }
            if result.failures() > 0 {
                bail!("{} pairs can't reach each other", result.failures());
            }
            Ok(())
        }
        LabCommand::Show(args) => show(args),
        LabCommand::Exec {
            name,
            host,
            command,
        } => exec(name, host, command),
        LabCommand::CheckFile { file } => {
            let topology = file::load(file, None)?;
            outln!(
                "{}: lab {} with {}: ok",
                file.display(),
                topology.name,
                topology.summary()
            );
            Ok(())
        }
    }
}

/// The lab `lab up` or `lab show` describes: a file, a generator, or `--hosts N` on one switch.
fn topology_of(args: &LabTopologyArgs) -> Result<Topology> {
    let mut topology = match (&args.file, &args.topology) {
        (Some(_), Some(_)) => bail!("give a topology file (-f) or --topology, not both"),
        (Some(path), None) => file::load(path, args.name.as_deref())?,
        (None, shape) => {
            let shape = match (shape, args.hosts) {
                (Some(_), Some(_)) => bail!("--hosts is --topology star:N; give one of them"),
                (Some(shape), None) => *shape,
                (None, hosts) => format!("star:{}", hosts.unwrap_or(2))
                    .parse()
                    .map_err(anyhow::Error::msg)?,
            };
            let name = args.name.clone().unwrap_or_else(|| "lab".into());
            shape
                .build(
                    &name,
                    args.subnet,
                    args.via.unwrap_or_default(),
                    &Default::default(),
                )
                .map_err(anyhow::Error::msg)?
        }
    };
    if let Some(via) = args.via {
        topology.attach = via;
    }
    topology.validate().map_err(anyhow::Error::msg)?;
    Ok(topology)
}

fn show(args: &LabShowArgs) -> Result<()> {
    let lab = if args.lab.file.is_some() || args.lab.topology.is_some() || args.lab.hosts.is_some()
    {
        LabState::of(&topology_of(&args.lab)?, 0)
    } else {
        let name = args.lab.name.as_deref().unwrap_or("lab");
        check_name("lab", name, MAX_LAB_NAME, true).map_err(anyhow::Error::msg)?;
        state::read(name)?
    };
    if let Some(path) = &args.svg {
        std::fs::write(path, render::svg(&lab))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.dot {
        out!("{}", render::dot(&lab));
    } else if args.json {
        outln!("{}", serde_json::to_string_pretty(&lab)?);
    } else if args.svg.is_none() {
        let rates = if lab.pid != 0 {
            Some(link_rates(&lab, Duration::from_secs(1))?)
        } else {
            None
        };
        out!("{}", render::text(&lab, rates.as_ref()));
    }
    Ok(())
}

/// Each link's rate both ways over `interval`, from its switches' port counters.
fn link_rates(lab: &LabState, interval: Duration) -> Result<render::Rates> {
    let sample = || -> Result<Vec<serde_json::Value>> {
        lab.switches
            .iter()
            .map(|s| call(&s.control, Request::Stats))
            .collect()
    };
    let (t0, before) = (Instant::now(), sample()?);
    std::thread::sleep(interval);
    let (t1, after) = (Instant::now(), sample()?);
    let secs = t1.duration_since(t0).as_secs_f64();
    // Bytes counter `key` of `port` on `switch`, in one sample.
    let bytes = |stats: &[serde_json::Value], switch: &str, port: &str, key: &str| -> f64 {
        let i = lab.switches.iter().position(|s| s.name == switch);
        i.and_then(|i| stats[i]["ports"].as_array())
            .and_then(|ports| ports.iter().find(|p| p["name"] == port))
            .and_then(|p| p[key].as_f64())
            .unwrap_or(0.0)
    };
    let per_sec = |switch: &str, port: &str, key: &str| {
        8.0 * (bytes(&after, switch, port, key) - bytes(&before, switch, port, key)).max(0.0) / secs
    };
    let mut rates = render::Rates::new();
    for (i, l) in lab.links.iter().enumerate() {
        // From x to y: what x's switch port sent, or what y's switch port received.
        let one_way = |x: &state::EndState, y: &state::EndState| {
            if x.is_switch {
                per_sec(&x.node, &x.interface, "tx_bytes")
            } else {
                per_sec(&y.node, &y.interface, "rx_bytes")
            }
        };
        rates.insert(i, (one_way(&l.a, &l.b), one_way(&l.b, &l.a)));
    }
    Ok(rates)
}

fn exec(name: &str, host: &str, command: &[String]) -> Result<()> {
    check_name("lab", name, MAX_LAB_NAME, true).map_err(anyhow::Error::msg)?;
    let lab = state::read(name)?;
    let host = lab.host(host).with_context(|| {
        format!(
            "lab {name} has no host {host} (hosts: {})",
            lab.hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let (program, args) = command.split_first().context("no command given")?;
    let ns = Netns::open(&host.netns)?;
    let status = ns
        .run(|| std::process::Command::new(program).args(args).status())?
        .with_context(|| format!("couldn't run {program}"))?;
    if !status.success() {
        // The command's own exit code, as `ip netns exec` gives it.
        std::process::exit(status.code().unwrap_or(128 + 9));
    }
    Ok(())
}

/// Whether `rest` names a node (letters, digits, '_').
fn is_node(rest: &str) -> bool {
    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `rest` is a link suffix: `l` + number + optional `a`/`b`.
fn is_link_suffix(rest: &str) -> bool {
    let Some(n) = rest.strip_prefix('l') else {
        return false;
    };
    let n = n.strip_suffix(['a', 'b']).unwrap_or(n);
    !n.is_empty() && n.len() <= 3 && n.chars().all(|c| c.is_ascii_digit())
}

/// Stops lab `name` if it runs, and removes whatever it left: namespaces `NAME-*`, links
/// `NAMEl<n>[ab]`, control sockets `NAME-*.sock`, its state. Idempotent.
fn down(name: &str) -> Result<()> {
    check_name("lab", name, MAX_LAB_NAME, true).map_err(anyhow::Error::msg)?;
    let lab = state::read(name).ok();
    if ensure_name_free(name).is_err() {
        // Running: ask its process to stop, and wait for it to let go of the name.
        let pid = lab
            .as_ref()
            .map(|l| l.pid)
            .filter(|p| *p != 0)
            .with_context(|| format!("lab {name} is running but its state is missing"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).context("bad pid in the lab's state")?),
            nix::sys::signal::Signal::SIGTERM,
        )
        .with_context(|| format!("stopping lab {name} (pid {pid})"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while ensure_name_free(name).is_err() {
            if Instant::now() > deadline {
                bail!("lab {name} (pid {pid}) didn't stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut removed = 0;
    // Links first: deleting a veth end removes its pair at once, while a namespace's links
    // disappear asynchronously after it.
    let mut netlink = Netlink::open()?;
    for link in list_dir("/sys/class/net")? {
        if link.strip_prefix(name).is_some_and(is_link_suffix) && netlink.link_exists(&link)? {
            netlink.delete_link(&link)?;
            removed += 1;
        }
    }
    let prefix = format!("{name}-");
    for ns in Netns::list()? {
        if ns.strip_prefix(&prefix).is_some_and(is_node) {
            Netns::delete(&ns)?;
            removed += 1;
        }
    }
    // Control sockets of crashed switches (a running one of that name is left alone).
    for file in list_dir(crate::control::RUN_DIR)? {
        if let Some(switch) = file
            .strip_suffix(".sock")
            .and_then(|f| f.strip_prefix(&prefix))
            .filter(|s| is_node(s))
        {
            let control = format!("{prefix}{switch}");
            if ensure_name_free(&control).is_ok() {
                let _ = std::fs::remove_file(socket_path(&control));
            }
        }
    }
    let _ = std::fs::remove_file(state::path(name));
    outln!("lab {name}: removed {removed} namespaces and links");
    Ok(())
}

fn list_dir(dir: &str) -> Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("listing {dir}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_recognised_by_shape_only() {
        assert!(is_link_suffix("l1") && is_link_suffix("l12a") && is_link_suffix("l999b"));
        assert!(!is_link_suffix("l") && !is_link_suffix("l1c") && !is_link_suffix("x1"));
        assert!(!is_link_suffix("l1234"));
        assert!(is_node("h1") && !is_node("a-h1") && !is_node(""));
    }
}
