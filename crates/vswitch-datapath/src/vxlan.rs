//! VXLAN ports (RFC 7348, as Linux's vxlan speaks it): Ethernet frames in UDP between VTEPs,
//! so switches on different machines join one segment.
//!
//! A [`VxlanPort`] receives on a UDP socket bound to `local:dstport` (4789, IANA's, by default;
//! Linux's vxlan uses 8472 when `dstport` is omitted, a classic cause of silent non-interop) and
//! sends from a small pool of sockets bound to ephemeral ports, choosing one by a hash of the
//! inner flow, so the outer source port varies by flow as Linux's does (for ECMP in the
//! underlay) while each flow keeps one. Headers: flags 0x08, reserved bits zero, the port's VNI;
//! UDP checksums on; DF off; no fragmentation: the port's MTU is the underlay's minus 50, and the
//! switch drops larger frames as `oversize` (GSO frames are cut to fit before they get here).
//!
//! Like the kernel's vxlan FDB, the port learns which VTEP each inner source MAC lives behind
//! (per VNI: a port has one VNI), ages those entries, and sends unicast to a known MAC's VTEP
//! only; everything else goes to every remote (head-end replication, the kernel's all-zeros
//! entry). Received datagrams that aren't VXLAN of this VNI are dropped and counted by reason.
//! When the underlay is local (veth) and never meets a NIC, a sender's kernel hands over inner
//! frames it never finished: a TCP segment of up to 64 KiB, or a partial checksum. The port
//! marks the first GSO (so the switch cuts it for ports that need wire-sized frames, and hands
//! it whole to TAPs that take offloads) and finishes the second; a damaged checksum is left for
//! the receiver to catch.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use vswitch_core::vnet::{self, VNET_HDR_LEN, VnetHeader};
use vswitch_core::{MacAddr, gro, gso};

use crate::port::{DeviceCapabilities, DeviceStatus, PortDevice, Tunnel};
use crate::sys;

/// IANA's VXLAN port.
pub const IANA_PORT: u16 = 4789;
/// VXLAN header: flags (1), reserved (3), VNI (3), reserved (1).
const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid.
const FLAG_VNI: u8 = 0x08;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const OVERHEAD_V4: u32 = 50;
/// Outer IPv6 (40) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const OVERHEAD_V6: u32 = 70;
/// Send sockets: this many outer source ports to spread flows over.
const SEND_SOCKETS: usize = 8;
/// How long a learned MAC → VTEP entry lasts without being heard from.
const FDB_AGEING: Duration = Duration::from_secs(300);
/// MAC → VTEP entries at most (beyond, new MACs are flooded until old ones age).
const FDB_CAPACITY: usize = 65_536;
/// Datagrams per `sendmsg` with `UDP_SEGMENT` at most (the kernel's `UDP_MAX_SEGMENTS` was 64
/// before Linux 6.9).
const MAX_GSO_SEGMENTS: usize = 64;
/// What one received batch may hold: a `UDP_GRO` train is at most 64 KiB.
const RX_BATCH: usize = 65_536 + 4096;

/// What a `vxlan:` port spec says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The port's name (at most 15 bytes, like an interface's).
    pub name: String,
    /// The VXLAN network identifier, 0 to 2^24 - 1.
    pub vni: u32,
    /// The local address to receive on and send from (IPv4 or IPv6).
    pub local: IpAddr,
    /// The remote VTEPs, of the local address's family (floods go to each).
    pub remotes: Vec<IpAddr>,
    /// The UDP destination port.
    pub dstport: u16,
    /// The underlay's MTU (the port's is 50 less).
    pub underlay_mtu: u32,
    /// The namespace the underlay sockets live in (`/run/netns/NAME`), if not the switch's.
    pub netns: Option<String>,
    /// Learn inner source MAC → VTEP from what arrives.
    pub learning: bool,
    /// The outer UDP source ports to send from (the flows spread over them), if not the
    /// kernel's ephemeral ports.
    pub srcport: Option<(u16, u16)>,
    /// Accept datagrams with a zero UDP checksum over IPv6 (Linux's `udp6zerocsumrx`).
    pub udp6_zero_csum_rx: bool,
    /// What moves the datagrams: the switch's own sockets, or a Linux vxlan device.
    pub carrier: Carrier,
}

