//! The switch's own address (`--address 10.0.1.254/24`, `--address fd00::fe/64`): a port
//! through which the switch is a station on its segment, answering ARP, neighbour discovery
//! and ping for its addresses.
//!
//! It is an [`L3Port`] whose packets go to a tiny responder instead of a device: an ICMP or
//! ICMPv6 echo request for one of its addresses is answered, anything else is counted and
//! dropped. Its frames reach a worker through a socket pair, like a TUN port's answers, so it
//! is counted and captured like every port.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::BorrowedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use vswitch_core::MacAddr;
use vswitch_core::l3port::{FromDevice, L3Port};

use crate::answers::Answers;
use crate::port::{DeviceCapabilities, DeviceStatus, PortDevice};

/// The switch as a station.
#[derive(Debug)]
pub struct StationPort {
    l3: Mutex<L3Port>,
    answers: Answers,
    echoes: AtomicU64,
    ignored: AtomicU64,
}

impl StationPort {
    /// A station standing for `addresses` (address, prefix length), with MAC `mac`.
    pub fn new(mac: MacAddr, addresses: Vec<(IpAddr, u8)>) -> io::Result<StationPort> {
        Ok(StationPort {
            l3: Mutex::new(L3Port::new(mac, addresses)),
            answers: Answers::new()?,
            echoes: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
        })
    }
}

/// The destination address of an IPv4 or IPv6 packet.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(packet.get(16..20)?).ok()?,
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(packet.get(24..40)?).ok()?,
        ))),
        _ => None,
    }
}

/// The echo reply to `packet` if it is an ICMP echo request (IPv4 without fragments, or ICMPv6
/// right after the IPv6 header), else `None`.
pub fn echo_reply(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.first()? >> 4 == 6 {
        return echo_reply_v6(packet);
    }
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    let fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x3fff != 0;
    if packet[0] >> 4 != 4 || ihl < 20 || packet.get(9)? != &1 || fragment {
        return None;
    }
    if packet.get(ihl)? != &8 || packet.len() < ihl + 8 {
        return None;
    }
    let mut reply = packet.to_vec();
    reply.copy_within(12..16, 16);
    reply[12..16].copy_from_slice(&packet[16..20]);
    reply[8] = 64;
    reply[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&reply[..ihl]);
    reply[10..12].copy_from_slice(&sum.to_be_bytes());
    reply[ihl] = 0;
    reply[ihl + 2..ihl + 4].copy_from_slice(&[0, 0]);
    let sum = checksum(&reply[ihl..]);
    reply[ihl + 2..ihl + 4].copy_from_slice(&sum.to_be_bytes());
    Some(reply)
}

/// ICMPv6 echo request (128) → reply (129), addresses swapped, checksum over the pseudo-header.
fn echo_reply_v6(packet: &[u8]) -> Option<Vec<u8>> {
    const ICMPV6: u8 = 58;
    let ipv6_at = |p: &[u8], at: usize| -> Option<Ipv6Addr> {
        Some(Ipv6Addr::from(
            <[u8; 16]>::try_from(p.get(at..at + 16)?).ok()?,
        ))
    };
    if packet.len() < 48 || packet[6] != ICMPV6 || packet[40] != 128 || packet[41] != 0 {
        return None;
    }
    let mut reply = packet.to_vec();
    reply[8..24].copy_from_slice(&packet[24..40]);
    reply[24..40].copy_from_slice(&packet[8..24]);
    reply[7] = 64;
    reply[40] = 129;
    reply[42..44].copy_from_slice(&[0, 0]);
    let (src, dst) = (ipv6_at(&reply, 8)?, ipv6_at(&reply, 24)?);
    let sum = vswitch_core::l3port::icmpv6_checksum(src, dst, &reply[40..]);
    reply[42..44].copy_from_slice(&sum.to_be_bytes());
    Some(reply)
}

fn checksum(bytes: &[u8]) -> u16 {
    !vswitch_core::checksum::fold(vswitch_core::checksum::sum_bytes(0, bytes))
}

impl PortDevice for StationPort {
    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities {
            mac: Some(self.l3.lock().unwrap_or_else(|e| e.into_inner()).mac()),
            ..DeviceCapabilities::new("station")
        }
    }

    fn recv(&self, _queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        self.answers.read(buf)
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let now = self.answers.now();
        let mut l3 = self.l3.lock().unwrap_or_else(|e| e.into_inner());
        let out = l3.from_switch(frame, now);
        let mut frames = out.frames;
        if let Some(packet) = out.packet.map(|r| &frame[r]) {
            let ours = destination(packet);
            match echo_reply(packet).filter(|_| ours.is_some_and(|o| l3.stands_for(o))) {
                Some(reply) => {
                    self.echoes.fetch_add(1, Relaxed);
                    match l3.from_device(&reply, now) {
                        FromDevice::Send { header, len } => {
                            frames.push([&header[..], &reply[..len]].concat());
                        }
                        FromDevice::Resolve(f) => frames.push(f),
                        FromDevice::Waiting | FromDevice::Drop(_) => {}
                    }
                }
                None => {
                    self.ignored.fetch_add(1, Relaxed);
                }
            }
        }
        drop(l3);
        for f in &frames {
            self.answers.push(f);
        }
        Ok(())
    }

    fn fd(&self, _queue: usize) -> BorrowedFd<'_> {
        self.answers.fd()
    }

    fn status(&self) -> DeviceStatus {
        DeviceStatus::with_mtu(1500)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("echoes_answered".into(), self.echoes.load(Relaxed)),
            ("packets_ignored".into(), self.ignored.load(Relaxed)),
            ("answers_lost".into(), self.answers.lost()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_is_answered_with_checksums_that_verify() {
        let mut request = vec![0u8; 28 + 8];
        request[0] = 0x45;
        request[2..4].copy_from_slice(&36u16.to_be_bytes());
        request[8] = 64;
        request[9] = 1;
        request[12..16].copy_from_slice(&[10, 0, 0, 1]);
        request[16..20].copy_from_slice(&[10, 0, 0, 254]);
        request[20] = 8;
        request[24..28].copy_from_slice(&[0x12, 0x34, 0, 1]);
        request[28..].copy_from_slice(b"payload!");
        let reply = echo_reply(&request).expect("a reply");
        assert_eq!(&reply[12..16], &[10, 0, 0, 254]);
        assert_eq!(&reply[16..20], &[10, 0, 0, 1]);
        assert_eq!(reply[20], 0, "echo reply");
        assert_eq!(
            &reply[24..],
            &request[24..],
            "identifier, sequence and payload echoed"
        );
        assert_eq!(checksum(&reply[..20]), 0, "IP header checksum");
        assert_eq!(checksum(&reply[20..]), 0, "ICMP checksum");
        let mut not_echo = request.clone();
        not_echo[20] = 13;
        assert_eq!(echo_reply(&not_echo), None);
        assert_eq!(echo_reply(&request[..22]), None);
    }
}
