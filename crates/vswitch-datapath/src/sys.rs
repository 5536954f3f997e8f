//! `unsafe` for devices and sockets: the few ioctls and syscalls that std does not wrap (`bpf` and
//! `hugepage` hold the crate's only other `unsafe` code).
//!
//! Each function takes and returns owned or borrowed fds and plain values, and turns errno into
//! `io::Error` in one place, so the rest of the crate stays safe.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

// The TUN/TAP ioctls and flags, as `<linux/if_tun.h>` has them (libc's names).
use libc::{
    TUNGETDEVNETNS, TUNGETFEATURES, TUNGETIFF, TUNSETIFF, TUNSETOFFLOAD, TUNSETSTEERINGEBPF,
};

/// `IFF_TAP`: Ethernet frames, not IP packets.
pub const IFF_TAP: libc::c_short = libc::IFF_TAP as libc::c_short;
/// `IFF_NO_PI`: no 4-byte packet-information prefix.
pub const IFF_NO_PI: libc::c_short = libc::IFF_NO_PI as libc::c_short;
/// `IFF_MULTI_QUEUE`: several fds (queues) on one device; the kernel spreads flows over them.
pub const IFF_MULTI_QUEUE: libc::c_short = libc::IFF_MULTI_QUEUE as libc::c_short;
/// `IFF_VNET_HDR`: a `virtio_net_hdr` in front of every frame.
pub const IFF_VNET_HDR: libc::c_short = libc::IFF_VNET_HDR as libc::c_short;
/// Partial checksums and TCP segments up to 64 KiB, both ways.
pub const TUN_OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
/// UDP segmentation offload (Linux 6.2+), trains of datagrams in one frame (what `UDP_SEGMENT`
/// senders such as QUIC stacks make).
pub const TUN_USO: libc::c_uint = libc::TUN_F_USO4 | libc::TUN_F_USO6;

fn ifreq_with_name(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data (integers, arrays and a union of them); all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// `TUNSETSTEERINGEBPF`: the device picks queues with the BPF program `prog` (a socket filter
/// whose return value, modulo the number of queues, is the queue).
pub fn tun_set_steering(fd: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let prog_fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: valid fd; this ioctl reads one int (the program's fd) through the pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETSTEERINGEBPF, &prog_fd) })?;
    Ok(())
}

pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `TUNSETIFF`: attaches `fd` (an open `/dev/net/tun`) to device `name` with `flags`.
pub fn tun_set_iff(fd: BorrowedFd<'_>, name: &str, flags: libc::c_short) -> io::Result<()> {
    let mut req = ifreq_with_name(name)?;
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: `fd` is a valid open fd for the call's duration and `req` is a valid, initialised
    // ifreq that the kernel reads and writes within its size.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) })?;
    Ok(())
}

/// `TUNGETFEATURES`: the `IFF_*` flags the driver supports.
pub fn tun_get_features(fd: BorrowedFd<'_>) -> io::Result<libc::c_uint> {
    let mut features: libc::c_uint = 0;
    // SAFETY: valid fd; the kernel writes one unsigned int to the pointer we pass.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETFEATURES, &mut features) })?;
    Ok(features)
}

/// `TUNSETOFFLOAD`: tells the kernel which offloads the fd's reader handles.
pub fn tun_set_offload(fd: BorrowedFd<'_>, offloads: libc::c_uint) -> io::Result<()> {
    // SAFETY: valid fd; this ioctl takes the flags by value.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, offloads as libc::c_ulong) })?;
    Ok(())
}

/// `SIOCGIFHWADDR` on a TUN/TAP fd: the device's MAC address.
pub fn tun_get_hwaddr(fd: BorrowedFd<'_>) -> io::Result<[u8; 6]> {
    let mut req = ifreq_with_name("")?;
    // SAFETY: valid fd and a valid ifreq the kernel fills in (tun answers SIOCGIFHWADDR on its fd).
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) })?;
    // SAFETY: after SIOCGIFHWADDR the union holds a sockaddr with the address in sa_data.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}

/// `SIOCGIFHWADDR` on interface `name`, in the namespace `sock` was created in.
pub fn if_hwaddr(sock: BorrowedFd<'_>, name: &str) -> io::Result<[u8; 6]> {
    let mut req = ifreq_with_name(name)?;
    // SAFETY: valid socket fd and a valid ifreq the kernel fills in.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) })?;
    // SAFETY: as above.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}

/// `TUNGETIFF`: the current name of the device `fd` is attached to (it may have been renamed).
pub fn tun_get_name(fd: BorrowedFd<'_>) -> io::Result<String> {
    let mut req = ifreq_with_name("")?;
    // SAFETY: as in `tun_set_iff`: valid fd, valid ifreq the kernel fills in.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, &mut req) })?;
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `TUNGETDEVNETNS`: the network namespace the device lives in now, as an owned fd.
pub fn tun_get_netns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: valid fd; this ioctl takes no argument and returns a new fd or -1.
    let ns = check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETDEVNETNS) })?;
    // SAFETY: on success the kernel returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ns) })
}