/// What carries a VXLAN port's datagrams (`carrier=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Carrier {
    /// The switch's own UDP sockets: every datagram passes through the switch, which counts
    /// each remote VTEP's traffic and each decap drop by reason ([`VxlanPort`]).
    #[default]
    Switch,
    /// A Linux vxlan device the switch creates and attaches like a `dev:` port: the kernel
    /// encapsulates (whole 64 KiB TCP segments, no cutting in userspace) and the fast path
    /// serves it ([`crate::KernelVxlanPort`]).
    Kernel,
}

impl VxlanConfig {
    /// Parses `NAME:vni=42,local=10.0.0.1,remote=10.0.0.2+10.0.0.3[,dstport=4789]
    /// [,mtu=1500][,netns=NAME][,learning=off][,srcport=MIN-MAX][,udp6zerocsumrx=on]
    /// [,carrier=kernel]` (the part after `vxlan:`); IPv6 addresses work alike.
    pub fn parse(s: &str) -> Result<VxlanConfig, String> {
        let (name, params) = s.split_once(':').ok_or(
            "vxlan: say vxlan:NAME:vni=N,local=IP,remote=IP[+IP...][,dstport=P][,mtu=M][,netns=NS][,learning=off][,carrier=kernel]",
        )?;
        crate::tap::validate_ifname(name).map_err(|e| e.to_string())?;
        let mut config = VxlanConfig {
            name: name.to_owned(),
            vni: u32::MAX,
            local: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            remotes: Vec::new(),
            dstport: IANA_PORT,
            underlay_mtu: 1500,
            netns: None,
            learning: true,
            srcport: None,
            udp6_zero_csum_rx: false,
            carrier: Carrier::Switch,
        };
        for param in params.split(',') {
            let (key, value) = param
                .split_once('=')
                .ok_or_else(|| format!("vxlan: {param:?} is not KEY=VALUE"))?;
            let bad = |what: &str| format!("vxlan: {key}={value:?} is not {what}");
            match key {
                "vni" => {
                    config.vni = value
                        .parse()
                        .ok()
                        .filter(|v| *v < 1 << 24)
                        .ok_or_else(|| bad("a VNI (0 to 16777215)"))?
                }
                "local" => config.local = value.parse().map_err(|_| bad("an IP address"))?,
                "remote" => {
                    for r in value.split('+') {
                        config
                            .remotes
                            .push(r.parse().map_err(|_| bad("IP addresses joined by +"))?);
                    }
                }
                "srcport" => {
                    let range = value
                        .split_once('-')
                        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
                        .filter(|(a, b)| *a > 0 && a < b)
                        .ok_or_else(|| bad("a port range MIN-MAX"))?;
                    config.srcport = Some(range);
                }
                "udp6zerocsumrx" => {
                    config.udp6_zero_csum_rx = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("on or off")),
                    }
                }
                "dstport" => {
                    config.dstport = value
                        .parse()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| bad("a UDP port"))?
                }
                "mtu" => {
                    config.underlay_mtu = value
                        .parse()
                        .ok()
                        .filter(|m| (576..=65_535).contains(m))
                        .ok_or_else(|| bad("an MTU (576 to 65535)"))?
                }
                "netns" => config.netns = Some(value.to_owned()),
                "carrier" => {
                    config.carrier = match value {
                        "switch" => Carrier::Switch,
                        "kernel" => Carrier::Kernel,
                        _ => return Err(bad("switch or kernel")),
                    }
                }
                "learning" => {
                    config.learning = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("on or off")),
                    }
                }
                _ => {
                    return Err(format!(
                        "vxlan: unknown {key:?} (vni, local, remote, dstport, mtu, netns, learning, srcport, udp6zerocsumrx, carrier)"
                    ));
                }
            }
        }
        if config.vni == u32::MAX {
            return Err("vxlan: vni= is required".into());
        }
        if config.local.is_unspecified() {
            return Err("vxlan: local= is required (the address to send from)".into());
        }
        if config.remotes.is_empty() {
            return Err("vxlan: remote= is required (one VTEP or more, joined by +)".into());
        }
        if config
            .remotes
            .iter()
            .any(|r| r.is_ipv4() != config.local.is_ipv4())
        {
            return Err("vxlan: local= and every remote= must be of one family".into());
        }
        if config.underlay_mtu <= config.overhead() + 68 {
            return Err(format!(
                "vxlan: mtu={} leaves no room for frames",
                config.underlay_mtu
            ));
        }
        Ok(config)
    }

    /// Outer headers and the inner Ethernet header: 50 bytes over IPv4, 70 over IPv6.
    pub fn overhead(&self) -> u32 {
        if self.local.is_ipv4() {
            OVERHEAD_V4
        } else {
            OVERHEAD_V6
        }
    }
}

