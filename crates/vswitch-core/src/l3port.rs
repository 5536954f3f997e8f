//! An IP device on an Ethernet segment: what a TUN port does between the IP packets of its
//! device and the frames of the switch.
//!
//! The port stands for the addresses it is given (`tun:tun0=10.0.1.9/24`): it answers ARP for
//! them from a MAC of its own, takes frames for that MAC (or broadcast) as IP packets for the
//! device, and sends the device's packets as frames to the next hop's MAC, which it resolves by
//! ARP and caches (aged). A packet for an address not yet resolved waits (a few per address,
//! bounded) while the port asks. IPv4 only for now.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use crate::time::Timestamp;
use crate::wire::MacAddr;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
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
    /// An IPv6 packet: the port speaks IPv4 only for now.
    Ipv6,
    /// Its destination is not on the port's subnet (the port routes nothing).
    NoRoute,
    /// Its next hop is unresolved and enough packets already wait for it.
    PendingFull,
}

/// What the port sends into the switch for a packet from its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromDevice {
    /// This frame (the packet, addressed to its next hop).
    Frame(Vec<u8>),
    /// An ARP request for the next hop; the packet waits for the answer.
    Resolve(Vec<u8>),
    /// The packet waits: a request for its next hop went out a moment ago.
    Waiting,
    /// Dropped, for this reason.
    Drop(PacketDrop),
}

/// What the port does with a frame from the switch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromSwitch {
    /// The IP packet to write to the device, if the frame carried one for it.
    pub packet: Option<Vec<u8>>,
    /// Frames to send into the switch: an ARP reply, packets that waited for this answer.
    pub frames: Vec<Vec<u8>>,
}

/// The port's addresses, neighbours and waiting packets.
#[derive(Debug)]
pub struct L3Port {
    mac: MacAddr,
    addresses: Vec<(Ipv4Addr, u8)>,
    cache: HashMap<Ipv4Addr, (MacAddr, Timestamp)>,
    pending: HashMap<Ipv4Addr, (VecDeque<Vec<u8>>, Timestamp)>,
    pending_bytes: usize,
}

impl L3Port {
    /// A port with MAC `mac` standing for `addresses` (address, prefix length).
    pub fn new(mac: MacAddr, addresses: Vec<(Ipv4Addr, u8)>) -> L3Port {
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

    fn on_link(&self, ip: Ipv4Addr) -> bool {
        self.addresses.iter().any(|(a, prefix)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            u32::from(*a) & mask == u32::from(ip) & mask
        })
    }

    fn is_ours(&self, ip: Ipv4Addr) -> bool {
        self.addresses.iter().any(|(a, _)| *a == ip)
    }

    /// Whether `ip` is one of the port's addresses.
    pub fn stands_for(&self, ip: Ipv4Addr) -> bool {
        self.is_ours(ip)
    }

    fn is_broadcast(&self, ip: Ipv4Addr) -> bool {
        ip == Ipv4Addr::BROADCAST
            || self.addresses.iter().any(|(a, prefix)| {
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

    /// The source address to ask with: one of ours on `target`'s subnet.
    fn sender_for(&self, target: Ipv4Addr) -> Ipv4Addr {
        self.addresses
            .iter()
            .find(|(a, p)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(*p)).unwrap_or(0);
                u32::from(*a) & mask == u32::from(target) & mask
            })
            .map_or(Ipv4Addr::UNSPECIFIED, |(a, _)| *a)
    }

    /// Takes an IP packet the device sent.
    pub fn from_device(&mut self, packet: &[u8], now: Timestamp) -> FromDevice {
        if packet.len() >= 40
            && packet[0] >> 4 == 6
            && usize::from(u16::from_be_bytes([packet[4], packet[5]])) + 40 == packet.len()
        {
            return FromDevice::Drop(PacketDrop::Ipv6);
        }
        let Some(packet) = ipv4_packet(packet) else {
            return FromDevice::Drop(PacketDrop::Malformed);
        };
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        if dst.is_multicast() {
            let o = dst.octets();
            let mac = MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]);
            return FromDevice::Frame(self.frame(mac, ETHERTYPE_IPV4, packet));
        }
        if self.is_broadcast(dst) {
            return FromDevice::Frame(self.frame(MacAddr::BROADCAST, ETHERTYPE_IPV4, packet));
        }
        if !self.on_link(dst) {
            return FromDevice::Drop(PacketDrop::NoRoute);
        }
        if let Some((mac, seen)) = self.cache.get(&dst)
            && now.millis().saturating_sub(seen.millis()) < CACHE_AGEING_MS
        {
            return FromDevice::Frame(self.frame(*mac, ETHERTYPE_IPV4, packet));
        }
        let asked_lately = self
            .pending
            .get(&dst)
            .is_some_and(|(_, asked)| now.millis().saturating_sub(asked.millis()) < RETRY_MS);
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
        let sender = self.sender_for(dst);
        FromDevice::Resolve(self.arp(1, MacAddr([0; 6]), dst, sender))
    }

    /// Takes a frame the switch sent to the port.
    pub fn from_switch(&mut self, frame: &[u8], now: Timestamp) -> FromSwitch {
        let mut out = FromSwitch::default();
        if frame.len() < 14 {
            return out;
        }
        let dst = MacAddr(frame[..6].try_into().unwrap_or([0; 6]));
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let body = &frame[14..];
        match ethertype {
            ETHERTYPE_ARP if body.len() >= 28 && body[..6] == [0, 1, 8, 0, 6, 4] => {
                let op = u16::from_be_bytes([body[6], body[7]]);
                let sender_mac = MacAddr(body[8..14].try_into().unwrap_or([0; 6]));
                let sender = Ipv4Addr::new(body[14], body[15], body[16], body[17]);
                let target = Ipv4Addr::new(body[24], body[25], body[26], body[27]);
                if sender_mac.is_valid_source() && self.on_link(sender) && !self.is_ours(sender) {
                    if self.cache.len() >= CACHE_CAPACITY && !self.cache.contains_key(&sender) {
                        self.cache.retain(|_, (_, seen)| {
                            now.millis().saturating_sub(seen.millis()) < CACHE_AGEING_MS
                        });
                    }
                    if self.cache.len() < CACHE_CAPACITY {
                        self.cache.insert(sender, (sender_mac, now));
                    }
                    if let Some((waiting, _)) = self.pending.remove(&sender) {
                        for packet in waiting {
                            self.pending_bytes -= packet.len();
                            out.frames
                                .push(self.frame(sender_mac, ETHERTYPE_IPV4, &packet));
                        }
                    }
                }
                if op == 1 && self.is_ours(target) {
                    out.frames.push(self.arp(2, sender_mac, sender, target));
                }
            }
            ETHERTYPE_IPV4 if dst == self.mac || dst.is_multicast() => {
                out.packet = ipv4_packet(body).map(<[u8]>::to_vec);
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

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 9]);
    const PEER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);

    fn port() -> L3Port {
        L3Port::new(OURS, vec![(Ipv4Addr::new(10, 0, 1, 9), 24)])
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
        let FromDevice::Frame(f) = p.from_device(&packet([10, 0, 1, 1], 40), t) else {
            panic!("not sent at once once resolved")
        };
        assert_eq!(&f[..6], &PEER.0);
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
        assert_eq!(p.from_switch(&frame, Timestamp::ZERO).packet, Some(inner));
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
        assert_eq!(p.from_device(&v6, t), FromDevice::Drop(PacketDrop::Ipv6));
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
        let FromDevice::Frame(b) = p.from_device(&packet([10, 0, 1, 255], 40), t) else {
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
