//! ACL rules: match on MACs, EtherType, VLAN, IP prefixes, protocol, ports, ICMP type.
//!
//! Frames are parsed with etherparse's lax zero-copy slices; a frame that isn't the protocol a
//! match asks about simply doesn't match.

use std::fmt;
use std::net::IpAddr;

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

use crate::wire::{EthernetFrame, MacAddr};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// Stop evaluating rules; the frame passes on.
    Allow,
    /// Drop the frame.
    Drop,
    /// Count the frame and go on with the next rule.
    Count,
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Source MAC under a mask.
    SrcMac(MacAddr, MacAddr),
    /// Destination MAC under a mask.
    DstMac(MacAddr, MacAddr),
    /// The EtherType (after a VLAN tag).
    EtherType(u16),
    /// The 802.1Q VLAN id.
    Vlan(u16),
    /// Source address within a prefix.
    Src(IpAddr, u8),
    /// Destination address within a prefix.
    Dst(IpAddr, u8),
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    Proto(u8),
    /// TCP or UDP source port.
    SrcPort(u16),
    /// TCP or UDP destination port.
    DstPort(u16),
    /// ICMP or ICMPv6 type.
    IcmpType(u8),
}

/// A rule: all its matches must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What to do on a match.
    pub action: RuleAction,
    /// The conditions; none matches every frame.
    pub matches: Vec<Match>,
}

/// The parts of a frame rules look at, parsed once per frame.
#[derive(Debug, Default)]
struct Fields {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    ethertype: u16,
    vlan: Option<u16>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    proto: Option<u8>,
    ports: Option<(u16, u16)>,
    icmp_type: Option<u8>,
}

fn fields(frame: &[u8]) -> Fields {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Fields::default();
    };
    let mut f = Fields {
        src_mac: eth.src(),
        dst_mac: eth.dst(),
        ethertype: eth.ethertype(),
        vlan: eth.vlan().map(|v| v.get()),
        ..Fields::default()
    };
    if f.vlan.is_some() && frame.len() >= 18 {
        f.ethertype = u16::from_be_bytes([frame[16], frame[17]]);
    }
    let Ok(packet) = LaxSlicedPacket::from_ethernet(frame) else {
        return f;
    };
    match &packet.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            f.src = Some(IpAddr::V4(h.source_addr()));
            f.dst = Some(IpAddr::V4(h.destination_addr()));
            f.proto = Some(h.protocol().0);
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            f.src = Some(IpAddr::V6(h.source_addr()));
            f.dst = Some(IpAddr::V6(h.destination_addr()));
            f.proto = Some(h.next_header().0);
        }
        _ => {}
    }
    match &packet.transport {
        Some(TransportSlice::Tcp(t)) => {
            f.proto = Some(6);
            f.ports = Some((t.source_port(), t.destination_port()));
        }
        Some(TransportSlice::Udp(u)) => {
            f.proto = Some(17);
            f.ports = Some((u.source_port(), u.destination_port()));
        }
        Some(TransportSlice::Icmpv4(i)) => {
            f.proto = Some(1);
            f.icmp_type = Some(i.type_u8());
        }
        Some(TransportSlice::Icmpv6(i)) => {
            f.proto = Some(58);
            f.icmp_type = Some(i.type_u8());
        }
        _ => {}
    }
    f
}

