//! Topologies without a file: `--topology linear:N`, `star:N`, `tree:DEPTH,FANOUT`, after
//! mininet's `LinearTopo`, `SingleSwitchTopo` and `TreeTopo`. Hosts are `h1..`, switches
//! `s1..`; every host gets the next address of the lab's subnet.

use std::net::{IpAddr, Ipv4Addr};

use super::topology::{
    Attach, HostNode, IfAddr, Impairments, Link, Origin, SwitchNode, SwitchOptions, Topology,
};

/// The most hosts a generated lab has (they share one /24 by default).
pub const MAX_GENERATED_HOSTS: usize = 250;

/// An IPv4 subnet such as 10.0.1.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: Ipv4Addr,
    prefix: u8,
}

/// Why a generated lab's subnet or shape was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// Not `A.B.C.D/LEN`.
    #[error("{0:?} is not an IPv4 subnet like 10.0.1.0/24")]
    Subnet(String),
    /// Too large or too small a subnet for a lab.
    #[error("prefix /{0} must be between /8 and /30")]
    Prefix(u8),
    /// Not one of the shapes.
    #[error("{0:?} is not linear:N[,M], star:N or tree:DEPTH,FANOUT")]
    Shape(String),
    /// A shape with nothing in it.
    #[error("{0}: a lab needs at least one switch and one host")]
    Empty(String),
    /// A shape beyond what a generated lab may hold.
    #[error("{shape}: {hosts} hosts; generated labs have at most {MAX_GENERATED_HOSTS}")]
    TooManyHosts { shape: String, hosts: usize },
}