/// Decap drop reasons, counted per port.
#[derive(Debug, Default)]
struct DecapDrops {
    short: AtomicU64,
    bad_flags: AtomicU64,
    unknown_vni: AtomicU64,
    bad_inner: AtomicU64,
}

/// Traffic with one remote VTEP: `[rx_packets, rx_bytes, tx_packets, tx_bytes]`.
#[derive(Debug, Default)]
struct Vtep([AtomicU64; 4]);

impl Vtep {
    fn count(&self, rx: bool, packets: usize, bytes: usize) {
        let at = if rx { 0 } else { 2 };
        self.0[at].fetch_add(packets as u64, Relaxed);
        self.0[at + 1].fetch_add(bytes as u64, Relaxed);
    }
}

/// Datagrams received in one `recvmsg` (a `UDP_GRO` train of equal-sized datagrams, or one),
/// handed to the switch one frame at a time, consecutive TCP segments joined.
#[derive(Debug)]
struct RxBatch {
    buf: Vec<u8>,
    /// The inner frames of the train's good datagrams, in order.
    frames: Vec<Range<usize>>,
    /// The next frame to hand on.
    next: usize,
    /// The VTEP the train came from.
    from: IpAddr,
}

/// Datagrams built for one send, back to back: every one but the last of a `UDP_SEGMENT` send
/// has the same length.
#[derive(Debug, Default)]
struct TxBatch {
    buf: Vec<u8>,
    lens: Vec<usize>,
}

thread_local! {
    /// One per worker, reused: sending allocates nothing in steady state.
    static TX_BATCH: RefCell<TxBatch> = RefCell::new(TxBatch::default());
}

/// How a MAC → VTEP entry came to be.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// Learned from a frame, at this time.
    At(Instant),
    /// Given by the operator: never aged, never moved by learning.
    Static,
}

/// A VXLAN tunnel endpoint as a switch port.
#[derive(Debug)]
pub struct VxlanPort {
    config: VxlanConfig,
    rx: UdpSocket,
    tx: Vec<OwnedFd>,
    fdb: Mutex<HashMap<MacAddr, (IpAddr, Seen)>>,
    /// The configured remotes' counters, lock-free: one lock (the FDB's) per frame at most.
    remotes: Vec<(IpAddr, Vtep)>,
    /// VTEPs heard from or pinned that aren't configured remotes (rare).
    others: Mutex<HashMap<IpAddr, Vtep>>,
    drops: DecapDrops,
    /// What the last `recvmsg` brought that the switch has not taken yet.
    rx_batch: Mutex<RxBatch>,
    /// Whether the kernel takes `UDP_SEGMENT` sends (Linux 4.18+); cleared at the first refusal.
    udp_gso: AtomicBool,
}

/// Why a datagram is no frame for this port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decap {
    /// Shorter than the VXLAN header and an Ethernet header.
    Short,
    /// The I flag missing, or reserved bits set.
    BadFlags,
    /// Another VNI.
    UnknownVni,
}

