//! A lab's topology: switches, hosts and the links between them, checked as a whole before
//! anything is made. Pure: no I/O; the file format and the generators build one, `up` makes it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use vswitch_core::{MacAddr, Pipeline, VlanMode};

/// The longest lab name: link names are `LABl<n>[ab]`, and the kernel allows 15 bytes.
pub const MAX_LAB_NAME: usize = 10;
/// The longest host or switch name (namespaces are `LAB-HOST`, control sockets `LAB-SWITCH`).
pub const MAX_NODE_NAME: usize = 12;
/// Link names carry the link's number in at most three digits.
pub const MAX_LINKS: usize = 999;

/// Where a node or link was declared, for error messages: a file's line, or a generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file, or the generator (`--topology linear:3`).
    pub source: String,
    /// The line in the file, if from one.
    pub line: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.source),
            None => write!(f, "{}", self.source),
        }
    }
}

/// An address with its prefix length, as on an interface (`10.0.1.1/24`, `fd00::1/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Why an address, subnet or route of a lab was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// `10.0.1.1` without `/24`.
    #[error("{0:?} needs a prefix length, like 10.0.1.1/24")]
    NoPrefix(String),
    /// Not an address.
    #[error("{text:?} is not an IP address")]
    Address {
        text: String,
        #[source]
        source: std::net::AddrParseError,
    },
    /// A prefix length beyond the family's.
    #[error("prefix {text:?} is not between 0 and {max}")]
    Prefix { text: String, max: u8 },
    /// Not `DST/LEN via GATEWAY`.
    #[error("{0:?} is not a route like \"10.0.2.0/24 via 10.0.1.254\"")]
    Route(String),
    /// A gateway that is no address.
    #[error("gateway {text:?} is not an IP address")]
    Gateway {
        text: String,
        #[source]
        source: std::net::AddrParseError,
    },
    /// A route whose gateway is of the other family.
    #[error("route {0:?} mixes IPv4 and IPv6")]
    Families(String),
}

impl std::str::FromStr for IfAddr {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| AddressError::NoPrefix(s.to_owned()))?;
        let addr: IpAddr = addr.parse().map_err(|source| AddressError::Address {
            text: addr.to_owned(),
            source,
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 =
            prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| AddressError::Prefix {
                    text: prefix.to_owned(),
                    max,
                })?;
        Ok(IfAddr { addr, prefix })
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl IfAddr {
    /// Whether `other` is in this address's subnet.
    pub fn contains(&self, other: IpAddr) -> bool {
        match (self.addr, other) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// A route in a host: `DST/PREFIX via GATEWAY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: IfAddr,
    pub via: IpAddr,
}

impl std::str::FromStr for Route {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let [dst, "via", via] = words.as_slice() else {
            return Err(AddressError::Route(s.to_owned()));
        };
        let dst: IfAddr = dst.parse()?;
        let via: IpAddr = via.parse().map_err(|source| AddressError::Gateway {
            text: (*via).to_owned(),
            source,
        })?;
        if dst.addr.is_ipv4() != via.is_ipv4() {
            return Err(AddressError::Families(s.to_owned()));
        }
        Ok(Route { dst, via })
    }
}

/// What a switch of the lab runs with; unset fields take the switch's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchOptions {
    pub ageing_time: Option<u64>,
    pub threads: Option<u16>,
    pub datapath: Option<vswitch_datapath::Datapath>,
    pub max_macs: Option<usize>,
}

/// A switch: one `Switch` with its own control socket `LAB-NAME`.
#[derive(Debug, Clone)]
pub struct SwitchNode {
    pub name: String,
    pub options: SwitchOptions,
    /// The switch's own addresses (a station port `self`), pinged by `lab check`.
    pub addresses: Vec<IfAddr>,
    /// More ports as on the command line (`vxlan:...` to a lab on another machine, `tap:...`).
    pub ports: Vec<String>,
    pub origin: Origin,
}