impl std::str::FromStr for Subnet {
    type Err = GenerateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GenerateError::Subnet(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        if !(8..=30).contains(&prefix) {
            return Err(GenerateError::Prefix(prefix));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet {
            base: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Subnet {
    /// Whether `addr` is in the subnet.
    pub fn contains(&self, addr: IpAddr) -> bool {
        IfAddr {
            addr: IpAddr::V4(self.base),
            prefix: self.prefix,
        }
        .contains(addr)
    }

    /// Host `i` (1-based), if it fits below the broadcast address.
    pub fn host(&self, i: usize) -> Option<IfAddr> {
        let size = 1u64 << (32 - self.prefix);
        (i as u64 + 1 < size).then(|| IfAddr {
            addr: IpAddr::V4(Ipv4Addr::from(u32::from(self.base) + i as u32)),
            prefix: self.prefix,
        })
    }
}

/// A generated shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// N switches in a chain, M hosts on each (one by default).
    Linear { switches: usize, hosts: usize },
    /// One switch, N hosts.
    Star(usize),
    /// A tree of switches DEPTH levels deep with FANOUT children each; FANOUT hosts on each
    /// leaf switch.
    Tree { depth: usize, fanout: usize },
}

impl std::str::FromStr for Shape {
    type Err = GenerateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || GenerateError::Shape(s.to_owned());
        let (kind, args) = s.split_once(':').ok_or_else(usage)?;
        let numbers: Vec<usize> = args
            .split(',')
            .map(|n| n.trim().parse().map_err(|_| usage()))
            .collect::<Result<_, _>>()?;
        let shape = match (kind, numbers.as_slice()) {
            ("linear", [n]) => Shape::Linear {
                switches: *n,
                hosts: 1,
            },
            ("linear", [n, m]) => Shape::Linear {
                switches: *n,
                hosts: *m,
            },
            ("star", [n]) => Shape::Star(*n),
            ("tree", [depth, fanout]) => Shape::Tree {
                depth: *depth,
                fanout: *fanout,
            },
            _ => return Err(usage()),
        };
        let (switches, hosts) = shape.size();
        if switches == 0 || hosts == 0 {
            return Err(GenerateError::Empty(s.to_owned()));
        }
        if hosts > MAX_GENERATED_HOSTS {
            return Err(GenerateError::TooManyHosts {
                shape: s.to_owned(),
                hosts,
            });
        }
        Ok(shape)
    }
}

impl Shape {
    /// (switches, hosts), saturating for absurd trees.
    pub fn size(&self) -> (usize, usize) {
        match *self {
            Shape::Linear { switches, hosts } => (switches, switches.saturating_mul(hosts)),
            Shape::Star(n) => (1, n),
            Shape::Tree { depth, fanout } => {
                if depth == 0 || fanout == 0 {
                    return (0, 0);
                }
                let mut switches = 0usize;
                let mut level = 1usize;
                for _ in 0..depth {
                    switches = switches.saturating_add(level);
                    level = level.saturating_mul(fanout);
                }
                (switches, level)
            }
        }
    }

    /// The lab, named `name`, hosts numbered in `subnet`.
    pub fn build(
        &self,
        name: &str,
        subnet: Subnet,
        attach: Attach,
        options: &SwitchOptions,
    ) -> Result<Topology, String> {
        let origin = Origin {
            source: format!("--topology {}", self.describe()),
            line: None,
        };
        let (n_switches, n_hosts) = self.size();
        let switches = (1..=n_switches)
            .map(|i| SwitchNode {
                name: format!("s{i}"),
                options: options.clone(),
                addresses: Vec::new(),
                ports: Vec::new(),
                origin: origin.clone(),
            })
            .collect();
        let hosts = (1..=n_hosts)
            .map(|i| {
                Ok(HostNode {
                    name: format!("h{i}"),
                    addresses: vec![
                        subnet
                            .host(i)
                            .ok_or_else(|| format!("{n_hosts} hosts don't fit in the subnet"))?,
                    ],
                    mac: None,
                    mtu: None,
                    gateways: Vec::new(),
                    routes: Vec::new(),
                    forward: false,
                    run: Vec::new(),
                    origin: origin.clone(),
                })
            })
            .collect::<Result<_, String>>()?;
        let link = |a: String, b: String| Link {
            a,
            b,
            mtu: None,
            a_to_b: Impairments::default(),
            b_to_a: Impairments::default(),
            vlan: Default::default(),
            addresses: Vec::new(),
            tun: false,
            origin: origin.clone(),
        };
        let mut links = Vec::new();
        match *self {
            Shape::Linear { switches, hosts } => {
                for i in 1..=switches {
                    for j in 1..=hosts {
                        let h = (i - 1) * hosts + j;
                        links.push(link(format!("h{h}"), format!("s{i}")));
                    }
                }
                for i in 1..switches {
                    links.push(link(format!("s{i}"), format!("s{}", i + 1)));
                }
            }
            Shape::Star(n) => {
                for i in 1..=n {
                    links.push(link(format!("h{i}"), "s1".into()));
                }
            }
            Shape::Tree { fanout, .. } => {
                // Numbered breadth first: switch k's children are (k-1)*fanout+2 onwards.
                let inner = n_switches - self.leaves();
                for parent in 1..=inner {
                    for c in 0..fanout {
                        let child = (parent - 1) * fanout + 2 + c;
                        links.push(link(format!("s{parent}"), format!("s{child}")));
                    }
                }
                for (k, leaf) in (inner + 1..=n_switches).enumerate() {
                    for c in 0..fanout {
                        let host = k * fanout + c + 1;
                        links.push(link(format!("h{host}"), format!("s{leaf}")));
                    }
                }
            }
        }
        Ok(Topology {
            name: name.to_owned(),
            attach,
            switches,
            hosts,
            links,
        })
    }

    fn leaves(&self) -> usize {
        match *self {
            Shape::Tree { depth, fanout } => fanout.saturating_pow(depth.saturating_sub(1) as u32),
            Shape::Linear { .. } | Shape::Star(_) => 1,
        }
    }

    fn describe(&self) -> String {
        match *self {
            Shape::Linear { switches, hosts } => format!("linear:{switches},{hosts}"),
            Shape::Star(n) => format!("star:{n}"),
            Shape::Tree { depth, fanout } => format!("tree:{depth},{fanout}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(shape: &str) -> Topology {
        let subnet = "10.0.1.0/24".parse().unwrap();
        let topo = shape
            .parse::<Shape>()
            .unwrap()
            .build("t", subnet, Attach::Veth, &SwitchOptions::default())
            .unwrap();
        topo.validate().unwrap();
        topo
    }

    #[test]
    fn shapes_have_the_sizes_mininet_gives_them() {
        let t = build("linear:3");
        assert_eq!((t.switches.len(), t.hosts.len(), t.links.len()), (3, 3, 5));
        let t = build("linear:5,10");
        assert_eq!(
            (t.switches.len(), t.hosts.len(), t.links.len()),
            (5, 50, 54)
        );
        assert!(t.links.iter().any(|l| l.a == "h50" && l.b == "s5"));
        let t = build("star:4");
        assert_eq!((t.switches.len(), t.hosts.len(), t.links.len()), (1, 4, 4));
        let t = build("tree:3,2");
        assert_eq!((t.switches.len(), t.hosts.len()), (7, 8));
        // A tree: one link fewer than it has nodes.
        assert_eq!(t.links.len(), 7 + 8 - 1);
        let t = build("tree:1,5");
        assert_eq!((t.switches.len(), t.hosts.len(), t.links.len()), (1, 5, 5));
        assert_eq!(t.hosts[4].addresses[0].to_string(), "10.0.1.5/24");
    }

    #[test]
    fn bad_shapes_are_refused() {
        for bad in [
            "ring:3", "linear:0", "tree:2", "star:x", "star:251", "tree:9,9",
        ] {
            assert!(bad.parse::<Shape>().is_err(), "{bad}");
        }
    }
}
