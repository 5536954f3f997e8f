//! The TOML configuration file: everything the switch's flags can say. Flags given on the
//! command line win over the file.
//!
//! ```toml
//! name = "lab0"
//! ports = ["tap0", "tap1", "dev:veth0"]
//! ageing_time = 300
//! max_macs = 65536
//! max_macs_per_port = 1024
//! forward_link_local = "0x4000"   # or a number, or "all"
//! threads = 2
//! busy_poll = 0
//! steering = "cpu"               # or "flow"
//! datapath = "auto"              # or "cls-bpf", "userspace"
//! no_offload = false
//! metrics = "127.0.0.1:9464"
//! pipelines = ["tap1:out:rate 10mbit queue 50ms", "tap0:in:filter drop proto icmp"]
//! vlans = ["tap0=access 10", "tap2=trunk 10,20 native 10"]
//!
//! [port.tap1]                     # one port's VLAN mode and flags (as --vlan, --port-flag)
//! vlan = "trunk 10,20 native 10"
//! isolated = true                 # also learning, flood, mcast_flood, bcast_flood, hairpin
//!
//! [macvlan]                       # instead of learning
//! mode = "bridge"
//! uplink = "dev:veth0"
//! allow_spoofing = ["tap1"]
//! [macvlan.bindings]
//! tap0 = ["02:00:00:00:00:01", "02:00:00:00:00:02"]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;
use toml::Spanned;

use crate::cli::SwitchArgs;

/// The file as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    name: Option<String>,
    ports: Option<Vec<Spanned<String>>>,
    ageing_time: Option<u64>,
    max_macs: Option<usize>,
    max_macs_per_port: Option<usize>,
    forward_link_local: Option<Spanned<Mask>>,
    threads: Option<u16>,
    busy_poll: Option<u64>,
    steering: Option<Spanned<String>>,
    datapath: Option<Spanned<String>>,
    no_offload: Option<bool>,
    metrics: Option<Spanned<String>>,
    pipelines: Option<Vec<Spanned<String>>>,
    vlans: Option<Vec<Spanned<String>>>,
    /// Per-port settings, `[port.NAME]`.
    port: Option<BTreeMap<String, Spanned<PortSection>>>,
    macvlan: Option<MacvlanSection>,
}

/// `[port.NAME]`: a port's VLAN mode and flags, the words of `--vlan` and `--port-flag`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSection {
    vlan: Option<Spanned<String>>,
    learning: Option<bool>,
    flood: Option<bool>,
    mcast_flood: Option<bool>,
    bcast_flood: Option<bool>,
    isolated: Option<bool>,
    hairpin: Option<bool>,
}

