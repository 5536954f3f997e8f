//! The topology file (`vswitch lab up -f lab.toml`): TOML read into a [`Topology`], each error
//! naming the line and the field.
//!
//! ```toml
//! name = "chain"                 # the lab's name (--name wins)
//! attach = "veth"                # or "tap": how hosts join their switch
//! subnet = "10.0.1.0/24"         # hosts without addresses get .1, .2, ... in file order
//!
//! [switches.s1]
//! threads = 1                    # also ageing_time, datapath, max_macs
//! addresses = ["10.0.1.254/24"]  # the switch's own address, answering ARP and ping
//! ports = ["vxlan:vx0:vni=42,local=192.0.2.1,remote=192.0.2.2"]  # more ports, as flags
//!
//! [hosts.h1]
//! addresses = ["10.0.1.1/24", "fd00::1/64"]
//! mac = "02:00:00:00:00:01"
//! mtu = 1500
//! gateway = "10.0.1.254"         # or a list, one per family
//! routes = ["10.0.2.0/24 via 10.0.1.254"]
//! forward = false                # IP forwarding (a router)
//! run = ["ip -br addr"]          # shell commands, once the lab is up
//!
//! [[links]]
//! endpoints = ["h1", "s1"]       # a host and a switch, or two switches
//! mtu = 1500
//! delay = "10ms"                 # both directions: rate, queue, delay, jitter, loss,
//! rate = "50mbit"                #   reorder, duplicate, corrupt, seed
//! a_to_b = { loss = "1%" }       # one direction only (a, b as in endpoints)
//! vlan = "access 10"             # the switch end's VLAN; two switches: { s1 = "trunk 10,20" }
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use toml::Spanned;