/// A host: a namespace with one interface per link, `eth0`, `eth1`, ...
#[derive(Debug, Clone)]
pub struct HostNode {
    pub name: String,
    /// Addresses of `eth0` (links may give addresses for the host's other interfaces).
    pub addresses: Vec<IfAddr>,
    pub mac: Option<MacAddr>,
    /// The MTU of the host's links where a link doesn't set its own.
    pub mtu: Option<u32>,
    pub gateways: Vec<IpAddr>,
    pub routes: Vec<Route>,
    /// IP forwarding on (a router between subnets).
    pub forward: bool,
    /// Shell commands run in the host's namespace once the lab is up, in order.
    pub run: Vec<String>,
    pub origin: Origin,
}

/// The impairments of one direction of a link, as pipeline stage parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Impairments {
    pub rate: Option<String>,
    pub queue: Option<String>,
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub loss: Option<String>,
    pub reorder: Option<String>,
    pub duplicate: Option<String>,
    pub corrupt: Option<String>,
    pub seed: Option<u64>,
}

/// The queue a shaped link gets when none is given: long enough for TCP to fill the rate.
pub const DEFAULT_QUEUE: &str = "50ms";

impl Impairments {
    /// Fields of `self`, or of `base` where `self` leaves them unset.
    pub fn or(&self, base: &Impairments) -> Impairments {
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        Impairments {
            rate: pick(&self.rate, &base.rate),
            queue: pick(&self.queue, &base.queue),
            delay: pick(&self.delay, &base.delay),
            jitter: pick(&self.jitter, &base.jitter),
            loss: pick(&self.loss, &base.loss),
            reorder: pick(&self.reorder, &base.reorder),
            duplicate: pick(&self.duplicate, &base.duplicate),
            corrupt: pick(&self.corrupt, &base.corrupt),
            seed: self.seed.or(base.seed),
        }
    }

    /// The pipeline text for these impairments (`rate ... ; impair ...`), or `None` for a
    /// clean link.
    pub fn pipeline(&self) -> Option<String> {
        let mut stages = Vec::new();
        if let Some(rate) = &self.rate {
            let queue = self.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
            stages.push(format!("rate {rate} queue {queue}"));
        }
        let mut impair = String::new();
        for (key, value) in [
            ("delay", &self.delay),
            ("jitter", &self.jitter),
            ("loss", &self.loss),
            ("reorder", &self.reorder),
            ("duplicate", &self.duplicate),
            ("corrupt", &self.corrupt),
        ] {
            if let Some(v) = value {
                impair.push_str(&format!(" {key} {v}"));
            }
        }
        if !impair.is_empty() {
            if let Some(seed) = self.seed {
                impair.push_str(&format!(" seed {seed}"));
            }
            stages.push(format!("impair{impair}"));
        }
        (!stages.is_empty()).then(|| stages.join("; "))
    }

    /// A short label for pictures: `50mbit 20ms 1%`.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.rate.clone());
        parts.extend(self.delay.clone());
        if let Some(loss) = &self.loss {
            parts.push(format!("loss {loss}"));
        }
        parts.join(" ")
    }
}

/// A link: a veth pair between its two ends.
#[derive(Debug, Clone)]
pub struct Link {
    pub a: String,
    pub b: String,
    pub mtu: Option<u32>,
    /// Frames from `a` to `b`.
    pub a_to_b: Impairments,
    /// Frames from `b` to `a`.
    pub b_to_a: Impairments,
    /// The VLAN mode of each switch end, by switch name.
    pub vlan: BTreeMap<String, VlanMode>,
    /// Addresses of the host end, for a host's second and later links.
    pub addresses: Vec<IfAddr>,
    /// The host joins by a TUN device (IP packets only) instead of an Ethernet link: the
    /// switch's TUN port stands for the host's addresses on the segment (ARP, NDP).
    pub tun: bool,
    pub origin: Origin,
}