/// Checks a received datagram: the inner frame starts at [`HEADER_LEN`] if it is VXLAN of `vni`.
pub fn check_header(datagram: &[u8], vni: u32) -> Result<(), Decap> {
    if datagram.len() < HEADER_LEN + 14 {
        return Err(Decap::Short);
    }
    if datagram[0] != FLAG_VNI || datagram[1..4] != [0, 0, 0] || datagram[7] != 0 {
        return Err(Decap::BadFlags);
    }
    let got = u32::from_be_bytes([0, datagram[4], datagram[5], datagram[6]]);
    if got != vni {
        return Err(Decap::UnknownVni);
    }
    Ok(())
}

/// The VXLAN header for `vni`.
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    let v = vni.to_be_bytes();
    [FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// A hash of the inner frame's flow (MACs, EtherType, and the IPv4 addresses and ports when
/// present), to pick the outer source port as Linux does: one per flow, spread over flows.
fn flow_hash(frame: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    frame.get(..14).hash(&mut h);
    if frame.get(12..14) == Some(&[0x08, 0x00]) {
        frame.get(14 + 12..14 + 20).hash(&mut h);
        let ihl = usize::from(frame.get(14).map_or(5, |b| b & 0x0f)) * 4;
        frame.get(14 + ihl..14 + ihl + 4).hash(&mut h);
    }
    h.finish()
}

impl VxlanPort {
    /// Opens the port's sockets (in its underlay namespace, if it has one).
    pub fn open(config: VxlanConfig) -> io::Result<VxlanPort> {
        let open = || -> io::Result<(UdpSocket, Vec<OwnedFd>)> {
            let rx =
                UdpSocket::bind(SocketAddr::new(config.local, config.dstport)).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "vxlan {}: binding {}:{}: {e}",
                            config.name, config.local, config.dstport
                        ),
                    )
                })?;
            rx.set_nonblocking(true)?;
            // Trains of datagrams in one read (Linux 5.0+); without, one datagram a read.
            if let Err(e) = setsockopt(&rx, sockopt::UdpGroSegment, &true) {
                tracing::debug!(error = %e, "no UDP_GRO: one datagram per read");
            }
            if config.udp6_zero_csum_rx && config.local.is_ipv6() {
                sys::set_udp6_zero_csum_rx(rx.as_fd())?;
            }
            let mut tx = Vec::new();
            let mut candidates = source_ports(config.srcport);
            while tx.len() < SEND_SOCKETS {
                let Some(port) = candidates.next() else {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("vxlan {}: no free source ports in the range", config.name),
                    ));
                };
                let s = match UdpSocket::bind(SocketAddr::new(config.local, port)) {
                    Ok(s) => s,
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse && port != 0 => continue,
                    Err(e) => return Err(e),
                };
                s.set_nonblocking(true)?;
                let fd = OwnedFd::from(s);
                sys::set_pmtudisc_dont(fd.as_fd(), config.local.is_ipv6())?;
                tx.push(fd);
            }
            Ok((rx, tx))
        };
        let (rx, tx) = match &config.netns {
            None => open()?,
            Some(ns) => {
                let file = std::fs::File::open(std::path::Path::new("/run/netns").join(ns))
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("vxlan underlay namespace {ns}: {e}"))
                    })?;
                crate::tap::in_netns(OwnedFd::from(file), open)?
            }
        };
        let remotes = config
            .remotes
            .iter()
            .map(|ip| (*ip, Vtep::default()))
            .collect();
        let from = config.local;
        Ok(VxlanPort {
            config,
            rx,
            tx,
            fdb: Mutex::new(HashMap::new()),
            remotes,
            others: Mutex::new(HashMap::new()),
            drops: DecapDrops::default(),
            rx_batch: Mutex::new(RxBatch {
                buf: vec![0; RX_BATCH],
                frames: Vec::new(),
                next: 0,
                from,
            }),
            udp_gso: AtomicBool::new(true),
        })
    }

    /// The port's configuration.
    pub fn config(&self) -> &VxlanConfig {
        &self.config
    }

    /// The VTEP a frame to `dst` goes to, if the port knows one (static, or learned recently).
    fn learned(&self, dst: MacAddr) -> Option<IpAddr> {
        let fdb = self.fdb.lock().unwrap_or_else(|e| e.into_inner());
        fdb.get(&dst)
            .filter(|(_, seen)| fresh(*seen))
            .map(|(ip, _)| *ip)
    }

    fn learn(&self, src: MacAddr, from: IpAddr) {
        if !self.config.learning || !src.is_valid_source() {
            return;
        }
        let mut fdb = self.fdb.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, Seen::Static)) = fdb.get(&src) {
            return;
        }
        if fdb.len() >= FDB_CAPACITY && !fdb.contains_key(&src) {
            fdb.retain(|_, (_, seen)| fresh(*seen));
            if fdb.len() >= FDB_CAPACITY {
                return;
            }
        }
        fdb.insert(src, (from, Seen::At(Instant::now())));
    }

    fn count(&self, vtep: IpAddr, rx: bool, packets: usize, bytes: usize) {
        match self.remotes.iter().find(|(ip, _)| *ip == vtep) {
            Some((_, v)) => v.count(rx, packets, bytes),
            None => self
                .others
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(vtep)
                .or_default()
                .count(rx, packets, bytes),
        }
    }

    /// Reads the next train of datagrams into `rx`, keeping the good ones' inner frames and
    /// counting the others by reason; `WouldBlock` when none is waiting.
    fn refill(&self, rx: &mut RxBatch) -> io::Result<()> {
        loop {
            let mut cmsg = nix::cmsg_space!(i32);
            let (n, from, size) = {
                let mut iov = [IoSliceMut::new(&mut rx.buf)];
                let msg = recvmsg::<SockaddrStorage>(
                    self.rx.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )?;
                let size = msg.cmsgs()?.find_map(|c| match c {
                    ControlMessageOwned::UdpGroSegments(size) => usize::try_from(size).ok(),
                    _ => None,
                });
                let from = msg.address.and_then(|a| socket_ip(&a));
                (msg.bytes, from, size)
            };
            let Some(from) = from else { continue };
            rx.frames.clear();
            rx.next = 0;
            rx.from = from;
            let size = size.filter(|&s| s > 0).unwrap_or(n.max(1));
            for start in (0..n).step_by(size) {
                let end = (start + size).min(n);
                let dropped = match check_header(&rx.buf[start..end], self.config.vni) {
                    Ok(())
                        if MacAddr::from_slice(&rx.buf[start + HEADER_LEN + 6..])
                            .is_some_and(|src| src.is_valid_source()) =>
                    {
                        rx.frames.push(start + HEADER_LEN..end);
                        continue;
                    }
                    Ok(()) => &self.drops.bad_inner,
                    Err(Decap::Short) => &self.drops.short,
                    Err(Decap::BadFlags) => &self.drops.bad_flags,
                    Err(Decap::UnknownVni) => &self.drops.unknown_vni,
                };
                dropped.fetch_add(1, Relaxed);
            }
            if !rx.frames.is_empty() {
                return Ok(());
            }
        }
    }

    /// Sends the datagrams of `batch` to `to`: runs of equal-sized ones in one `sendmsg` with
    /// `UDP_SEGMENT` (the kernel, or the NIC, cuts them), at most 64 KiB and 64 at a time.
    fn send_batch(&self, socket: &OwnedFd, to: SocketAddr, batch: &TxBatch) -> io::Result<()> {
        let max_payload = if to.is_ipv4() { 65_507 } else { 65_527 };
        let to = SockaddrStorage::from(to);
        let lens = &batch.lens;
        let (mut i, mut at) = (0, 0);
        while i < lens.len() {
            let size = lens[i];
            let (mut n, mut bytes) = (1, size);
            if self.udp_gso.load(Relaxed) {
                while i + n < lens.len()
                    && n < MAX_GSO_SEGMENTS
                    && lens[i + n - 1] == size
                    && lens[i + n] <= size
                    && bytes + lens[i + n] <= max_payload
                {
                    bytes += lens[i + n];
                    n += 1;
                }
            }
            let iov = [IoSlice::new(&batch.buf[at..at + bytes])];
            let segment_size = size as u16;
            let gso = [ControlMessage::UdpGsoSegments(&segment_size)];
            let cmsgs: &[ControlMessage] = if n > 1 { &gso } else { &[] };
            match sendmsg(
                socket.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::empty(),
                Some(&to),
            ) {
                Ok(_) => {}
                Err(nix::Error::EAGAIN) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(e)
                    if n > 1
                        && matches!(
                            e,
                            nix::Error::EINVAL | nix::Error::EIO | nix::Error::ENOPROTOOPT
                        ) =>
                {
                    tracing::info!(error = %e, "no UDP_SEGMENT: one datagram per send");
                    self.udp_gso.store(false, Relaxed);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            i += n;
            at += bytes;
        }
        Ok(())
    }
}

/// The IP address of a received datagram's source.
fn socket_ip(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(a) = addr.as_sockaddr_in() {
        Some(IpAddr::V4(a.ip()))
    } else {
        addr.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip()))
    }
}