use super::generate::Subnet;
use super::topology::{
    Attach, HostNode, IfAddr, Impairments, Link, Origin, Route, SwitchNode, SwitchOptions, Topology,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabFile {
    name: Option<Spanned<String>>,
    attach: Option<Attach>,
    subnet: Option<Spanned<String>>,
    #[serde(default)]
    switches: BTreeMap<String, Spanned<SwitchTable>>,
    #[serde(default)]
    hosts: BTreeMap<String, Spanned<HostTable>>,
    #[serde(default)]
    links: Vec<Spanned<LinkTable>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchTable {
    ageing_time: Option<u64>,
    threads: Option<Spanned<u16>>,
    datapath: Option<Spanned<String>>,
    max_macs: Option<usize>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostTable {
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    mac: Option<Spanned<String>>,
    mtu: Option<u32>,
    /// One address or a list (one per family).
    gateway: Option<Spanned<toml::Value>>,
    #[serde(default)]
    routes: Vec<Spanned<String>>,
    #[serde(default)]
    forward: bool,
    #[serde(default)]
    run: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ImpairTable {
    rate: Option<String>,
    queue: Option<String>,
    delay: Option<String>,
    jitter: Option<String>,
    loss: Option<String>,
    reorder: Option<String>,
    duplicate: Option<String>,
    corrupt: Option<String>,
    seed: Option<u64>,
}

impl From<ImpairTable> for Impairments {
    fn from(t: ImpairTable) -> Impairments {
        Impairments {
            rate: t.rate,
            queue: t.queue,
            delay: t.delay,
            jitter: t.jitter,
            loss: t.loss,
            reorder: t.reorder,
            duplicate: t.duplicate,
            corrupt: t.corrupt,
            seed: t.seed,
        }
    }
}

#[derive(Debug, Deserialize)]
struct LinkTable {
    endpoints: Spanned<Vec<String>>,
    mtu: Option<u32>,
    /// The impairment keys at the link's top level (both directions), read as an
    /// [`ImpairTable`] once the other keys are out (`deny_unknown_fields` doesn't combine with
    /// `flatten`).
    #[serde(flatten)]
    both: toml::Table,
    a_to_b: Option<ImpairTable>,
    b_to_a: Option<ImpairTable>,
    vlan: Option<Spanned<VlanField>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    #[serde(default)]
    tun: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum VlanField {
    One(String),
    PerSwitch(BTreeMap<String, String>),
}

/// A file being read: its name and text, for line numbers.
struct Source<'a> {
    path: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn origin<T>(&self, spanned: &Spanned<T>) -> Origin {
        Origin {
            source: self.path.to_owned(),
            line: Some(self.line(spanned.span().start)),
        }
    }

    fn err<T>(
        &self,
        at: &Spanned<T>,
        field: &str,
        problem: impl std::fmt::Display,
    ) -> anyhow::Error {
        anyhow!("{}: {field}: {problem}", self.origin(at))
    }
}

/// Reads a topology file. `name` (from `--name`) wins over the file's.
pub fn load(path: &Path, name: Option<&str>) -> Result<Topology> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("couldn't read topology file {}", path.display()))?;
    parse(&path.display().to_string(), &text, name)
}

/// Parses a topology file's text and validates the lab it describes.
pub fn parse(path: &str, text: &str, name: Option<&str>) -> Result<Topology> {
    let file: LabFile =
        toml::from_str(text).map_err(|e| anyhow!("{path}: {}", e.to_string().trim_end()))?;
    let src = Source { path, text };
    let subnet: Option<Subnet> = file
        .subnet
        .as_ref()
        .map(|s| s.get_ref().parse().map_err(|e| src.err(s, "subnet", e)))
        .transpose()?;

    let mut switches: Vec<(usize, SwitchNode)> = Vec::new();
    for (sname, table) in &file.switches {
        let t = table.get_ref();
        let at = |field: &str| format!("switches.{sname}.{field}");
        let datapath = t
            .datapath
            .as_ref()
            .map(|d| {
                d.get_ref()
                    .parse()
                    .map_err(|e| src.err(d, &at("datapath"), e))
            })
            .transpose()?;
        if let Some(threads) = &t.threads
            && *threads.get_ref() == 0
        {
            return Err(src.err(threads, &at("threads"), "must be at least 1"));
        }
        let mut addresses = Vec::new();
        for a in &t.addresses {
            addresses.push(
                a.get_ref()
                    .parse::<IfAddr>()
                    .map_err(|e| src.err(a, &at("addresses"), e))?,
            );
        }
        for p in &t.ports {
            p.get_ref()
                .parse::<vswitch_datapath::PortSpec>()
                .map_err(|e| src.err(p, &at("ports"), format!("{:?}: {e}", p.get_ref())))?;
        }
        switches.push((
            table.span().start,
            SwitchNode {
                name: sname.clone(),
                options: SwitchOptions {
                    ageing_time: t.ageing_time,
                    threads: t.threads.as_ref().map(|t| *t.get_ref()),
                    datapath,
                    max_macs: t.max_macs,
                },
                addresses,
                ports: t.ports.iter().map(|p| p.get_ref().clone()).collect(),
                origin: src.origin(table),
            },
        ));
    }
    switches.sort_by_key(|(start, _)| *start);

    let mut hosts: Vec<(usize, HostNode)> = Vec::new();
    for (hname, table) in &file.hosts {
        let t = table.get_ref();
        let at = |field: &str| format!("hosts.{hname}.{field}");
        let mut addresses = Vec::new();
        for a in &t.addresses {
            let addr: IfAddr = a
                .get_ref()
                .parse()
                .map_err(|e| src.err(a, &at("addresses"), e))?;
            if let Some(subnet) = &subnet
                && addr.addr.is_ipv4()
                && !subnet.contains(addr.addr)
            {
                return Err(src.err(
                    a,
                    &at("addresses"),
                    format!("{addr} is outside the lab's subnet {subnet}"),
                ));
            }
            addresses.push(addr);
        }
        let mac = t
            .mac
            .as_ref()
            .map(|m| m.get_ref().parse().map_err(|e| src.err(m, &at("mac"), e)))
            .transpose()?;
        let mut gateways = Vec::new();
        if let Some(g) = &t.gateway {
            let values = match g.get_ref() {
                toml::Value::Array(values) => values.iter().collect(),
                one => vec![one],
            };
            for v in values {
                let gw = v
                    .as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .ok_or_else(|| {
                        src.err(g, &at("gateway"), format!("{v} is not an IP address"))
                    })?;
                gateways.push(gw);
            }
        }
        let routes = t
            .routes
            .iter()
            .map(|r| {
                r.get_ref()
                    .parse::<Route>()
                    .map_err(|e| src.err(r, &at("routes"), e))
            })
            .collect::<Result<Vec<_>>>()?;
        hosts.push((
            table.span().start,
            HostNode {
                name: hname.clone(),
                addresses,
                mac,
                mtu: t.mtu,
                gateways,
                routes,
                forward: t.forward,
                run: t.run.clone(),
                origin: src.origin(table),
            },
        ));
    }
    hosts.sort_by_key(|(start, _)| *start);
    let mut hosts: Vec<HostNode> = hosts.into_iter().map(|(_, h)| h).collect();

    let mut links = Vec::new();
    for table in file.links {
        let origin = src.origin(&table);
        let t = table.into_inner();
        let [a, b] = t.endpoints.get_ref().as_slice() else {
            return Err(src.err(
                &t.endpoints,
                "links.endpoints",
                "give two node names, like [\"h1\", \"s1\"]",
            ));
        };
        let both: Impairments = toml::Value::Table(t.both)
            .try_into::<ImpairTable>()
            .map_err(|e| anyhow!("{origin}: links: {}", e.to_string().trim_end()))?
            .into();
        let vlan = match &t.vlan {
            None => BTreeMap::new(),
            Some(v) => {
                let per_switch: BTreeMap<String, String> = match v.get_ref() {
                    VlanField::One(mode) => {
                        let switch_ends: Vec<&String> = [a, b]
                            .into_iter()
                            .filter(|n| file.switches.contains_key(n.as_str()))
                            .collect();
                        let switch = match switch_ends.as_slice() {
                            [switch] => switch,
                            [] => return Err(src.err(v, "links.vlan", "this link has no switch end")),
                            _ => return Err(src.err(v, "links.vlan", "this link has two switch ends: say which gets what, like { s1 = \"trunk 10,20\" }")),
                        };
                        BTreeMap::from([((*switch).clone(), mode.clone())])
                    }
                    VlanField::PerSwitch(map) => map.clone(),
                };
                per_switch
                    .into_iter()
                    .map(|(switch, mode)| {
                        let mode = mode
                            .parse()
                            .map_err(|e| src.err(v, &format!("links.vlan.{switch}"), e))?;
                        Ok((switch, mode))
                    })
                    .collect::<Result<_>>()?
            }
        };
        let addresses = t
            .addresses
            .iter()
            .map(|a| {
                a.get_ref()
                    .parse::<IfAddr>()
                    .map_err(|e| src.err(a, "links.addresses", e))
            })
            .collect::<Result<Vec<_>>>()?;
        links.push(Link {
            a: a.clone(),
            b: b.clone(),
            mtu: t.mtu,
            a_to_b: t
                .a_to_b
                .map(Impairments::from)
                .unwrap_or_default()
                .or(&both),
            b_to_a: t
                .b_to_a
                .map(Impairments::from)
                .unwrap_or_default()
                .or(&both),
            vlan,
            addresses,
            tun: t.tun,
            origin,
        });
    }

    // Hosts without addresses get the next of the lab's subnet, in file order.
    if let Some(subnet) = subnet {
        let taken: Vec<IpAddr> = hosts
            .iter()
            .flat_map(|h| h.addresses.iter().map(|a| a.addr))
            .collect();
        let mut next = 1;
        for host in hosts.iter_mut().filter(|h| h.addresses.is_empty()) {
            let addr = loop {
                let candidate = subnet.host(next).ok_or_else(|| {
                    anyhow!(
                        "{}: subnet: {subnet} has no address left for host {}",
                        path,
                        host.name
                    )
                })?;
                next += 1;
                if !taken.contains(&candidate.addr) {
                    break candidate;
                }
            };
            host.addresses.push(addr);
        }
    }

    let name = match (name, &file.name) {
        (Some(n), _) => n.to_owned(),
        (None, Some(n)) => {
            super::topology::check_name("lab", n.get_ref(), super::topology::MAX_LAB_NAME, true)
                .map_err(|e| src.err(n, "name", e))?;
            n.get_ref().clone()
        }
        (None, None) => "lab".to_owned(),
    };
    let topology = Topology {
        name,
        attach: file.attach.unwrap_or_default(),
        switches: switches.into_iter().map(|(_, s)| s).collect(),
        hosts,
        links,
    };
    topology.validate().map_err(anyhow::Error::msg)?;
    Ok(topology)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[switches.s1]\n[hosts.h1]\naddresses = [\"10.0.1.1/24\"]\n[[links]]\nendpoints = [\"h1\", \"s1\"]\n";

    #[test]
    fn a_file_becomes_a_topology_in_file_order() {
        let t = parse(
            "lab.toml",
            "name = \"x\"\nsubnet = \"10.0.9.0/24\"\n[switches.sb]\n[switches.sa]\n[hosts.z]\n[hosts.a]\naddresses = [\"10.0.9.1/24\"]\ngateway = \"10.0.9.254\"\n[[links]]\nendpoints = [\"z\", \"sb\"]\ndelay = \"5ms\"\nb_to_a = { loss = \"1%\" }\nvlan = \"access 10\"\n[[links]]\nendpoints = [\"a\", \"sb\"]\n[[links]]\nendpoints = [\"sa\", \"sb\"]\nvlan = { sa = \"trunk 10\", sb = \"trunk 10\" }\n",
            None,
        )
        .unwrap();
        assert_eq!(t.name, "x");
        let names: Vec<&str> = t.switches.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sb", "sa"]);
        let hosts: Vec<String> = t
            .hosts
            .iter()
            .map(|h| format!("{}={}", h.name, h.addresses[0]))
            .collect();
        // z had no address: the subnet's first free one.
        assert_eq!(hosts, ["z=10.0.9.2/24", "a=10.0.9.1/24"]);
        assert_eq!(
            t.links[0].a_to_b.pipeline().as_deref(),
            Some("impair delay 5ms")
        );
        assert_eq!(
            t.links[0].b_to_a.pipeline().as_deref(),
            Some("impair delay 5ms loss 1%")
        );
        assert_eq!(t.links[0].vlan.len(), 1);
        assert_eq!(t.links[2].vlan.len(), 2);
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let cases: &[(&str, &str)] = &[
            // A name used twice, by a host and a switch.
            (
                "[switches.s1]\n[hosts.s1]\naddresses = [\"10.0.1.1/24\"]\n",
                "lab.toml:2: host s1: the name is taken by a node declared at lab.toml:1",
            ),
            // A link to an unknown node.
            (
                "[switches.s1]\n[[links]]\nendpoints = [\"h9\", \"s1\"]\n",
                "lab.toml:2: links: endpoint \"h9\" is no switch or host",
            ),
            // An address outside the lab's subnet.
            (
                "subnet = \"10.0.1.0/24\"\n[switches.s1]\n[hosts.h1]\naddresses = [\"10.0.2.1/24\"]\n",
                "lab.toml:4: hosts.h1.addresses: 10.0.2.1/24 is outside the lab's subnet 10.0.1.0/24",
            ),
            // A gateway outside the host's subnets.
            (
                "[switches.s1]\n[hosts.h1]\naddresses = [\"10.0.1.1/24\"]\ngateway = \"10.0.2.1\"\n[[links]]\nendpoints = [\"h1\", \"s1\"]\n",
                "lab.toml:2: hosts.h1.gateway: 10.0.2.1 is outside the host's subnets (10.0.1.1/24)",
            ),
            // A name too long once prefixed.
            (
                "[switches.s1]\n[hosts.averylonghostname]\n",
                "lab.toml:2: host name \"averylonghostname\" is 17 characters; at most 12",
            ),
            // A loop.
            (
                "[switches.s1]\n[switches.s2]\n[switches.s3]\n[[links]]\nendpoints = [\"s1\", \"s2\"]\n[[links]]\nendpoints = [\"s2\", \"s3\"]\n[[links]]\nendpoints = [\"s3\", \"s1\"]\n",
                "lab.toml:8: links: s3 -- s1 closes a loop",
            ),
            // Two parallel links are a loop too.
            (
                "[switches.s1]\n[switches.s2]\n[[links]]\nendpoints = [\"s1\", \"s2\"]\n[[links]]\nendpoints = [\"s2\", \"s1\"]\n",
                "lab.toml:5: links: s2 -- s1 closes a loop",
            ),
            // Bad values, at their own line.
            (
                "[switches.s1]\n[hosts.h1]\naddresses = [\n  \"10.0.1.1/24\",\n  \"10.0.1.300/24\",\n]\n",
                "lab.toml:5: hosts.h1.addresses: \"10.0.1.300\" is not an IP address",
            ),
            (
                "[switches.s1]\n[hosts.h1]\nmac = \"02:00:00:00:00\"\n",
                "lab.toml:3: hosts.h1.mac",
            ),
            (
                "[switches.s1]\ndatapath = \"kernel\"\n",
                "lab.toml:2: switches.s1.datapath",
            ),
            (
                "[switches.s1]\nthreads = 0\n",
                "lab.toml:2: switches.s1.threads: must be at least 1",
            ),
            (
                &format!("{BASE}delay = \"NaNms\"\n"),
                "delay: \"NaNms\" is out of range",
            ),
            (
                &format!("{BASE}rate = \"fast\"\n"),
                "lab.toml:4: links: a_to_b:",
            ),
            (
                &format!("{BASE}vlan = \"access 5000\"\n"),
                "lab.toml:6: links.vlan.s1",
            ),
            (
                &format!("{BASE}mtu = 20\n"),
                "lab.toml:4: links: mtu 20 is not between 68 and 65535",
            ),
            (
                &format!("{BASE}bandwidth = \"1mbit\"\n"),
                "lab.toml:4: links: unknown field `bandwidth`",
            ),
            (
                "[switches.s1]\n[hosts.h1]\n",
                "lab.toml:2: host h1: no link joins it to anything",
            ),
            (
                "[switches.s1]\n[hosts.h1]\nroutes = [\"10.0.0.0/8 via\"]\n",
                "lab.toml:3: hosts.h1.routes",
            ),
            ("[switch.s1]\n", "unknown field `switch`"),
            (
                "name = \"a_very_long_lab_name\"\n[switches.s1]\n",
                "lab.toml:1: name: lab name",
            ),
        ];
        for (text, want) in cases {
            let got = parse("lab.toml", text, None).unwrap_err().to_string();
            assert!(
                got.contains(want),
                "for\n{text}\nwant {want:?}\ngot  {got:?}"
            );
        }
        assert!(
            parse("lab.toml", BASE, None).is_ok(),
            "the base of the bad cases is good"
        );
    }
}
