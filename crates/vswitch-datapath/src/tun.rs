//! TUN ports: an IP device (a VPN daemon's, a userspace stack's, any `tun`) as a station on
//! the switch's Ethernet segment, the L3 half of the seed tutorial.
//!
//! The switch creates the TUN (or attaches to a persistent one) and stands for the addresses
//! given with the port (`tun:tun0=10.0.1.9/24+fd00::9/64`): [`vswitch_core::l3port`] answers
//! ARP and neighbour solicitations for them from a MAC of the port's own, resolves each
//! packet's next hop by ARP or neighbour discovery, and turns frames for its MAC back into
//! packets for the device. With offloads (`IFF_VNET_HDR`), TCP crosses as 64 KiB segments. The
//! port has two receive queues: the TUN's fd, and a socket pair through which frames the port
//! makes itself in answer to the switch (ARP replies, advertisements, packets that waited for a
//! neighbour) reach a worker.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use vswitch_core::VNET_HDR_LEN;
use vswitch_core::l3port::{FromDevice, L3Port, PacketDrop};
use vswitch_core::vnet::{self, VnetHeader};
use vswitch_core::wire::ETHERNET_HEADER_LEN;

use crate::answers::{Answers, local_mac};
use crate::port::{DeviceCapabilities, DeviceStatus, PortDevice};
use crate::sys;
use crate::tap::{TapError, validate_ifname};

/// `IFF_TUN`: IP packets, not Ethernet frames.
const IFF_TUN: libc::c_short = 0x0001;

/// What a `tun:` port spec says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// The TUN's name.
    pub name: String,
    /// The addresses the port stands for, with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
}