/// Whether a MAC → VTEP entry still holds.
fn fresh(seen: Seen) -> bool {
    match seen {
        Seen::Static => true,
        Seen::At(t) => t.elapsed() < FDB_AGEING,
    }
}

/// The source ports to try binding: the kernel's pick (0) without a range; else evenly spaced
/// ones first, then every other port of the range (in case those are taken).
fn source_ports(range: Option<(u16, u16)>) -> Box<dyn Iterator<Item = u16>> {
    match range {
        None => Box::new(std::iter::repeat_n(0, SEND_SOCKETS)),
        Some((min, max)) => {
            let span = u32::from(max - min) + 1;
            let spaced: Vec<u16> = (0..SEND_SOCKETS as u32)
                .map(|i| min + (i * span / SEND_SOCKETS as u32) as u16)
                .collect();
            let rest: Vec<u16> = (min..=max).filter(|p| !spaced.contains(p)).collect();
            let mut all = spaced;
            all.dedup();
            all.extend(rest);
            Box::new(all.into_iter())
        }
    }
}

impl PortDevice for VxlanPort {
    /// Reads and writes GSO frames and partial checksums; frames read always come behind a
    /// virtio-net header.
    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities::new("vxlan").vnet_header(true)
    }

    /// Reads one frame behind a virtio-net header: zero; or GSO for consecutive TCP segments of
    /// a train joined into one ([`gro::join`]), or for an inner TCP frame longer than the port's
    /// MTU (a sender's kernel on a local underlay never cut it).
    fn recv(&self, _queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        let mtu = self.config.underlay_mtu - self.config.overhead();
        let mut rx = self.rx_batch.lock().unwrap_or_else(|e| e.into_inner());
        if rx.next >= rx.frames.len() {
            self.refill(&mut rx)?;
        }
        let (header, body) = buf.split_at_mut(VNET_HDR_LEN);
        let header: &mut [u8; VNET_HDR_LEN] = header
            .try_into()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let RxBatch {
            buf: data,
            frames,
            next,
            from,
        } = &mut *rx;
        let rest = &frames[*next..];
        let joined = if rest.len() > 1 {
            let slices: Vec<&[u8]> = rest.iter().map(|r| &data[r.clone()]).collect();
            gro::join(&slices, body)
        } else {
            None
        };
        let (vnet, taken, len) = match joined {
            Some(joined) => joined,
            None => {
                let r = rest[0].clone();
                let len = r.len().min(body.len());
                body[..len].copy_from_slice(&data[r.start..r.start + len]);
                let frame = &mut body[..len];
                let vnet = match vnet::tcp_gso_header(frame, mtu) {
                    Some(gso) => gso,
                    None => {
                        // Over a local underlay (veth) the sender's kernel never computed the
                        // inner checksum (its own vxlan device trusts it); we finish it here.
                        vnet::finish_partial_checksum(frame);
                        VnetHeader::default()
                    }
                };
                (vnet, 1, len)
            }
        };
        // Per VTEP: the datagrams and their inner bytes, as they came.
        let bytes = rest[..taken].iter().map(|r| r.len()).sum();
        *next += taken;
        vnet.emit(header);
        if let Some(src) = MacAddr::from_slice(&body[6..]) {
            self.learn(src, *from);
        }
        self.count(*from, true, taken, bytes);
        Ok(VNET_HDR_LEN + len)
    }

    /// Sends `wire` (`[virtio-net header | frame]`): a GSO frame cut into datagrams sent in
    /// `UDP_SEGMENT` runs; a partial checksum finished first.
    fn send(&self, wire: &[u8]) -> io::Result<()> {
        let vnet = VnetHeader::parse(wire).ok_or(io::ErrorKind::InvalidInput)?;
        let frame = &wire[VNET_HDR_LEN..];
        let dst = MacAddr::from_slice(frame).ok_or(io::ErrorKind::InvalidInput)?;
        if frame.len() < 14 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let header = header(self.config.vni);
        let socket = &self.tx[(flow_hash(frame) % self.tx.len() as u64) as usize];
        let one;
        let targets: &[IpAddr] = match (dst.is_multicast(), self.learned(dst)) {
            (false, Some(vtep)) => {
                one = [vtep];
                &one
            }
            _ => &self.config.remotes,
        };
        TX_BATCH.with_borrow_mut(|batch| {
            batch.buf.clear();
            batch.lens.clear();
            if vnet.is_gso() {
                gso::GsoFrame::parse(frame, &vnet)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
                    .segment_into(&header, &mut batch.buf, &mut batch.lens);
            } else {
                batch.buf.extend_from_slice(&header);
                batch.buf.extend_from_slice(frame);
                if vnet.needs_csum() {
                    vnet::complete_checksum(&mut batch.buf[HEADER_LEN..], &vnet);
                }
                batch.lens.push(batch.buf.len());
            }
            let inner = batch.buf.len() - HEADER_LEN * batch.lens.len();
            let mut result = Ok(());
            for vtep in targets {
                let to = SocketAddr::new(*vtep, self.config.dstport);
                match self.send_batch(socket, to, batch) {
                    Ok(()) => self.count(*vtep, false, batch.lens.len(), inner),
                    Err(e) => result = Err(e),
                }
            }
            result
        })
    }

    fn fd(&self, _queue: usize) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    fn status(&self) -> DeviceStatus {
        DeviceStatus::with_mtu(self.config.underlay_mtu - self.config.overhead())
    }

    fn tunnel(&self) -> Option<&dyn Tunnel> {
        Some(self)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        self.counters()
    }
}