/// How hosts attach to their switch.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Attach {
    /// A veth pair: `ethN` in the host, a `dev:` port of the switch (the fast path's kind).
    #[default]
    Veth,
    /// A TAP of the switch moved into the host and renamed `ethN`: every frame in userspace.
    Tap,
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attach::Veth => "veth",
            Attach::Tap => "tap",
        })
    }
}

/// `1 switch`, `2 switches`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A whole lab.
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    pub attach: Attach,
    pub switches: Vec<SwitchNode>,
    pub hosts: Vec<HostNode>,
    pub links: Vec<Link>,
}

/// A node, as a link end.
#[derive(Debug, Clone, Copy)]
pub enum Node<'a> {
    Switch(&'a SwitchNode),
    Host(&'a HostNode),
}

/// Where one end of a link lands, once made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Port `port` of switch `switch`.
    Switch { switch: String, port: String },
    /// Interface `ifname` in host `host`'s namespace.
    Host { host: String, ifname: String },
}

/// Checks a lab or node name: letters, digits (and `-` in lab names), bounded length.
pub fn check_name(kind: &str, name: &str, max: usize, dash: bool) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || (dash && c == '-');
    if name.is_empty() || !name.chars().all(ok_char) {
        return Err(format!(
            "{kind} name {name:?} must be letters, digits or '_'{}",
            if dash { " or '-'" } else { "" }
        ));
    }
    if name.len() > max {
        return Err(format!(
            "{kind} name {name:?} is {} characters; at most {max} fit once prefixed into link and namespace names",
            name.len()
        ));
    }
    Ok(())
}