impl TunConfig {
    /// Parses `NAME=10.0.1.9/24[+10.0.2.9/24]` (the part after `tun:`).
    pub fn parse(s: &str) -> Result<TunConfig, String> {
        let (name, addrs) = s
            .split_once('=')
            .ok_or("tun: say tun:NAME=ADDRESS/PREFIX[+ADDRESS/PREFIX...]")?;
        validate_ifname(name).map_err(|e| e.to_string())?;
        let mut addresses = Vec::new();
        for a in addrs.split('+') {
            let (ip, prefix) = a
                .split_once('/')
                .ok_or_else(|| format!("tun: {a:?} needs a prefix length, like 10.0.1.9/24"))?;
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("tun: {ip:?} is not an IP address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| (1..=max).contains(p))
                .ok_or_else(|| format!("tun: /{prefix} is not a prefix length (1 to {max})"))?;
            addresses.push((ip, prefix));
        }
        Ok(TunConfig {
            name: name.to_owned(),
            addresses,
        })
    }
}

/// Packets from the device that went nowhere, by reason.
#[derive(Debug, Default)]
struct Drops {
    malformed: AtomicU64,
    no_route: AtomicU64,
    pending_full: AtomicU64,
}

/// A TUN device as a switch port.
#[derive(Debug)]
pub struct TunPort {
    name: String,
    tun: File,
    /// Frames the port made itself, read as receive queue 1.
    answers: Answers,
    l3: Mutex<L3Port>,
    drops: Drops,
    /// Packets carry a virtio-net header (`IFF_VNET_HDR`): TCP segments of up to 64 KiB and
    /// partial checksums cross the port whole, as through a TAP with offloads.
    vnet: bool,
}

impl TunPort {
    /// Creates TUN `config.name` (or attaches to a persistent one) and sets it up; with
    /// `offload`, with virtio-net headers and TCP segmentation and checksum offloads.
    pub fn open(config: &TunConfig, offload: bool) -> Result<TunPort, TapError> {
        let tun = crate::tap::open_tun(&config.name)?;
        let vnet = if offload { sys::IFF_VNET_HDR } else { 0 };
        sys::tun_set_iff(tun.as_fd(), &config.name, IFF_TUN | sys::IFF_NO_PI | vnet).map_err(
            |e| match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    TapError::PermissionDenied(config.name.clone())
                }
                Some(libc::EBUSY) => TapError::Busy(config.name.clone()),
                _ => TapError::Ioctl {
                    op: "TUNSETIFF",
                    name: config.name.clone(),
                    source: e,
                },
            },
        )?;
        let io_err = |op, source| TapError::Ioctl {
            op,
            name: config.name.clone(),
            source,
        };
        if offload {
            sys::tun_set_offload(tun.as_fd(), sys::TUN_OFFLOADS)
                .map_err(|e| io_err("TUNSETOFFLOAD", e))?;
        }
        let answers = Answers::new().map_err(|e| io_err("socketpair", e))?;
        let sock = sys::ioctl_socket().map_err(|e| io_err("socket", e))?;
        sys::if_set_up(sock.as_fd(), &config.name).map_err(|e| io_err("SIOCSIFFLAGS", e))?;
        tracing::info!(tun = %config.name, addresses = ?config.addresses, "TUN port");
        Ok(TunPort {
            name: config.name.clone(),
            tun,
            answers,
            l3: Mutex::new(L3Port::new(
                local_mac(&config.name),
                config.addresses.clone(),
            )),
            drops: Drops::default(),
            vnet: offload,
        })
    }

    /// Queues a frame the port made for the switch (behind an empty virtio-net header when the
    /// port has them).
    fn answer(&self, frame: &[u8]) {
        if self.vnet {
            let mut wire = vec![0u8; VNET_HDR_LEN];
            wire.extend_from_slice(frame);
            self.answers.push(&wire);
        } else {
            self.answers.push(frame);
        }
    }

    fn l3(&self) -> std::sync::MutexGuard<'_, L3Port> {
        self.l3.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PortDevice for TunPort {
    /// Two queues: the TUN's packets, and the frames the port makes itself (ARP and
    /// neighbour answers).
    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities {
            rx_queues: 2,
            mac: Some(self.l3().mac()),
            ..DeviceCapabilities::new("tun").vnet_header(self.vnet)
        }
    }

    fn fd(&self, queue: usize) -> BorrowedFd<'_> {
        match queue {
            0 => self.tun.as_fd(),
            _ => self.answers.fd(),
        }
    }

    fn recv(&self, queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        if queue != 0 {
            return self.answers.read(buf);
        }
        // The packet is read behind room for the Ethernet header, so the frame is made where
        // it lies: `[virtio-net header | Ethernet header | packet]`, with the device's own
        // virtio-net header read in front of the packet and then moved to the start.
        let head = if self.vnet { VNET_HDR_LEN } else { 0 };
        let packet_at = head + ETHERNET_HEADER_LEN;
        if buf.len() <= packet_at {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        loop {
            let n = (&self.tun).read(&mut buf[ETHERNET_HEADER_LEN..])?;
            let end = ETHERNET_HEADER_LEN + n;
            let now = self.answers.now();
            let mut vnet = VnetHeader::default();
            if self.vnet {
                match VnetHeader::parse(&buf[ETHERNET_HEADER_LEN..end]).filter(|_| n > head) {
                    // Offsets count from the frame's start from now on.
                    Some(v) => {
                        vnet = VnetHeader {
                            csum_start: v.csum_start.saturating_add(14),
                            hdr_len: if v.hdr_len == 0 {
                                0
                            } else {
                                v.hdr_len.saturating_add(14)
                            },
                            ..v
                        }
                    }
                    None => {
                        self.drops.malformed.fetch_add(1, Relaxed);
                        continue;
                    }
                }
            }
            // A partial checksum of a packet that fits is finished here, so it may wait for
            // its neighbour like any other; a TCP segment of 64 KiB goes on whole (GSO), and
            // can't wait (what goes with it would be lost).
            if vnet.needs_csum() && !vnet.is_gso() {
                if !vnet::complete_checksum(&mut buf[head..end], &vnet) {
                    self.drops.malformed.fetch_add(1, Relaxed);
                    continue;
                }
                vnet = VnetHeader::default();
            }
            let out = self
                .l3()
                .from_device_waiting(&buf[packet_at..end], now, !vnet.is_gso());
            let len = match out {
                FromDevice::Send { header, len } => {
                    buf[head..packet_at].copy_from_slice(&header);
                    packet_at + len
                }
                // An ARP request or a solicitation in the packet's place; it waits, or not.
                FromDevice::Resolve(request) => {
                    if head + request.len() > buf.len() {
                        self.drops.malformed.fetch_add(1, Relaxed);
                        continue;
                    }
                    vnet = VnetHeader::default();
                    buf[head..head + request.len()].copy_from_slice(&request);
                    head + request.len()
                }
                FromDevice::Waiting => continue,
                FromDevice::Drop(reason) => {
                    let counter = match reason {
                        PacketDrop::Malformed => &self.drops.malformed,
                        PacketDrop::NoRoute => &self.drops.no_route,
                        PacketDrop::PendingFull => &self.drops.pending_full,
                    };
                    counter.fetch_add(1, Relaxed);
                    continue;
                }
            };
            if self.vnet {
                let out: &mut [u8; VNET_HDR_LEN] = (&mut buf[..VNET_HDR_LEN])
                    .try_into()
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                vnet.emit(out);
            }
            return Ok(len);
        }
    }

    fn send(&self, wire: &[u8]) -> io::Result<()> {
        let head = if self.vnet { VNET_HDR_LEN } else { 0 };
        let (Some(frame), vnet) = (
            wire.get(head..),
            VnetHeader::parse(wire).filter(|_| self.vnet),
        ) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let out = self.l3().from_switch(frame, self.answers.now());
        for made in &out.frames {
            self.answer(made);
        }
        if let Some(packet) = out.packet.map(|r| &frame[r]) {
            // A TUN takes one packet per write, whole or not at all.
            match vnet {
                Some(v) => {
                    // Offsets counted from the packet, not the frame, now.
                    let unframe = |x: u16| x.saturating_sub(14);
                    let header = VnetHeader {
                        csum_start: unframe(v.csum_start),
                        hdr_len: unframe(v.hdr_len),
                        ..v
                    };
                    let mut bytes = [0u8; VNET_HDR_LEN];
                    header.emit(&mut bytes);
                    let _ = (&self.tun)
                        .write_vectored(&[IoSlice::new(&bytes), IoSlice::new(packet)])?;
                }
                None => {
                    let _ = (&self.tun).write(packet)?;
                }
            }
        }
        Ok(())
    }

    /// The MTU read in the TUN's namespace.
    fn status(&self) -> DeviceStatus {
        let mtu = || {
            let name = sys::tun_get_name(self.tun.as_fd())?;
            let netns = sys::tun_get_netns(self.tun.as_fd())?;
            crate::tap::in_netns(netns, || {
                let sock = sys::ioctl_socket()?;
                sys::if_mtu(sock.as_fd(), &name)
            })
        };
        DeviceStatus {
            present: true,
            mtu: mtu().ok(),
            kernel_drops: None,
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("tun_malformed".into(), self.drops.malformed.load(Relaxed)),
            ("tun_no_route".into(), self.drops.no_route.load(Relaxed)),
            (
                "tun_pending_full".into(),
                self.drops.pending_full.load(Relaxed),
            ),
            ("tun_answers_lost".into(), self.answers.lost()),
        ]
    }
}

impl TunPort {
    /// The name the TUN was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse_nonsense() {
        let c = TunConfig::parse("tun0=10.0.1.9/24+10.0.2.9/16+fd00::9/64").unwrap();
        assert_eq!(c.name, "tun0");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            c.addresses,
            vec![
                (ip("10.0.1.9"), 24),
                (ip("10.0.2.9"), 16),
                (ip("fd00::9"), 64)
            ]
        );
        for bad in [
            "tun0",
            "tun0=10.0.1.9",
            "tun0=10.0.1.9/33",
            "tun0=fd00::9/129",
            "tun0=x/24",
            "=10.0.0.1/8",
        ] {
            assert!(TunConfig::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(local_mac("tun0"), local_mac("tun0"));
        assert!(local_mac("tun0").is_valid_source());
    }
}