impl Tunnel for VxlanPort {
    fn add_remote(&self, mac: MacAddr, remote: IpAddr) -> io::Result<()> {
        if remote.is_ipv4() != self.config.local.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{remote} is not of the underlay's family"),
            ));
        }
        let mut fdb = self.fdb.lock().unwrap_or_else(|e| e.into_inner());
        fdb.insert(mac, (remote, Seen::Static));
        Ok(())
    }

    fn remove_remote(&self, mac: MacAddr) {
        let mut fdb = self.fdb.lock().unwrap_or_else(|e| e.into_inner());
        fdb.remove(&mac);
    }
}

impl VxlanPort {
    /// Decap drops by reason, and each VTEP's traffic.
    fn counters(&self) -> Vec<(String, u64)> {
        let mut out = vec![
            ("decap_short".to_owned(), self.drops.short.load(Relaxed)),
            (
                "decap_bad_flags".to_owned(),
                self.drops.bad_flags.load(Relaxed),
            ),
            (
                "decap_unknown_vni".to_owned(),
                self.drops.unknown_vni.load(Relaxed),
            ),
            (
                "decap_bad_inner".to_owned(),
                self.drops.bad_inner.load(Relaxed),
            ),
        ];
        let others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        let mut vteps: Vec<(&IpAddr, &Vtep)> = self
            .remotes
            .iter()
            .map(|(ip, v)| (ip, v))
            .chain(others.iter())
            .collect();
        vteps.sort_by_key(|(ip, _)| **ip);
        for (ip, v) in vteps {
            for (i, what) in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"]
                .iter()
                .enumerate()
            {
                out.push((format!("vtep_{ip}_{what}"), v.0[i].load(Relaxed)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_linux_defaults_and_refuse_nonsense() {
        let c = VxlanConfig::parse("vx0:vni=42,local=10.0.0.1,remote=10.0.0.2+10.0.0.3").unwrap();
        assert_eq!(c.vni, 42);
        assert_eq!(c.dstport, 4789, "IANA's port, not Linux's 8472 default");
        assert_eq!(c.remotes.len(), 2);
        assert!(c.learning);
        let c = VxlanConfig::parse(
            "vx0:vni=1,local=10.0.0.1,remote=10.0.0.2,dstport=8472,mtu=9000,netns=u,learning=off",
        )
        .unwrap();
        assert_eq!((c.dstport, c.underlay_mtu, c.learning), (8472, 9000, false));
        assert_eq!(c.netns.as_deref(), Some("u"));
        for bad in [
            "vx0",
            "vx0:local=10.0.0.1,remote=10.0.0.2",
            "vx0:vni=16777216,local=10.0.0.1,remote=10.0.0.2",
            "vx0:vni=1,remote=10.0.0.2",
            "vx0:vni=1,local=10.0.0.1",
            "vx0:vni=1,local=10.0.0.1,remote=x",
            "vx0:vni=1,local=10.0.0.1,remote=10.0.0.2,dstport=0",
            "vx0:vni=1,local=10.0.0.1,remote=10.0.0.2,ttl=5",
            "vx0:vni=1,local=10.0.0.1,remote=10.0.0.2,mtu=NaN",
            "a2345678901234567:vni=1,local=10.0.0.1,remote=10.0.0.2",
        ] {
            assert!(VxlanConfig::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers_are_rfc_7348s_and_anything_else_is_dropped_by_reason() {
        let h = header(0x12_3456);
        assert_eq!(h, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let mut d = h.to_vec();
        d.extend_from_slice(&[0u8; 14]);
        assert_eq!(check_header(&d, 0x12_3456), Ok(()));
        assert_eq!(check_header(&d, 7), Err(Decap::UnknownVni));
        assert_eq!(check_header(&d[..20], 0x12_3456), Err(Decap::Short));
        let mut flags = d.clone();
        flags[0] = 0x0c;
        assert_eq!(check_header(&flags, 0x12_3456), Err(Decap::BadFlags));
        let mut reserved = d.clone();
        reserved[7] = 1;
        assert_eq!(check_header(&reserved, 0x12_3456), Err(Decap::BadFlags));
    }

    #[test]
    fn source_ports_stay_in_their_range_spread_and_cover_it() {
        let ports: Vec<u16> = source_ports(Some((40000, 40999))).collect();
        assert_eq!(ports.len(), 1000);
        assert!(ports.iter().all(|p| (40000..=40999).contains(p)));
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 1000, "every port once");
        assert!(
            ports[1] - ports[0] >= 100,
            "the first tries spread over the range"
        );
        assert!(source_ports(None).all(|p| p == 0), "the kernel picks");
        let c = VxlanConfig::parse("v:vni=1,local=fd00::1,remote=fd00::2,srcport=5-9").unwrap();
        assert_eq!((c.overhead(), c.srcport), (OVERHEAD_V6, Some((5, 9))));
        assert!(VxlanConfig::parse("v:vni=1,local=fd00::1,remote=10.0.0.2").is_err());
        assert!(VxlanConfig::parse("v:vni=1,local=10.0.0.1,remote=10.0.0.2,srcport=9-5").is_err());
    }

    #[test]
    fn a_flow_keeps_its_source_port_and_flows_spread() {
        let mut frame = vec![0u8; 60];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14] = 0x45;
        let sockets: std::collections::HashSet<u64> = (0..64u8)
            .map(|i| {
                frame[14 + 19] = i; // destination address
                flow_hash(&frame) % SEND_SOCKETS as u64
            })
            .collect();
        assert!(sockets.len() > SEND_SOCKETS / 2, "{sockets:?}");
        assert_eq!(flow_hash(&frame), flow_hash(&frame.clone()));
    }
}
