//! An IP device on an Ethernet segment: what a TUN port does between the IP packets of its
//! device and the frames of the switch.
//!
//! The port stands for the addresses it is given (`tun:tun0=10.0.1.9/24+fd00::9/64`): it
//! answers ARP (IPv4) and neighbour solicitations (IPv6, RFC 4861) for them from a MAC of its
//! own, takes frames for that MAC (or multicast) as IP packets for the device, and sends the
//! device's packets as frames to the next hop's MAC, which it resolves by ARP or neighbour
//! discovery and caches (aged). A packet for an address not yet resolved waits (a few per
//! address, bounded) while the port asks.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum::{fold, sum_bytes};
use crate::time::Timestamp;
use crate::wire::MacAddr;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// How long a resolved neighbour is trusted.
const CACHE_AGEING_MS: u64 = 300_000;
/// How often a still unresolved address may be asked for again.
const RETRY_MS: u64 = 1_000;
/// Packets waiting per unresolved address, and in all.
const PENDING_PER_ADDRESS: usize = 8;
const PENDING_BYTES: usize = 1 << 20;
/// Neighbours cached at most.
const CACHE_CAPACITY: usize = 4096;

/// Why a packet from the device goes nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketDrop {
    /// Not an IP packet whose header and lengths add up.
    Malformed,
    /// Its destination is not on the port's subnets (the port routes nothing).
    NoRoute,
    /// Its next hop is unresolved and enough packets already wait for it.
    PendingFull,
}

/// What the port sends into the switch for a packet from its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromDevice {
    /// Send the packet (its first `len` bytes: an IP packet's own length) behind this Ethernet
    /// header, to its next hop. Only the header is made: the caller puts it in front of the
    /// packet where it already is, so a 64 KiB segment is never copied here.
    Send {
        /// Destination, the port's MAC, EtherType.
        header: [u8; 14],
        /// The packet's length.
        len: usize,
    },
    /// An ARP request or a neighbour solicitation for the next hop; the packet waits.
    Resolve(Vec<u8>),
    /// The packet waits: a request for its next hop went out a moment ago.
    Waiting,
    /// Dropped, for this reason.
    Drop(PacketDrop),
}

/// What the port does with a frame from the switch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromSwitch {
    /// Where in the frame the IP packet for the device is, if the frame carried one for it.
    pub packet: Option<std::ops::Range<usize>>,
    /// Frames to send into the switch: an ARP reply or a neighbour advertisement, packets that
    /// waited for this answer.
    pub frames: Vec<Vec<u8>>,
}

/// The port's addresses, neighbours and waiting packets.
#[derive(Debug)]
pub struct L3Port {
    mac: MacAddr,
    addresses: Vec<(IpAddr, u8)>,
    cache: HashMap<IpAddr, (MacAddr, Timestamp)>,
    pending: HashMap<IpAddr, (VecDeque<Vec<u8>>, Timestamp)>,
    pending_bytes: usize,
}

/// Whether `a` and `b` share their first `prefix` bits (false across families).
fn same_subnet(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The solicited-node multicast address of `target` (ff02::1:ffXX:XXXX).
fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let o = target.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet multicast MAC of an IPv6 multicast address (33:33 and its last 32 bits).
fn ipv6_multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The ICMPv6 checksum of `message` between `src` and `dst` (RFC 4443: over a pseudo-header);
/// with the checksum field zero, the value to put there; over a received message, zero if
/// it verifies.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum = sum_bytes(0, &src.octets());
    sum = sum_bytes(sum, &dst.octets());
    sum = sum_bytes(sum, &(message.len() as u32).to_be_bytes());
    sum = sum_bytes(sum, &[0, 0, 0, ICMPV6]);
    !fold(sum_bytes(sum, message))
}