fn in_prefix(addr: Option<IpAddr>, net: IpAddr, len: u8) -> bool {
    match (addr, net) {
        (Some(IpAddr::V4(a)), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (Some(IpAddr::V6(a)), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn masked_eq(a: MacAddr, b: MacAddr, mask: MacAddr) -> bool {
    (0..6).all(|i| a.0[i] & mask.0[i] == b.0[i] & mask.0[i])
}

impl Rule {
    fn matches(&self, f: &Fields) -> bool {
        self.matches.iter().all(|m| match *m {
            Match::SrcMac(mac, mask) => masked_eq(f.src_mac, mac, mask),
            Match::DstMac(mac, mask) => masked_eq(f.dst_mac, mac, mask),
            Match::EtherType(t) => f.ethertype == t,
            Match::Vlan(v) => f.vlan == Some(v),
            Match::Src(net, len) => in_prefix(f.src, net, len),
            Match::Dst(net, len) => in_prefix(f.dst, net, len),
            Match::Proto(p) => f.proto == Some(p),
            Match::SrcPort(p) => f.ports.is_some_and(|(s, _)| s == p),
            Match::DstPort(p) => f.ports.is_some_and(|(_, d)| d == p),
            Match::IcmpType(t) => f.icmp_type == Some(t),
        })
    }
}

/// Evaluates `rules` in order: the first allow or drop decides, counts add up on the way.
/// Returns whether the frame passes and bumps `hits[i]` for every rule that matched.
pub fn evaluate(rules: &[Rule], frame: &[u8], hits: &mut [u64]) -> bool {
    let f = fields(frame);
    for (rule, hit) in rules.iter().zip(hits.iter_mut()) {
        if rule.matches(&f) {
            *hit += 1;
            match rule.action {
                RuleAction::Allow => return true,
                RuleAction::Drop => return false,
                RuleAction::Count => {}
            }
        }
    }
    true
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            RuleAction::Allow => "allow",
            RuleAction::Drop => "drop",
            RuleAction::Count => "count",
        };
        write!(f, "filter {action}")?;
        for m in &self.matches {
            match m {
                Match::SrcMac(mac, mask) => write!(f, " src-mac {mac}/{mask}")?,
                Match::DstMac(mac, mask) => write!(f, " dst-mac {mac}/{mask}")?,
                Match::EtherType(t) => write!(f, " ethertype {t:#06x}")?,
                Match::Vlan(v) => write!(f, " vlan {v}")?,
                Match::Src(a, l) => write!(f, " src {a}/{l}")?,
                Match::Dst(a, l) => write!(f, " dst {a}/{l}")?,
                Match::Proto(p) => write!(f, " proto {p}")?,
                Match::SrcPort(p) => write!(f, " src-port {p}")?,
                Match::DstPort(p) => write!(f, " dst-port {p}")?,
                Match::IcmpType(t) => write!(f, " icmp-type {t}")?,
            }
        }
        Ok(())
    }
}

fn parse_number<T: std::str::FromStr>(word: Option<&&str>, what: &str) -> Result<T, String> {
    let w = word.ok_or_else(|| format!("{what} needs a value"))?;
    w.parse()
        .map_err(|_| format!("{what}: {w:?} is not a number"))
}

fn parse_mac_mask(word: Option<&&str>) -> Result<(MacAddr, MacAddr), String> {
    let w = word.ok_or("a MAC match needs a value")?;
    let (mac, mask) = match w.split_once('/') {
        Some((m, k)) => (m, Some(k)),
        None => (*w, None),
    };
    let mac: MacAddr = mac.parse().map_err(|e| format!("{e}"))?;
    let mask = match mask {
        Some(k) => k.parse().map_err(|e| format!("{e}"))?,
        None => MacAddr::BROADCAST,
    };
    Ok((mac, mask))
}

fn parse_prefix(word: Option<&&str>) -> Result<(std::net::IpAddr, u8), String> {
    let w = word.ok_or("an address match needs a value")?;
    let (addr, len) = match w.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (*w, None),
    };
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{w:?} is not an address or prefix"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or(format!("bad prefix length in {w:?}"))?,
        None => max,
    };
    Ok((addr, len))
}

impl Rule {
    /// Parses the words after `filter`: `allow|drop|count [MATCH VALUE]...`.
    pub(super) fn parse(words: &[&str]) -> Result<Rule, String> {
        let action = match words.first() {
            Some(&"allow") => RuleAction::Allow,
            Some(&"drop") => RuleAction::Drop,
            Some(&"count") => RuleAction::Count,
            _ => return Err("a filter starts with allow, drop or count".into()),
        };
        let mut matches = Vec::new();
        let mut it = words[1..].iter();
        while let Some(word) = it.next() {
            let m = match *word {
                "src-mac" => {
                    let (m, k) = parse_mac_mask(it.next())?;
                    Match::SrcMac(m, k)
                }
                "dst-mac" => {
                    let (m, k) = parse_mac_mask(it.next())?;
                    Match::DstMac(m, k)
                }
                "ethertype" => Match::EtherType(match it.next() {
                    Some(&"arp") => 0x0806,
                    Some(&"ipv4") => 0x0800,
                    Some(&"ipv6") => 0x86dd,
                    Some(w) if w.starts_with("0x") => u16::from_str_radix(&w[2..], 16)
                        .map_err(|_| format!("bad ethertype {w:?}"))?,
                    other => parse_number(other, "ethertype")?,
                }),
                "vlan" => Match::Vlan(parse_number(it.next(), "vlan")?),
                "src" => {
                    let (a, l) = parse_prefix(it.next())?;
                    Match::Src(a, l)
                }
                "dst" => {
                    let (a, l) = parse_prefix(it.next())?;
                    Match::Dst(a, l)
                }
                "proto" => Match::Proto(match it.next() {
                    Some(&"tcp") => 6,
                    Some(&"udp") => 17,
                    Some(&"icmp") => 1,
                    Some(&"icmpv6") => 58,
                    other => parse_number(other, "proto")?,
                }),
                "src-port" => Match::SrcPort(parse_number(it.next(), "src-port")?),
                "dst-port" => Match::DstPort(parse_number(it.next(), "dst-port")?),
                "icmp-type" => Match::IcmpType(parse_number(it.next(), "icmp-type")?),
                other => return Err(format!("unknown match {other:?}")),
            };
            matches.push(m);
        }
        Ok(Rule { action, matches })
    }
}