/// `forward_link_local` as a number or a string ("0x4000", "all").
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Mask {
    Number(u16),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MacvlanSection {
    mode: Spanned<String>,
    uplink: Spanned<String>,
    #[serde(default)]
    bindings: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    allow_spoofing: Vec<String>,
}

/// The name part of a port spec (`tap:t1` → `t1`; a VXLAN spec's name before its parameters).
fn port_name(spec: &str) -> &str {
    let spec = spec.split_once('=').map_or(spec, |(s, _)| s);
    match spec.split_once(':') {
        Some(("vxlan", rest)) => rest.split(':').next().unwrap_or(rest),
        Some(("tap", rest)) => rest.split('@').next().unwrap_or(rest),
        Some((_, name)) => name,
        None => spec,
    }
}

/// A loaded file: its text (for line numbers) and contents.
pub struct Config {
    path: String,
    text: String,
    file: ConfigFile,
}

impl Config {
    /// Reads and parses `path`; syntax, type and unknown-field errors name the line.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("couldn't read config file {}", path.display()))?;
        Config::parse(&path.display().to_string(), text)
    }

    /// Parses `text`, read from `path` (which errors name).
    pub fn parse(path: &str, text: String) -> Result<Config> {
        let file: ConfigFile =
            toml::from_str(&text).map_err(|e| anyhow!("{path}: {}", e.to_string().trim_end()))?;
        Ok(Config {
            path: path.to_owned(),
            text,
            file,
        })
    }

    fn line_of<T>(&self, spanned: &Spanned<T>) -> usize {
        let start = spanned.span().start.min(self.text.len());
        self.text[..start].matches('\n').count() + 1
    }

    fn at<T>(
        &self,
        spanned: &Spanned<T>,
        field: &str,
        problem: impl std::fmt::Display,
    ) -> anyhow::Error {
        anyhow!(
            "{}:{}: {field}: {problem}",
            self.path,
            self.line_of(spanned)
        )
    }

    /// Fills `args` from the file where the command line left a field at its default.
    pub fn apply(&self, args: &mut SwitchArgs, matches: &ArgMatches) -> Result<()> {
        let from_cli = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        let f = &self.file;
        if let Some(name) = &f.name
            && !from_cli("name")
        {
            args.name = name.clone();
        }
        if !from_cli("ports")
            && let Some(ports) = &f.ports
        {
            args.ports = ports
                .iter()
                .map(|p| {
                    let spec = p.get_ref();
                    let name = spec.rsplit(':').next().unwrap_or(spec);
                    match f.macvlan.as_ref().and_then(|m| m.bindings.get(name)) {
                        Some(macs) => format!(
                            "{spec}={}",
                            macs.iter()
                                .map(|m| m.get_ref().as_str())
                                .collect::<Vec<_>>()
                                .join("+")
                        ),
                        None => spec.clone(),
                    }
                })
                .collect();
        }
        macro_rules! take {
            ($field:ident, $id:literal) => {
                if let Some(v) = f.$field
                    && !from_cli($id)
                {
                    args.$field = v.into();
                }
            };
        }
        take!(ageing_time, "ageing_time");
        take!(max_macs, "max_macs");
        take!(threads, "threads");
        take!(busy_poll, "busy_poll");
        take!(no_offload, "no_offload");
        if let Some(steering) = &f.steering
            && !from_cli("steering")
        {
            args.steering = steering
                .get_ref()
                .parse()
                .map_err(|e| self.at(steering, "steering", e))?;
        }
        if let Some(datapath) = &f.datapath
            && !from_cli("datapath")
        {
            args.datapath = datapath
                .get_ref()
                .parse()
                .map_err(|e| self.at(datapath, "datapath", e))?;
        }
        if let Some(v) = f.max_macs_per_port
            && !from_cli("max_macs_per_port")
        {
            args.max_macs_per_port = Some(v);
        }
        if let Some(mask) = &f.forward_link_local
            && !from_cli("forward_link_local")
        {
            args.forward_link_local = match mask.get_ref() {
                Mask::Number(n) => *n,
                Mask::Text(t) => crate::cli::parse_link_local_mask(t)
                    .map_err(|e| self.at(mask, "forward_link_local", e))?,
            };
        }
        if let Some(addr) = &f.metrics
            && !from_cli("metrics")
        {
            args.metrics = Some(
                addr.get_ref()
                    .parse()
                    .map_err(|e| self.at(addr, "metrics", format!("{:?}: {e}", addr.get_ref())))?,
            );
        }
        if let Some(vlans) = &f.vlans
            && !from_cli("vlan")
        {
            for v in vlans {
                let (_, mode) = v
                    .get_ref()
                    .split_once('=')
                    .ok_or_else(|| self.at(v, "vlans", "expected PORT=MODE"))?;
                mode.parse::<vswitch_core::VlanMode>()
                    .map_err(|e| self.at(v, "vlans", e))?;
            }
            args.vlan = vlans.iter().map(|v| v.get_ref().clone()).collect();
        }
        if let Some(ports) = &f.port {
            for (name, section) in ports {
                let listed = f
                    .ports
                    .iter()
                    .flatten()
                    .any(|p| port_name(p.get_ref()) == name);
                if !listed {
                    return Err(self.at(
                        section,
                        &format!("port.{name}"),
                        "no such port in `ports`",
                    ));
                }
                let t = section.get_ref();
                if let Some(mode) = t.vlan.as_ref().filter(|_| !from_cli("vlan")) {
                    if args
                        .vlan
                        .iter()
                        .any(|v| v.split_once('=').map(|(p, _)| p) == Some(name))
                    {
                        return Err(self.at(
                            mode,
                            &format!("port.{name}.vlan"),
                            "the port has a mode in `vlans` (or --vlan) too: give it one",
                        ));
                    }
                    mode.get_ref()
                        .parse::<vswitch_core::VlanMode>()
                        .map_err(|e| self.at(mode, &format!("port.{name}.vlan"), e))?;
                    args.vlan.push(format!("{name}={}", mode.get_ref()));
                }
                let on = |b: bool| if b { "on" } else { "off" };
                let flags: Vec<String> = [
                    ("learning", t.learning),
                    ("flood", t.flood),
                    ("mcast-flood", t.mcast_flood),
                    ("bcast-flood", t.bcast_flood),
                    ("isolated", t.isolated),
                    ("hairpin", t.hairpin),
                ]
                .into_iter()
                .filter_map(|(flag, v)| v.map(|v| format!("{flag} {}", on(v))))
                .collect();
                if !flags.is_empty() && !from_cli("port_flag") {
                    args.port_flag.push(format!("{name}={}", flags.join(" ")));
                }
            }
        }
        if let Some(pipelines) = &f.pipelines
            && !from_cli("pipeline")
        {
            for p in pipelines {
                let text = p.get_ref();
                let stages = text
                    .splitn(3, ':')
                    .nth(2)
                    .ok_or_else(|| self.at(p, "pipelines", "expected PORT:in|out:STAGES"))?;
                vswitch_core::Pipeline::parse(stages).map_err(|e| self.at(p, "pipelines", e))?;
            }
            args.pipeline = pipelines.iter().map(|p| p.get_ref().clone()).collect();
        }
        if let Some(m) = &f.macvlan
            && !from_cli("macvlan")
        {
            args.macvlan = Some(
                m.mode
                    .get_ref()
                    .parse()
                    .map_err(|e| self.at(&m.mode, "macvlan.mode", e))?,
            );
            args.uplink = Some(m.uplink.get_ref().clone());
            args.allow_spoofing = m.allow_spoofing.clone();
            for (port, macs) in &m.bindings {
                for mac in macs {
                    mac.get_ref()
                        .parse::<vswitch_core::MacAddr>()
                        .map_err(|e| self.at(mac, &format!("macvlan.bindings.{port}"), e))?;
                }
                let listed = f
                    .ports
                    .iter()
                    .flatten()
                    .any(|p| p.get_ref().rsplit(':').next() == Some(port.as_str()));
                if !listed {
                    let first = macs.first().ok_or_else(|| {
                        anyhow!("{}: macvlan.bindings.{port}: no MACs", self.path)
                    })?;
                    return Err(self.at(
                        first,
                        &format!("macvlan.bindings.{port}"),
                        "no such port in `ports`",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks every port spec, pointing at its line.
    pub fn check_ports(&self) -> Result<()> {
        for (i, p) in self.file.ports.iter().flatten().enumerate() {
            p.get_ref()
                .parse::<vswitch_datapath::PortSpec>()
                .map_err(|e| {
                    self.at(p, &format!("ports[{i}]"), format!("{:?}: {e}", p.get_ref()))
                })?;
        }
        if let Some(m) = &self.file.macvlan {
            m.uplink
                .get_ref()
                .parse::<vswitch_datapath::PortSpec>()
                .map_err(|e| self.at(&m.uplink, "macvlan.uplink", e))?;
        }
        if self.file.ports.as_ref().is_none_or(Vec::is_empty) {
            bail!("{}: `ports` is missing or empty", self.path);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn load(text: &str) -> Result<Config> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("vswitch-config-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text)?;
        let config = Config::load(&path);
        std::fs::remove_file(&path)?;
        config
    }

    fn args_with(config: &Config, cli: &[&str]) -> Result<SwitchArgs> {
        let matches = crate::cli::Cli::command()
            .try_get_matches_from(std::iter::once("vswitch").chain(cli.iter().copied()))?;
        let mut args = crate::cli::Cli::from_arg_matches(&matches)?.switch;
        config.apply(&mut args, &matches)?;
        Ok(args)
    }

    #[test]
    fn file_fills_what_flags_leave_and_flags_win() {
        let config = load(
            "name = \"lab0\"\nports = [\"tap0\", \"dev:veth0\"]\nageing_time = 30\nforward_link_local = \"0x4000\"\nmetrics = \"127.0.0.1:9464\"\n",
        )
        .unwrap();
        config.check_ports().unwrap();
        let args = args_with(&config, &["--config", "x", "--ageing-time", "5"]).unwrap();
        assert_eq!(args.name, "lab0");
        assert_eq!(args.ports, ["tap0", "dev:veth0"]);
        assert_eq!(args.ageing_time, 5, "the flag wins");
        assert_eq!(args.forward_link_local, 0x4000);
        assert_eq!(args.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn macvlan_bindings_become_port_bindings() {
        let config = load(
            "ports = [\"tap:t1\", \"t2\"]\n[macvlan]\nmode = \"vepa\"\nuplink = \"dev:up\"\n[macvlan.bindings]\nt1 = [\"02:00:00:00:00:01\", \"02:00:00:00:00:02\"]\n",
        )
        .unwrap();
        let args = args_with(&config, &["--config", "x"]).unwrap();
        assert_eq!(
            args.ports,
            ["tap:t1=02:00:00:00:00:01+02:00:00:00:00:02", "t2"]
        );
        assert_eq!(args.uplink.as_deref(), Some("dev:up"));
        assert_eq!(args.macvlan, Some(vswitch_core::MacvlanMode::Vepa));
    }

    #[test]
    fn port_tables_become_vlan_modes_and_flags() {
        let config = load(
            "ports = [\"tap:t1\", \"t2\"]\n[port.t1]\nvlan = \"access 10\"\nisolated = true\nlearning = false\n",
        )
        .unwrap();
        let args = args_with(&config, &["--config", "x"]).unwrap();
        assert_eq!(args.vlan, ["t1=access 10"]);
        assert_eq!(args.port_flag, ["t1=learning off isolated on"]);
        // The command line wins.
        let args = args_with(&config, &["--config", "x", "--vlan", "t2=access 5"]).unwrap();
        assert_eq!(args.vlan, ["t2=access 5"]);
        let config = load("ports = [\"t1\"]\n[port.t9]\nhairpin = true\n").unwrap();
        let err = args_with(&config, &["--config", "x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2: port.t9: no such port"), "{err}");
        let config =
            load("ports = [\"t1\"]\nvlans = [\"t1=access 10\"]\n[port.t1]\nvlan = \"trunk 20\"\n")
                .unwrap();
        let err = args_with(&config, &["--config", "x"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":4: port.t1.vlan") && err.contains("give it one"),
            "{err}"
        );
        let config = load("ports = [\"t1\"]\n[port.t1]\nvlan = \"access 4095\"\n").unwrap();
        let err = args_with(&config, &["--config", "x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains(":3: port.t1.vlan"), "{err}");
        let err = load("ports = [\"t1\"]\n[port.t1]\nisolate = true\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("line 3") && err.contains("isolate"), "{err}");
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let err = load("ports = [\"tap0\"]\nportz = 3\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("line 2") && err.contains("portz"), "{err}");
        let config = load("ports = [\n  \"tap0\",\n  \"a/b\",\n]\n").unwrap();
        let err = config.check_ports().unwrap_err().to_string();
        assert!(err.contains(":3: ports[1]"), "{err}");
        let config = load("ports = [\"t1\"]\n[macvlan]\nmode = \"hub\"\nuplink = \"u\"\n").unwrap();
        let err = args_with(&config, &["--config", "x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains(":3: macvlan.mode"), "{err}");
        let config = load("ports = [\"t1\"]\nmetrics = \"nowhere\"\n").unwrap();
        let err = args_with(&config, &["--config", "x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2: metrics"), "{err}");
    }
}