/// An IPv6 packet carrying ICMPv6 `message` (checksum filled in) with hop limit 255, as
/// neighbour discovery requires.
fn icmpv6_packet(src: Ipv6Addr, dst: Ipv6Addr, mut message: Vec<u8>) -> Vec<u8> {
    let sum = icmpv6_checksum(src, dst, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(message.len() as u16).to_be_bytes());
    p.extend_from_slice(&[ICMPV6, 255]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&message);
    p
}

/// A neighbour solicitation or advertisement in `packet`, checked as RFC 4861 asks (hop limit
/// 255, code 0, a checksum that verifies): its type, source address, target and link-layer
/// address option, if any.
fn parse_nd(packet: &[u8]) -> Option<(u8, Ipv6Addr, Ipv6Addr, Option<MacAddr>)> {
    if packet.len() < 40 + 24 || packet[6] != ICMPV6 || packet[7] != 255 {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?);
    let message = &packet[40..];
    let kind = message[0];
    if !matches!(kind, NEIGHBOR_SOLICITATION | NEIGHBOR_ADVERTISEMENT)
        || message[1] != 0
        || icmpv6_checksum(src, dst, message) != 0
    {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&message[8..24]).ok()?);
    let mut options = &message[24..];
    let mut link = None;
    while options.len() >= 8 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        // Source (1) in a solicitation, target (2) in an advertisement.
        if matches!(options[0], 1 | 2) && len == 8 {
            link = Some(MacAddr(options[2..8].try_into().ok()?));
        }
        options = &options[len..];
    }
    Some((kind, src, target, link))
}

impl L3Port {
    /// A port with MAC `mac` standing for `addresses` (address, prefix length).
    pub fn new(mac: MacAddr, addresses: Vec<(IpAddr, u8)>) -> L3Port {
        L3Port {
            mac,
            addresses,
            cache: HashMap::new(),
            pending: HashMap::new(),
            pending_bytes: 0,
        }
    }