/// An `AF_INET` datagram socket, the handle for interface ioctls in the caller's namespace.
pub fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SIOCGIFMTU` on interface `name`, in the namespace `sock` was created in.
pub fn if_mtu(sock: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    let mut req = ifreq_with_name(name)?;
    // SAFETY: valid socket fd and a valid ifreq the kernel fills in.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) })?;
    // SAFETY: after SIOCGIFMTU the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

/// Sets `IFF_UP` on interface `name`, in the namespace `sock` was created in.
pub fn if_set_up(sock: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut req = ifreq_with_name(name)?;
    // SAFETY: valid socket fd and a valid ifreq the kernel fills in.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: after SIOCGIFFLAGS the union holds the flags; we write the same member back.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; the kernel only reads `req`.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) })?;
    Ok(())
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets: a cable whose two ends keep frame
/// boundaries and report a hang-up when the other end closes.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io::Error::from)
}

/// Whether an interface called `name` exists in the calling thread's namespace.
pub fn interface_exists(name: &CStr) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// `ETH_P_ALL` in network byte order, as packet sockets want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
// `SOL_PACKET` options and flags, as `<linux/if_packet.h>` has them (libc's names).
use libc::{
    PACKET_ADD_MEMBERSHIP, PACKET_AUXDATA, PACKET_FANOUT, PACKET_FANOUT_DATA, PACKET_FANOUT_EBPF,
    PACKET_FANOUT_FLAG_IGNORE_OUTGOING, PACKET_FANOUT_FLAG_UNIQUEID, PACKET_FANOUT_HASH,
    PACKET_IGNORE_OUTGOING, PACKET_QDISC_BYPASS, PACKET_STATISTICS, PACKET_VNET_HDR,
    TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID,
};
/// `PACKET_MR_PROMISC`, as `packet_mreq.mr_type` takes it.
const PACKET_MR_PROMISC: libc::c_ushort = libc::PACKET_MR_PROMISC as libc::c_ushort;
/// Socket buffer size asked for packet sockets.
const SOCKET_BUFFER: libc::c_int = 8 << 20;

fn set_packet_option(
    fd: BorrowedFd<'_>,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set_int_option(fd, libc::SOL_PACKET, option, value)
}

/// `IP_MTU_DISCOVER = IP_PMTUDISC_DONT` (or IPv6's): datagrams from `fd` leave without DF
/// (as Linux's vxlan sends), fragmented by the kernel if a link needs it.
pub(crate) fn set_pmtudisc_dont(fd: BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int_option(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DONT,
        )
    } else {
        set_int_option(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        )
    }
}

/// `UDP_NO_CHECK6_RX`: accept IPv6 UDP datagrams with a zero checksum (RFC 6935, Linux's
/// vxlan `udp6zerocsumrx`).
pub(crate) fn set_udp6_zero_csum_rx(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int_option(fd, libc::IPPROTO_UDP, libc::UDP_NO_CHECK6_RX, 1)
}

/// `SO_ATTACH_BPF`: runs `program` (a socket filter) on every frame `fd` would receive.
pub(crate) fn attach_socket_program(fd: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    set_int_option(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_BPF,
        program.as_raw_fd(),
    )
}

fn set_int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: valid fd; we pass a pointer to an int and its exact size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Makes the bound packet socket `fd` the first of a new fanout group choosing sockets by `mode`,
/// with an id the kernel picks, so no other program's group on the interface can be joined by mistake, and
/// returns the id for [`join_packet_fanout`].
pub fn create_packet_fanout(fd: BorrowedFd<'_>, mode: FanoutMode) -> io::Result<u16> {
    set_packet_option(
        fd,
        PACKET_FANOUT,
        ((mode.value() | PACKET_FANOUT_FLAG_UNIQUEID) << 16) as libc::c_int,
    )?;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd; `value` is an int and `len` holds its exact size.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_FANOUT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok((value & 0xffff) as u16)
}

/// How a fanout group picks the socket for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutMode {
    /// By flow hash: each flow on one socket.
    Hash,
    /// By the answer of the program set with [`set_fanout_program`].
    Program,
}

impl FanoutMode {
    /// The mode, with `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`: `PACKET_IGNORE_OUTGOING` set on a
    /// socket doesn't reach its fanout group, which would otherwise read back every frame
    /// leaving the interface that the switch didn't send itself (the stack's, and those the
    /// fast path redirects).
    fn value(self) -> u32 {
        let mode = match self {
            FanoutMode::Hash => PACKET_FANOUT_HASH,
            FanoutMode::Program => PACKET_FANOUT_EBPF,
        };
        mode | PACKET_FANOUT_FLAG_IGNORE_OUTGOING
    }
}

/// Joins the bound packet socket `fd` to fanout group `group`: the kernel then hands each
/// received frame to one socket of the group, so several workers share one interface.
pub fn join_packet_fanout(fd: BorrowedFd<'_>, group: u16, mode: FanoutMode) -> io::Result<()> {
    set_packet_option(
        fd,
        PACKET_FANOUT,
        (u32::from(group) | (mode.value() << 16)) as libc::c_int,
    )
}

/// Gives the `FanoutMode::Program` group of `fd` its program (a socket filter whose answer,
/// modulo the sockets, picks one).
pub fn set_fanout_program(fd: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    set_packet_option(fd, PACKET_FANOUT_DATA, program.as_raw_fd())
}

/// `PACKET_STATISTICS`: frames the socket dropped (its buffer full) since the last call; the
/// kernel resets the count on every read.
pub fn packet_drops_since_last(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: valid fd; the kernel writes at most `len` bytes into `stats`, a tpacket_stats.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    })?;
    Ok(u64::from(stats.tp_drops))
}

/// An `AF_PACKET` raw socket bound to interface `ifindex`, non-blocking, in promiscuous mode,
/// not seeing the frames it sends itself, with a virtio-net header on every frame, and the VLAN
/// tags the kernel takes out of received frames reported ([`packet_recv`]).
pub fn packet_socket(ifindex: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; protocol 0 receives nothing until bound below.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_packet_option(fd.as_fd(), PACKET_VNET_HDR, 1)?;
    set_packet_option(fd.as_fd(), PACKET_IGNORE_OUTGOING, 1)?;
    // The kernel takes a received frame's VLAN tag out of its bytes (into the skb), and reports
    // it only in this control message: without it a tagged frame would leave untagged.
    set_packet_option(fd.as_fd(), PACKET_AUXDATA, 1)?;
    // The default receive buffer (~200 KiB) holds three 64 KiB segments: a burst overflows it
    // and TCP retransmits. Ask for more, past rmem_max when privileged.
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int_option(fd.as_fd(), libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
            set_int_option(fd.as_fd(), libc::SOL_SOCKET, plain, SOCKET_BUFFER)?;
        }
    }
    set_packet_option(fd.as_fd(), PACKET_QDISC_BYPASS, 1)?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ETH_P_ALL_BE;
    addr.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: valid fd; `addr` is a sockaddr_ll and we pass its exact size.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    // SAFETY: packet_mreq is plain old data; all-zero is valid.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = ifindex as libc::c_int;
    mreq.mr_type = PACKET_MR_PROMISC;
    // SAFETY: valid fd; `mreq` is a packet_mreq and we pass its exact size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_ADD_MEMBERSHIP,
            (&mreq as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// The VLAN tag the kernel kept beside a frame a packet socket received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    /// Priority, DEI and VLAN ID.
    pub tci: u16,
}

/// Receives one frame from a packet socket with `PACKET_AUXDATA` on into `buf`: its length,
/// and the VLAN tag the kernel took out of it, if any.
pub fn packet_recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<VlanTag>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one cmsghdr and a tpacket_auxdata, 8-byte aligned as cmsghdr needs.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain old data; all-zero is valid (no name, no control yet).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: valid fd; `msg` points at `iov` (covering `buf`) and `control`, all of which
    // outlive the call, with their exact lengths.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let mut tag = None;
    // SAFETY: `msg` was filled in by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR only walk the control
    // bytes it reported, and return null at their end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null headers from CMSG_FIRSTHDR/CMSG_NXTHDR lie within `control`.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_PACKET && header.cmsg_type == PACKET_AUXDATA {
            // SAFETY: a PACKET_AUXDATA message carries a tpacket_auxdata (plain old data) right
            // after its header, within `control`; read unaligned to be safe.
            let aux: libc::tpacket_auxdata =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            if aux.tp_status & TP_STATUS_VLAN_VALID != 0 {
                let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                    aux.tp_vlan_tpid
                } else {
                    0x8100
                };
                tag = Some(VlanTag {
                    tpid,
                    tci: aux.tp_vlan_tci,
                });
            }
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok((n, tag))
}