impl Topology {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<Node<'_>> {
        self.switches
            .iter()
            .find(|s| s.name == name)
            .map(Node::Switch)
            .or_else(|| self.hosts.iter().find(|h| h.name == name).map(Node::Host))
    }

    /// The host's namespace.
    pub fn netns(&self, host: &str) -> String {
        format!("{}-{host}", self.name)
    }

    /// The control-socket name of a switch.
    pub fn switch_name(&self, switch: &str) -> String {
        format!("{}-{switch}", self.name)
    }

    /// Link `i`'s MTU: its own, or a host end's.
    pub fn link_mtu(&self, i: usize) -> Option<u32> {
        let link = &self.links[i];
        link.mtu.or_else(|| {
            [&link.a, &link.b]
                .into_iter()
                .find_map(|n| match self.node(n) {
                    Some(Node::Host(h)) => h.mtu,
                    _ => None,
                })
        })
    }

    /// `3 switches, 6 hosts, 8 links`.
    pub fn summary(&self) -> String {
        format!(
            "{}, {}, {}",
            count(self.switches.len(), "switch", "switches"),
            count(self.hosts.len(), "host", "hosts"),
            count(self.links.len(), "link", "links")
        )
    }

    /// The links of `host`, in order, with the interface each gets (`eth0`, `eth1`, ...).
    pub fn host_links(&self, host: &str) -> Vec<(usize, String)> {
        self.links
            .iter()
            .enumerate()
            .filter(|(_, l)| l.a == host || l.b == host)
            .enumerate()
            .map(|(k, (i, _))| (i, format!("eth{k}")))
            .collect()
    }

    /// The addresses of `host`'s interface on link `i`, its `k`th: a link's own, and for the
    /// first, the host's `addresses` (`validate` allows only one of the two).
    pub fn interface_addresses(&self, host: &HostNode, k: usize, i: usize) -> Vec<IfAddr> {
        let own = self.links[i].addresses.iter().copied();
        if k == 0 {
            host.addresses.iter().copied().chain(own).collect()
        } else {
            own.collect()
        }
    }

    /// All of `host`'s addresses, eth0's first.
    pub fn host_addresses(&self, host: &HostNode) -> Vec<IfAddr> {
        self.host_links(&host.name)
            .iter()
            .enumerate()
            .flat_map(|(k, (i, _))| self.interface_addresses(host, k, *i))
            .collect()
    }

    /// Link `i`'s two ends: (end at `a`, end at `b`). A host's end is its `ethN`; a switch's
    /// port is `LABl<i+1>` on a host link and `LABl<i+1>a`/`b` between two switches.
    pub fn ends(&self, i: usize) -> (End, End) {
        let link = &self.links[i];
        let both_switches = matches!(
            (self.node(&link.a), self.node(&link.b)),
            (Some(Node::Switch(_)), Some(Node::Switch(_)))
        );
        let end = |node: &str, side: &str| match self.node(node) {
            Some(Node::Host(h)) => End::Host {
                host: h.name.clone(),
                ifname: self
                    .host_links(&h.name)
                    .into_iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, ifname)| ifname)
                    .unwrap_or_default(),
            },
            // (An unknown node is refused by `validate`; it is named as given here.)
            other => End::Switch {
                switch: match other {
                    Some(Node::Switch(s)) => s.name.clone(),
                    _ => node.to_owned(),
                },
                port: if both_switches {
                    format!("{}l{}{side}", self.name, i + 1)
                } else {
                    format!("{}l{}", self.name, i + 1)
                },
            },
        };
        (end(&link.a, "a"), end(&link.b, "b"))
    }

    /// Every check that needs the whole lab: names, references, addresses, loops. The first
    /// problem is reported with where it was declared.
    pub fn validate(&self) -> Result<(), String> {
        check_name("lab", &self.name, MAX_LAB_NAME, true)?;
        if self.hosts.is_empty() && self.switches.is_empty() {
            return Err("the lab has no switches and no hosts".into());
        }
        if self.links.len() > MAX_LINKS {
            return Err(format!(
                "{} links; a lab has at most {MAX_LINKS}",
                self.links.len()
            ));
        }
        let mut seen: HashMap<&str, &Origin> = HashMap::new();
        let nodes = self
            .switches
            .iter()
            .map(|s| ("switch", &s.name, &s.origin))
            .chain(self.hosts.iter().map(|h| ("host", &h.name, &h.origin)));
        for (kind, name, origin) in nodes {
            check_name(kind, name, MAX_NODE_NAME, false).map_err(|e| format!("{origin}: {e}"))?;
            if let Some(first) = seen.insert(name, origin) {
                return Err(format!(
                    "{origin}: {kind} {name}: the name is taken by a node declared at {first}"
                ));
            }
        }
        for link in &self.links {
            self.validate_link(link)?;
        }
        for host in &self.hosts {
            self.validate_host(host)?;
        }
        self.refuse_loops()
    }

    fn validate_link(&self, link: &Link) -> Result<(), String> {
        let at = &link.origin;
        let a = self
            .node(&link.a)
            .ok_or_else(|| format!("{at}: links: endpoint {:?} is no switch or host", link.a))?;
        let b = self
            .node(&link.b)
            .ok_or_else(|| format!("{at}: links: endpoint {:?} is no switch or host", link.b))?;
        if link.a == link.b {
            return Err(format!("{at}: links: both ends are {}", link.a));
        }
        if let (Node::Host(_), Node::Host(_)) = (a, b)
            && (link.a_to_b.pipeline().is_some() || link.b_to_a.pipeline().is_some())
        {
            return Err(format!(
                "{at}: links: {} -- {} joins two hosts directly (a cable): impairments need a switch end",
                link.a, link.b
            ));
        }
        if let Some(mtu) = link.mtu {
            check_mtu(mtu).map_err(|e| format!("{at}: links: {e}"))?;
        }
        for switch in link.vlan.keys() {
            if *switch != link.a && *switch != link.b
                || !matches!(self.node(switch), Some(Node::Switch(_)))
            {
                return Err(format!(
                    "{at}: links: vlan: {switch:?} is not a switch end of this link"
                ));
            }
        }
        for (dir, imp) in [("a_to_b", &link.a_to_b), ("b_to_a", &link.b_to_a)] {
            if let Some(p) = imp.pipeline() {
                Pipeline::parse(&p).map_err(|e| format!("{at}: links: {dir}: {e}"))?;
            }
        }
        if link.tun
            && !matches!(
                (a, b),
                (Node::Host(_), Node::Switch(_)) | (Node::Switch(_), Node::Host(_))
            )
        {
            return Err(format!(
                "{at}: links: tun joins a host to a switch; {} -- {} is not such a link",
                link.a, link.b
            ));
        }
        let host_end = matches!(a, Node::Host(_)) || matches!(b, Node::Host(_));
        if !link.addresses.is_empty() && !host_end {
            return Err(format!(
                "{at}: links: addresses are for a host end, and this link joins two switches"
            ));
        }
        if !link.addresses.is_empty() && matches!((a, b), (Node::Host(_), Node::Host(_))) {
            return Err(format!(
                "{at}: links: between two hosts, give each host's addresses in its own table"
            ));
        }
        Ok(())
    }

    fn validate_host(&self, host: &HostNode) -> Result<(), String> {
        let at = &host.origin;
        if let Some(mtu) = host.mtu {
            check_mtu(mtu).map_err(|e| format!("{at}: hosts.{}: {e}", host.name))?;
        }
        let links = self.host_links(&host.name);
        if links.is_empty() {
            return Err(format!(
                "{at}: host {}: no link joins it to anything",
                host.name
            ));
        }
        // Every address of the host, on every interface.
        let all = self.host_addresses(host);
        if !host.addresses.is_empty()
            && let Some((i, _)) = links.first()
            && !self.links[*i].addresses.is_empty()
        {
            return Err(format!(
                "{}: links: addresses: the host's first link gets hosts.{}.addresses; give them in one place",
                self.links[*i].origin, host.name
            ));
        }
        for (k, (i, ifname)) in links.iter().enumerate() {
            if !self.links[*i].tun {
                continue;
            }
            if self.interface_addresses(host, k, *i).is_empty() {
                return Err(format!(
                    "{}: links: host {}'s {ifname} is a TUN link: it needs addresses (the switch's port stands for them)",
                    self.links[*i].origin, host.name
                ));
            }
            if k == 0 && host.mac.is_some() {
                return Err(format!(
                    "{at}: hosts.{}.mac: its eth0 is a TUN link, which has no MAC",
                    host.name
                ));
            }
        }
        let on_link = |gw: IpAddr| all.iter().any(|a| a.contains(gw) && a.addr != gw);
        for gw in &host.gateways {
            if !on_link(*gw) {
                return Err(format!(
                    "{at}: hosts.{}.gateway: {gw} is outside the host's subnets ({})",
                    host.name,
                    list(&all)
                ));
            }
        }
        for route in &host.routes {
            if !on_link(route.via) {
                return Err(format!(
                    "{at}: hosts.{}.routes: gateway {} is outside the host's subnets ({})",
                    host.name,
                    route.via,
                    list(&all)
                ));
            }
        }
        Ok(())
    }

    /// Switches joined in a cycle flood frames around it forever (there is no spanning tree
    /// yet), so a topology with one is refused.
    fn refuse_loops(&self) -> Result<(), String> {
        let index: HashMap<&str, usize> = self
            .switches
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut parent: Vec<usize> = (0..self.switches.len()).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for link in &self.links {
            let (Some(&a), Some(&b)) = (index.get(link.a.as_str()), index.get(link.b.as_str()))
            else {
                continue;
            };
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            if ra == rb {
                return Err(format!(
                    "{}: links: {} -- {} closes a loop among the switches; frames would circle it forever (vswitch has no spanning tree yet): remove a link",
                    link.origin, link.a, link.b
                ));
            }
            parent[ra] = rb;
        }
        Ok(())
    }
}

fn check_mtu(mtu: u32) -> Result<(), String> {
    if (68..=65535).contains(&mtu) {
        Ok(())
    } else {
        Err(format!("mtu {mtu} is not between 68 and 65535"))
    }
}

fn list(addrs: &[IfAddr]) -> String {
    if addrs.is_empty() {
        return "none".into();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