    /// The port's MAC.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    fn on_link(&self, ip: IpAddr) -> bool {
        self.addresses
            .iter()
            .any(|(a, prefix)| same_subnet(*a, ip, *prefix))
    }

    fn is_ours(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|(a, _)| *a == ip)
    }

    /// Whether `ip` is one of the port's addresses.
    pub fn stands_for(&self, ip: IpAddr) -> bool {
        self.is_ours(ip)
    }

    fn is_broadcast(&self, ip: Ipv4Addr) -> bool {
        ip == Ipv4Addr::BROADCAST
            || self.addresses.iter().any(|(a, prefix)| {
                let IpAddr::V4(a) = a else { return false };
                let host = u32::MAX.checked_shr(u32::from(*prefix)).unwrap_or(0);
                *prefix < 31 && u32::from(*a) | host == u32::from(ip)
            })
    }

    fn frame(&self, dst: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + payload.len());
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&self.mac.0);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// [`FromDevice::Send`] of `packet` to `dst`.
    fn send(&self, dst: MacAddr, ethertype: u16, packet: &[u8]) -> FromDevice {
        let mut header = [0u8; 14];
        header[..6].copy_from_slice(&dst.0);
        header[6..12].copy_from_slice(&self.mac.0);
        header[12..].copy_from_slice(&ethertype.to_be_bytes());
        FromDevice::Send {
            header,
            len: packet.len(),
        }
    }

    fn arp(&self, op: u16, target_mac: MacAddr, target: Ipv4Addr, sender: Ipv4Addr) -> Vec<u8> {
        let mut a = Vec::with_capacity(28);
        a.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&self.mac.0);
        a.extend_from_slice(&sender.octets());
        a.extend_from_slice(&target_mac.0);
        a.extend_from_slice(&target.octets());
        let dst = if op == 1 {
            MacAddr::BROADCAST
        } else {
            target_mac
        };
        let mut f = self.frame(dst, ETHERTYPE_ARP, &a);
        f.resize(60, 0);
        f
    }

    /// A neighbour solicitation for `target`, to its solicited-node group.
    fn solicitation(&self, target: Ipv6Addr, sender: Ipv6Addr) -> Vec<u8> {
        let mut m = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&self.mac.0);
        let group = solicited_node(target);
        let packet = icmpv6_packet(sender, group, m);
        self.frame(ipv6_multicast_mac(group), ETHERTYPE_IPV6, &packet)
    }

    /// A solicited neighbour advertisement of our `target` to `to` (at `to_mac`).
    fn advertisement(&self, target: Ipv6Addr, to: Ipv6Addr, to_mac: MacAddr) -> Vec<u8> {
        // Solicited and override; not a router.
        let mut m = vec![NEIGHBOR_ADVERTISEMENT, 0, 0, 0, 0x60, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&[2, 1]);
        m.extend_from_slice(&self.mac.0);
        let packet = icmpv6_packet(target, to, m);
        self.frame(to_mac, ETHERTYPE_IPV6, &packet)
    }

    /// The source address to ask with: one of ours on `target`'s subnet.
    fn sender_for(&self, target: IpAddr) -> Option<IpAddr> {
        self.addresses
            .iter()
            .find(|(a, p)| same_subnet(*a, target, *p))
            .map(|(a, _)| *a)
    }

    /// Takes an IP packet the device sent.
    pub fn from_device(&mut self, packet: &[u8], now: Timestamp) -> FromDevice {
        self.from_device_waiting(packet, now, true)
    }

    /// [`L3Port::from_device`]; with `may_wait` false, a packet whose next hop is unresolved is
    /// not kept to wait (the caller can't keep what goes with it, such as a GSO header): the
    /// port asks for the next hop all the same and answers `Drop(PendingFull)` or the request.
    pub fn from_device_waiting(
        &mut self,
        packet: &[u8],
        now: Timestamp,
        may_wait: bool,
    ) -> FromDevice {
        let (packet, dst, ethertype) = if let Some(p) = ipv4_packet(packet) {
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            if dst.is_multicast() {
                let o = dst.octets();
                let mac = MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]);
                return self.send(mac, ETHERTYPE_IPV4, p);
            }
            if self.is_broadcast(dst) {
                return self.send(MacAddr::BROADCAST, ETHERTYPE_IPV4, p);
            }
            (p, IpAddr::V4(dst), ETHERTYPE_IPV4)
        } else if let Some(p) = ipv6_packet(packet) {
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap_or([0; 16]));
            if dst.is_multicast() {
                return self.send(ipv6_multicast_mac(dst), ETHERTYPE_IPV6, p);
            }
            (p, IpAddr::V6(dst), ETHERTYPE_IPV6)
        } else {
            return FromDevice::Drop(PacketDrop::Malformed);
        };
        if !self.on_link(dst) {
            return FromDevice::Drop(PacketDrop::NoRoute);
        }
        if let Some((mac, seen)) = self.cache.get(&dst)
            && now.millis().saturating_sub(seen.millis()) < CACHE_AGEING_MS
        {
            return self.send(*mac, ethertype, packet);
        }
        let asked_lately = self
            .pending
            .get(&dst)
            .is_some_and(|(_, asked)| now.millis().saturating_sub(asked.millis()) < RETRY_MS);
        if !may_wait {
            if asked_lately {
                return FromDevice::Drop(PacketDrop::PendingFull);
            }
            // Remember the question (with nothing waiting), so it isn't asked per packet.
            self.pending
                .entry(dst)
                .or_insert_with(|| (VecDeque::new(), now))
                .1 = now;
            return FromDevice::Resolve(self.request_for(dst));
        }
        let (queue, asked) = self
            .pending
            .entry(dst)
            .or_insert_with(|| (VecDeque::new(), now));
        if queue.len() >= PENDING_PER_ADDRESS || self.pending_bytes + packet.len() > PENDING_BYTES {
            return FromDevice::Drop(PacketDrop::PendingFull);
        }
        queue.push_back(packet.to_vec());
        self.pending_bytes += packet.len();
        if asked_lately {
            return FromDevice::Waiting;
        }
        *asked = now;
        FromDevice::Resolve(self.request_for(dst))
    }

    /// An ARP request or a neighbour solicitation for `dst`.
    fn request_for(&self, dst: IpAddr) -> Vec<u8> {
        match (dst, self.sender_for(dst)) {
            (IpAddr::V4(dst), sender) => {
                let sender = match sender {
                    Some(IpAddr::V4(s)) => s,
                    _ => Ipv4Addr::UNSPECIFIED,
                };
                self.arp(1, MacAddr([0; 6]), dst, sender)
            }
            (IpAddr::V6(dst), sender) => {
                let sender = match sender {
                    Some(IpAddr::V6(s)) => s,
                    _ => Ipv6Addr::UNSPECIFIED,
                };
                self.solicitation(dst, sender)
            }
        }
    }

    /// Remembers that `ip` is at `mac` (if it is a neighbour), and sends what waited for it.
    fn learn(&mut self, ip: IpAddr, mac: MacAddr, now: Timestamp, out: &mut FromSwitch) {
        if !mac.is_valid_source() || !self.on_link(ip) || self.is_ours(ip) {
            return;
        }
        if self.cache.len() >= CACHE_CAPACITY && !self.cache.contains_key(&ip) {
            self.cache.retain(|_, (_, seen)| {
                now.millis().saturating_sub(seen.millis()) < CACHE_AGEING_MS
            });
        }
        if self.cache.len() < CACHE_CAPACITY {
            self.cache.insert(ip, (mac, now));
        }
        if let Some((waiting, _)) = self.pending.remove(&ip) {
            let ethertype = if ip.is_ipv4() {
                ETHERTYPE_IPV4
            } else {
                ETHERTYPE_IPV6
            };
            for packet in waiting {
                self.pending_bytes -= packet.len();
                out.frames.push(self.frame(mac, ethertype, &packet));
            }
        }
    }

    /// Takes a frame the switch sent to the port.
    pub fn from_switch(&mut self, frame: &[u8], now: Timestamp) -> FromSwitch {
        let mut out = FromSwitch::default();
        if frame.len() < 14 {
            return out;
        }
        let dst = MacAddr(frame[..6].try_into().unwrap_or([0; 6]));
        let src = MacAddr(frame[6..12].try_into().unwrap_or([0; 6]));
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let body = &frame[14..];
        match ethertype {
            ETHERTYPE_ARP if body.len() >= 28 && body[..6] == [0, 1, 8, 0, 6, 4] => {
                let op = u16::from_be_bytes([body[6], body[7]]);
                let sender_mac = MacAddr(body[8..14].try_into().unwrap_or([0; 6]));
                let sender = Ipv4Addr::new(body[14], body[15], body[16], body[17]);
                let target = Ipv4Addr::new(body[24], body[25], body[26], body[27]);
                self.learn(IpAddr::V4(sender), sender_mac, now, &mut out);
                if op == 1 && self.is_ours(IpAddr::V4(target)) {
                    out.frames.push(self.arp(2, sender_mac, sender, target));
                }
            }
            ETHERTYPE_IPV4 if dst == self.mac || dst.is_multicast() => {
                out.packet = ipv4_packet(body).map(|p| 14..14 + p.len());
            }
            ETHERTYPE_IPV6 if dst == self.mac || dst.is_multicast() => {
                let Some(packet) = ipv6_packet(body) else {
                    return out;
                };
                match parse_nd(packet) {
                    Some((NEIGHBOR_SOLICITATION, from, target, link)) => {
                        // The solicitor's address is at its link-layer option's MAC (or the
                        // frame's source); DAD probes come from :: and teach nothing.
                        let from_mac = link.unwrap_or(src);
                        if !from.is_unspecified() {
                            self.learn(IpAddr::V6(from), from_mac, now, &mut out);
                        }
                        if self.is_ours(IpAddr::V6(target)) && !from.is_unspecified() {
                            out.frames.push(self.advertisement(target, from, from_mac));
                        }
                    }
                    Some((_, _, target, link)) => {
                        self.learn(IpAddr::V6(target), link.unwrap_or(src), now, &mut out);
                    }
                    // Not neighbour discovery: the device's, if it is for us or a group.
                    None => {
                        let to = Ipv6Addr::from(
                            <[u8; 16]>::try_from(&packet[24..40]).unwrap_or([0; 16]),
                        );
                        if to.is_multicast() || self.is_ours(IpAddr::V6(to)) {
                            out.packet = Some(14..14 + packet.len());
                        }
                    }
                }
            }
            _ => {}
        }
        out
    }
}

/// `packet` cut to its IPv4 total length, if it is an IPv4 packet whose header and lengths add
/// up.
fn ipv4_packet(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || packet.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total < ihl || total > packet.len() {
        return None;
    }
    Some(&packet[..total])
}

/// `packet` cut to its IPv6 length (header and payload length), if it is an IPv6 packet whose
/// length adds up.
fn ipv6_packet(packet: &[u8]) -> Option<&[u8]> {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return None;
    }
    let total = 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    (total <= packet.len()).then(|| &packet[..total])
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 9]);

    /// The frame a [`FromDevice::Send`] of `packet` stands for, if it is one.
    fn sent(out: FromDevice, packet: &[u8]) -> Option<Vec<u8>> {
        match out {
            FromDevice::Send { header, len } => Some([&header[..], &packet[..len]].concat()),
            _ => None,
        }
    }
    const PEER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);

    fn port() -> L3Port {
        L3Port::new(
            OURS,
            vec![
                (IpAddr::V4(Ipv4Addr::new(10, 0, 1, 9)), 24),
                (IpAddr::V6(V6_OURS), 64),
            ],
        )
    }

    const V6_OURS: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9);
    const V6_PEER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);

    fn v6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: usize) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload as u16).to_be_bytes());
        p.extend_from_slice(&[17, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.resize(40 + payload, 7);
        p
    }

    #[test]
    fn an_ipv6_packet_waits_for_neighbour_discovery_and_the_port_answers_for_its_own() {
        let mut p = port();
        let t = Timestamp::from_secs(1);
        let first = v6_packet(V6_OURS, V6_PEER, 20);
        let FromDevice::Resolve(ns) = p.from_device(&first, t) else {
            panic!("no solicitation")
        };
        // To the solicited-node group of fd00::1, from our MAC, a valid solicitation for it.
        assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0, 0, 1]);
        assert_eq!(&ns[12..14], &[0x86, 0xdd]);
        let (kind, from, target, link) = parse_nd(&ns[14..]).expect("a valid solicitation");
        assert_eq!(
            (kind, from, target, link),
            (NEIGHBOR_SOLICITATION, V6_OURS, V6_PEER, Some(OURS))
        );
        // The peer advertises itself: the waiting packet goes to its MAC.
        let mut na = vec![NEIGHBOR_ADVERTISEMENT, 0, 0, 0, 0x60, 0, 0, 0];
        na.extend_from_slice(&V6_PEER.octets());
        na.extend_from_slice(&[2, 1]);
        na.extend_from_slice(&PEER.0);
        let na = icmpv6_packet(V6_PEER, V6_OURS, na);
        let mut frame = OURS.0.to_vec();
        frame.extend_from_slice(&PEER.0);
        frame.extend_from_slice(&[0x86, 0xdd]);
        frame.extend_from_slice(&na);
        let out = p.from_switch(&frame, t);
        assert_eq!(out.frames.len(), 1);
        assert_eq!(
            (&out.frames[0][..6], &out.frames[0][14..]),
            (&PEER.0[..], &first[..])
        );
        // A corrupted advertisement teaches nothing.
        let mut bad = frame.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut q = port();
        let _ = q.from_device(&first, t);
        assert!(q.from_switch(&bad, t).frames.is_empty(), "checksum checked");
        // The peer asks for us: a solicited advertisement back, to its MAC, that verifies.
        let mut solicit = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        solicit.extend_from_slice(&V6_OURS.octets());
        solicit.extend_from_slice(&[1, 1]);
        solicit.extend_from_slice(&PEER.0);
        let group = solicited_node(V6_OURS);
        let mut frame = ipv6_multicast_mac(group).0.to_vec();
        frame.extend_from_slice(&PEER.0);
        frame.extend_from_slice(&[0x86, 0xdd]);
        frame.extend_from_slice(&icmpv6_packet(V6_PEER, group, solicit));
        let out = p.from_switch(&frame, t);
        assert_eq!(out.frames.len(), 1);
        let reply = &out.frames[0];
        assert_eq!(&reply[..6], &PEER.0);
        let (kind, from, target, link) = parse_nd(&reply[14..]).expect("a valid advertisement");
        assert_eq!(
            (kind, from, target, link),
            (NEIGHBOR_ADVERTISEMENT, V6_OURS, V6_OURS, Some(OURS))
        );
        // An IPv6 packet to our address is the device's; neighbour discovery never is.
        let mut data = OURS.0.to_vec();
        data.extend_from_slice(&PEER.0);
        data.extend_from_slice(&[0x86, 0xdd]);
        let inner = v6_packet(V6_PEER, V6_OURS, 8);
        data.extend_from_slice(&inner);
        let got = p.from_switch(&data, t).packet.map(|r| data[r].to_vec());
        assert_eq!(got, Some(inner));
        assert_eq!(p.from_switch(&frame, t).packet, None);
    }

    fn packet(dst: [u8; 4], len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[9] = 1;
        p[12..16].copy_from_slice(&[10, 0, 1, 9]);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn arp_reply(from: MacAddr, ip: [u8; 4]) -> Vec<u8> {
        let mut f = OURS.0.to_vec();
        f.extend_from_slice(&from.0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        f.extend_from_slice(&from.0);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&OURS.0);
        f.extend_from_slice(&[10, 0, 1, 9]);
        f
    }

    #[test]
    fn a_packet_waits_for_arp_then_goes_to_the_resolved_mac() {
        let mut p = port();
        let t = Timestamp::from_secs(1);
        let first = packet([10, 0, 1, 1], 40);
        let FromDevice::Resolve(request) = p.from_device(&first, t) else {
            panic!("no ARP request")
        };
        assert_eq!(&request[..6], &[0xff; 6]);
        assert_eq!(&request[12..14], &[0x08, 0x06]);
        assert_eq!(
            &request[14 + 24..14 + 28],
            &[10, 0, 1, 1],
            "asks for the next hop"
        );
        assert_eq!(
            p.from_device(&packet([10, 0, 1, 1], 41), t),
            FromDevice::Waiting
        );
        let answer = p.from_switch(&arp_reply(PEER, [10, 0, 1, 1]), t);
        assert_eq!(answer.frames.len(), 2, "both waiting packets go out");
        assert_eq!(&answer.frames[0][..6], &PEER.0);
        assert_eq!(&answer.frames[0][14..], &first[..]);
        let again = packet([10, 0, 1, 1], 40);
        let Some(f) = sent(p.from_device(&again, t), &again) else {
            panic!("not sent at once once resolved")
        };
        assert_eq!(&f[..6], &PEER.0);
    }

    #[test]
    fn a_packet_that_may_not_wait_asks_and_is_dropped() {
        let mut p = port();
        let t = Timestamp::from_secs(1);
        let big = packet([10, 0, 1, 1], 40);
        assert!(matches!(
            p.from_device_waiting(&big, t, false),
            FromDevice::Resolve(_)
        ));
        assert_eq!(
            p.from_device_waiting(&big, t, false),
            FromDevice::Drop(PacketDrop::PendingFull),
            "asked a moment ago: not again"
        );
        let answer = p.from_switch(&arp_reply(PEER, [10, 0, 1, 1]), t);
        assert!(answer.frames.is_empty(), "nothing was kept to wait");
        assert!(matches!(
            p.from_device_waiting(&big, t, false),
            FromDevice::Send { .. }
        ));
    }

    #[test]
    fn the_port_answers_arp_for_its_address_and_takes_frames_for_its_mac() {
        let mut p = port();
        let mut request = MacAddr::BROADCAST.0.to_vec();
        request.extend_from_slice(&PEER.0);
        request.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        request.extend_from_slice(&PEER.0);
        request.extend_from_slice(&[10, 0, 1, 1]);
        request.extend_from_slice(&[0; 6]);
        request.extend_from_slice(&[10, 0, 1, 9]);
        let out = p.from_switch(&request, Timestamp::ZERO);
        assert_eq!(out.frames.len(), 1);
        let reply = &out.frames[0];
        assert_eq!((&reply[..6], &reply[6..12]), (&PEER.0[..], &OURS.0[..]));
        assert_eq!(&reply[14 + 6..14 + 8], &[0, 2], "a reply");
        assert_eq!(&reply[14 + 14..14 + 18], &[10, 0, 1, 9]);
        // An IPv4 frame to our MAC is the device's; padding beyond the total length goes.
        let mut frame = OURS.0.to_vec();
        frame.extend_from_slice(&PEER.0);
        frame.extend_from_slice(&[0x08, 0x00]);
        let inner = packet([10, 0, 1, 9], 28);
        frame.extend_from_slice(&inner);
        frame.resize(60, 0);
        let got = p
            .from_switch(&frame, Timestamp::ZERO)
            .packet
            .map(|r| frame[r].to_vec());
        assert_eq!(got, Some(inner));
        // Another station's frame is not.
        frame[..6].copy_from_slice(&PEER.0);
        assert_eq!(p.from_switch(&frame, Timestamp::ZERO).packet, None);
    }

    #[test]
    fn malformed_and_off_link_packets_are_dropped_by_reason() {
        let mut p = port();
        let t = Timestamp::ZERO;
        let malformed = FromDevice::Drop(PacketDrop::Malformed);
        assert_eq!(p.from_device(&[], t), malformed);
        assert_eq!(p.from_device(&[0x45; 10], t), malformed, "short");
        let mut v6 = packet([10, 0, 1, 1], 40);
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&99u16.to_be_bytes());
        assert_eq!(p.from_device(&v6, t), malformed, "IPv6 with a wrong length");
        v6[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(
            p.from_device(&v6, t),
            FromDevice::Drop(PacketDrop::NoRoute),
            "IPv6 to an address off the port's subnets"
        );
        let mut v5 = packet([10, 0, 1, 1], 40);
        v5[0] = 0x55;
        assert_eq!(p.from_device(&v5, t), malformed, "wrong version");
        let mut long = packet([10, 0, 1, 1], 40);
        long[2..4].copy_from_slice(&400u16.to_be_bytes());
        assert_eq!(p.from_device(&long, t), malformed, "wrong length");
        assert_eq!(
            p.from_device(&packet([192, 168, 0, 1], 40), t),
            FromDevice::Drop(PacketDrop::NoRoute)
        );
        let broadcast = packet([10, 0, 1, 255], 40);
        let Some(b) = sent(p.from_device(&broadcast, t), &broadcast) else {
            panic!("subnet broadcast")
        };
        assert_eq!(&b[..6], &[0xff; 6]);
        for _ in 0..PENDING_PER_ADDRESS {
            let _ = p.from_device(&packet([10, 0, 1, 2], 40), t);
        }
        assert_eq!(
            p.from_device(&packet([10, 0, 1, 2], 40), t),
            FromDevice::Drop(PacketDrop::PendingFull)
        );
    }
}
