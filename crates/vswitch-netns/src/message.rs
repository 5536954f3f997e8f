//! rtnetlink messages: building requests and reading replies, with no socket in sight.
//!
//! Only what the plumbing needs: `RTM_{NEW,DEL,GET}LINK` with names, MTU, MAC, namespace and a
//! veth peer; `RTM_NEWADDR`; `RTM_NEWROUTE` for a default route; the clsact qdisc and a cls_bpf
//! filter (`RTM_{NEW,DEL}{QDISC,TFILTER}`). Layouts follow `<linux/netlink.h>`,
//! `<linux/rtnetlink.h>`, `<linux/if_link.h>` and `<linux/pkt_cls.h>`; all fields are in host
//! byte order except addresses.

use std::net::IpAddr;

/// Message types.
pub const RTM_NEWLINK: u16 = 16;
/// Delete a link.
pub const RTM_DELLINK: u16 = 17;
/// Get a link.
pub const RTM_GETLINK: u16 = 18;
/// Add an address.
pub const RTM_NEWADDR: u16 = 20;
/// Add a route.
pub const RTM_NEWROUTE: u16 = 24;
/// Add a neighbour (for a bridge port or a vxlan device: an FDB entry).
pub const RTM_NEWNEIGH: u16 = 28;
/// Delete a neighbour.
pub const RTM_DELNEIGH: u16 = 29;
/// Add a queueing discipline.
pub const RTM_NEWQDISC: u16 = 36;
/// Delete a queueing discipline.
pub const RTM_DELQDISC: u16 = 37;
/// Add a traffic-control filter.
pub const RTM_NEWTFILTER: u16 = 44;
/// Delete a traffic-control filter.
pub const RTM_DELTFILTER: u16 = 45;
/// An error or acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// End of a dump.
pub const NLMSG_DONE: u16 = 3;

/// Header flags.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Ask for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x4;
/// Replace the object if it exists.
pub const NLM_F_REPLACE: u16 = 0x100;
/// Fail if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// Create the object.
pub const NLM_F_CREATE: u16 = 0x400;
/// Add to the object's list (a vxlan FDB entry's destinations).
pub const NLM_F_APPEND: u16 = 0x800;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_TXQLEN: u16 = 13;
const IFLA_STATS64: u16 = 23;
const IFLA_IFALIAS: u16 = 20;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const NLA_F_NESTED: u16 = 0x8000;

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// `NUD_PERMANENT`: a static entry, never aged.
const NUD_PERMANENT: u16 = 0x80;
/// `NTF_SELF`: the entry is the device's own (the vxlan FDB), not a bridge master's.
const NTF_SELF: u8 = 0x02;

/// `IFLA_VXLAN_*` (`<linux/if_link.h>`).
mod vxlan {
    pub const ID: u16 = 1;
    pub const LOCAL: u16 = 4;
    pub const LEARNING: u16 = 7;
    pub const PORT_RANGE: u16 = 10;
    pub const PORT: u16 = 15;
    pub const LOCAL6: u16 = 17;
    pub const UDP_CSUM: u16 = 18;
    pub const UDP_ZERO_CSUM6_RX: u16 = 20;
}

/// A Linux `vxlan` device's settings, as `ip link add NAME type vxlan ...` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanLink {
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The local address (its family is the underlay's).
    pub local: IpAddr,
    /// The UDP destination port.
    pub dstport: u16,
    /// Learn inner source MAC → remote from what arrives.
    pub learning: bool,
    /// The outer UDP source ports to send from, if not the kernel's default range.
    pub srcport: Option<(u16, u16)>,
    /// Accept a zero UDP checksum over IPv6.
    pub udp6_zero_csum_rx: bool,
}

/// `IFF_UP` in `ifinfomsg.ifi_flags`.
pub const IFF_UP: u32 = 0x1;

const NLMSG_HDRLEN: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request under construction: a netlink header, a fixed family header, then attributes.
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Request {
    /// A request of type `kind` with `flags` (NLM_F_REQUEST is added) and sequence `seq`.
    pub fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        Request {
            buf,
            nests: Vec::new(),
        }
    }

    /// Appends an `ifinfomsg` for interface `index` (0: by name), setting `flags` under `change`.
    pub fn ifinfo(mut self, index: u32, flags: u32, change: u32) -> Self {
        self.put_ifinfo(index, flags, change);
        self
    }

    fn put_ifinfo(&mut self, index: u32, flags: u32, change: u32) {
        self.buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        self.buf.extend_from_slice(&0u16.to_ne_bytes()); // device type
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
    }

    /// Appends an `ndmsg` for a static FDB entry of the device `index` itself (`bridge fdb
    /// ... self permanent`).
    pub fn fdb_ndmsg(mut self, index: u32) -> Self {
        self.buf
            .extend_from_slice(&[libc::AF_BRIDGE as u8, 0, 0, 0]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&NUD_PERMANENT.to_ne_bytes());
        self.buf.extend_from_slice(&[NTF_SELF, 0]);
        self
    }

    /// An FDB entry's MAC and, for a tunnel, its remote.
    pub fn fdb_entry(self, mac: [u8; 6], dst: Option<IpAddr>) -> Self {
        let req = self.attr(NDA_LLADDR, &mac);
        match dst {
            Some(dst) => req.attr(NDA_DST, &ip_bytes(dst)),
            None => req,
        }
    }

    /// `IFLA_LINKINFO { KIND "vxlan", DATA { ... } }` for `link`, UDP checksums on.
    pub fn vxlan(self, link: &VxlanLink) -> Self {
        let mut req = self
            .begin_nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "vxlan")
            .begin_nest(IFLA_INFO_DATA)
            .attr_u32(vxlan::ID, link.vni)
            .attr(vxlan::PORT, &link.dstport.to_be_bytes())
            .attr(vxlan::LEARNING, &[u8::from(link.learning)])
            .attr(vxlan::UDP_CSUM, &[1])
            .attr(
                vxlan::UDP_ZERO_CSUM6_RX,
                &[u8::from(link.udp6_zero_csum_rx)],
            );
        req = match link.local {
            IpAddr::V4(a) => req.attr(vxlan::LOCAL, &a.octets()),
            IpAddr::V6(a) => req.attr(vxlan::LOCAL6, &a.octets()),
        };
        if let Some((low, high)) = link.srcport {
            let mut range = low.to_be_bytes().to_vec();
            range.extend_from_slice(&high.to_be_bytes());
            req = req.attr(vxlan::PORT_RANGE, &range);
        }
        req.end_nest().end_nest()
    }

    /// Appends a `tcmsg` for interface `index`: the object's `handle`, its `parent` and `info`
    /// (for a filter: priority in the upper 16 bits, protocol in network order in the lower).
    pub fn tcmsg(mut self, index: u32, handle: u32, parent: u32, info: u32) -> Self {
        self.buf
            .extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&handle.to_ne_bytes());
        self.buf.extend_from_slice(&parent.to_ne_bytes());
        self.buf.extend_from_slice(&info.to_ne_bytes());
        self
    }

    /// Appends an `ifaddrmsg` for an address of `prefix` bits on interface `index`.
    pub fn ifaddr(mut self, addr: IpAddr, prefix: u8, index: u32) -> Self {
        self.buf
            .extend_from_slice(&[family(addr), prefix, 0, 0 /* RT_SCOPE_UNIVERSE */]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self
    }

    /// Appends an `rtmsg` for a main-table unicast route to a `dst_len`-bit prefix.
    pub fn rtmsg(mut self, addr_family: u8, dst_len: u8) -> Self {
        // family, dst_len, src_len, tos, table RT_TABLE_MAIN, protocol RTPROT_BOOT,
        // scope RT_SCOPE_UNIVERSE, type RTN_UNICAST; then flags.
        self.buf
            .extend_from_slice(&[addr_family, dst_len, 0, 0, 254, 3, 0, 1]);
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self
    }

    /// Appends attribute `kind` with raw `data`.
    pub fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        self.put_attr(kind, data);
        self
    }

    fn put_attr(&mut self, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// Appends a NUL-terminated string attribute.
    pub fn attr_str(self, kind: u16, s: &str) -> Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    /// Appends a `u32` attribute.
    pub fn attr_u32(self, kind: u16, v: u32) -> Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    /// The interface name attribute.
    pub fn ifname(self, name: &str) -> Self {
        self.attr_str(IFLA_IFNAME, name)
    }

    /// The alias attribute.
    pub fn alias(self, alias: &str) -> Self {
        self.attr_str(IFLA_IFALIAS, alias)
    }

    /// The MTU attribute.
    pub fn mtu(self, mtu: u32) -> Self {
        self.attr_u32(IFLA_MTU, mtu)
    }

    /// The hardware address attribute.
    pub fn mac(self, mac: [u8; 6]) -> Self {
        self.attr(IFLA_ADDRESS, &mac)
    }

    /// Move to (or, for a veth peer, create in) the namespace open as `fd`.
    pub fn netns_fd(self, fd: i32) -> Self {
        self.attr(IFLA_NET_NS_FD, &fd.to_ne_bytes())
    }

    /// Enslaves the link to the bridge with index `master` (0 to release it).
    pub fn master(self, master: u32) -> Self {
        self.attr_u32(IFLA_MASTER, master)
    }

    /// `IFLA_LINKINFO { KIND kind }`, for link types that need no further data (e.g. "bridge").
    pub fn link_kind(self, kind: &str) -> Self {
        self.begin_nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, kind)
            .end_nest()
    }

    /// Opens a nested attribute; close it with [`Request::end_nest`].
    pub fn begin_nest(mut self, kind: u16) -> Self {
        self.nests.push(self.buf.len());
        self.put_attr(kind | NLA_F_NESTED, &[]);
        self
    }

    /// Closes the innermost nested attribute.
    pub fn end_nest(mut self) -> Self {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// `IFLA_LINKINFO { KIND "veth", DATA { PEER { ifinfomsg, name, [mac], [netns] } } }`.
    pub fn veth_peer(self, peer: &str, peer_mac: Option<[u8; 6]>, peer_netns: Option<i32>) -> Self {
        let mut req = self
            .begin_nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin_nest(IFLA_INFO_DATA)
            .begin_nest(VETH_INFO_PEER);
        req.put_ifinfo(0, 0, 0);
        let mut req = req.ifname(peer);
        if let Some(mac) = peer_mac {
            req = req.mac(mac);
        }
        if let Some(fd) = peer_netns {
            req = req.netns_fd(fd);
        }
        req.end_nest().end_nest().end_nest()
    }

    /// Local and peer address attributes of an `RTM_NEWADDR`.
    pub fn address(self, addr: IpAddr) -> Self {
        let bytes = ip_bytes(addr);
        self.attr(IFA_LOCAL, &bytes).attr(IFA_ADDRESS, &bytes)
    }

    /// The destination attribute of a route (its prefix length is in the `rtmsg`).
    pub fn destination(self, dst: IpAddr) -> Self {
        self.attr(RTA_DST, &ip_bytes(dst))
    }

    /// The gateway attribute of a route.
    pub fn gateway(self, gw: IpAddr) -> Self {
        self.attr(RTA_GATEWAY, &ip_bytes(gw))
    }

    /// The finished message bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// The address family byte for `addr`.
pub fn family(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn ip_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// What a link description says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Hardware address, if it has a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Transmit queue length (`txqueuelen`).
    pub tx_queue_len: Option<u32>,
    /// Its error and drop counters, if the kernel sent them.
    pub errors: Option<LinkErrors>,
    /// Its alias (`ip link set NAME alias TEXT`), if it has one.
    pub alias: Option<String>,
    /// `IFF_*` flags as the kernel reports them (`IFF_RUNNING`: operationally up).
    pub flags: u32,
}

/// A link's error and drop counters, from `rtnl_link_stats64` (`ip -s link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkErrors {
    /// Frames received that were bad.
    pub rx_errors: u64,
    /// Frames that could not be sent.
    pub tx_errors: u64,
    /// Frames received and dropped.
    pub rx_dropped: u64,
    /// Frames dropped before sending.
    pub tx_dropped: u64,
}

impl LinkErrors {
    /// Reads the four from a `rtnl_link_stats64` (`u64`s: rx/tx packets, rx/tx bytes, rx/tx
    /// errors, rx/tx dropped, ...).
    fn parse(data: &[u8]) -> Option<LinkErrors> {
        let at = |i: usize| -> Option<u64> {
            Some(u64::from_ne_bytes(
                data.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(LinkErrors {
            rx_errors: at(4)?,
            tx_errors: at(5)?,
            rx_dropped: at(6)?,
            tx_dropped: at(7)?,
        })
    }
}

/// `IFF_RUNNING`: the link is operationally up. The kernel sets it (and starts the device's
/// queueing discipline) a moment after the carrier comes on: until then frames sent are lost.
pub const IFF_RUNNING: u32 = 0x40;

impl LinkInfo {
    /// Operationally up: frames sent now go out.
    pub fn is_running(&self) -> bool {
        self.flags & IFF_RUNNING != 0
    }
}

fn parse_link(body: &[u8]) -> LinkInfo {
    let mut info = LinkInfo {
        index: u32::from_ne_bytes([body[4], body[5], body[6], body[7]]),
        flags: u32::from_ne_bytes([body[8], body[9], body[10], body[11]]),
        ..LinkInfo::default()
    };
    let mut attrs = &body[16..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match (kind, data.len()) {
            (IFLA_ADDRESS, 6) => info.mac = data.try_into().ok(),
            (IFLA_MTU, 4) => {
                info.mtu = Some(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]))
            }
            (IFLA_TXQLEN, 4) => {
                info.tx_queue_len = Some(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]))
            }
            (IFLA_STATS64, _) => info.errors = LinkErrors::parse(data),
            (IFLA_IFALIAS, _) => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                info.alias = Some(String::from_utf8_lossy(&data[..end]).into_owned());
            }
            _ => {}
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    info
}

/// One message of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An acknowledgement (error 0) or an error, as a positive errno.
    Status {
        /// Sequence number of the request it answers.
        seq: u32,
        /// 0 for success, else the errno.
        errno: i32,
        /// Why, in the kernel's words (`NETLINK_EXT_ACK`), when it said.
        message: Option<String>,
    },
    /// A link description (answer to `RTM_GETLINK`).
    Link {
        /// Sequence number.
        seq: u32,
        /// What it says of the link.
        info: LinkInfo,
    },
    /// End of a dump.
    Done,
    /// Anything else.
    Other,
}

/// `NLM_F_CAPPED` on an error: only the request's header is echoed.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS` on an error: attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's message, a NUL-terminated string.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// The kernel's own words in an error's extended acknowledgement (`body`: errno, the echoed
/// request, then attributes), if it has any.
fn ext_ack_message(body: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?) as usize
    };
    let mut attrs = body.get(4 + align4(echoed)..)?;
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &attrs[4..len];
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            return Some(String::from_utf8_lossy(&text[..end]).into_owned());
        }
        attrs = attrs.get(align4(len)..)?;
    }
    None
}

/// Splits a datagram from the kernel into messages. Truncated or malformed tails are ignored.
pub fn parse_replies(mut data: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let u32_at = |d: &[u8], o: usize| u32::from_ne_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]]);
        let len = u32_at(data, 0) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let seq = u32_at(data, 8);
        let body = &data[NLMSG_HDRLEN..len];
        out.push(match kind {
            NLMSG_ERROR if body.len() >= 4 => Reply::Status {
                seq,
                errno: -(u32_at(body, 0) as i32),
                message: ext_ack_message(body, u16::from_ne_bytes([data[6], data[7]])),
            },
            NLMSG_DONE => Reply::Done,
            RTM_NEWLINK if body.len() >= 16 => Reply::Link {
                seq,
                info: parse_link(body),
            },
            _ => Reply::Other,
        });
        data = &data[align4(len).min(data.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_up_by_name_layout() {
        let msg = Request::new(RTM_NEWLINK, NLM_F_ACK, 7)
            .ifinfo(0, IFF_UP, IFF_UP)
            .ifname("tap0")
            .finish();
        // 16 header + 16 ifinfomsg + (4 + "tap0\0" = 9, padded to 12)
        assert_eq!(msg.len(), 44);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 44);
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), RTM_NEWLINK);
        assert_eq!(
            u16::from_ne_bytes([msg[6], msg[7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(msg[24..28].try_into().unwrap()), IFF_UP);
        assert_eq!(u16::from_ne_bytes([msg[32], msg[33]]), 9);
        assert_eq!(u16::from_ne_bytes([msg[34], msg[35]]), IFLA_IFNAME);
        assert_eq!(&msg[36..41], b"tap0\0");
    }

    #[test]
    fn veth_nesting_lengths_add_up() {
        let msg = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, 1)
            .ifinfo(0, 0, 0)
            .ifname("a")
            .veth_peer("b", None, Some(5))
            .finish();
        // Walk the attributes after the ifinfomsg: IFNAME, then LINKINFO spanning the rest.
        let attrs = &msg[32..];
        let first = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let linkinfo = &attrs[align4(first)..];
        let li_len = u16::from_ne_bytes([linkinfo[0], linkinfo[1]]) as usize;
        assert_eq!(li_len, linkinfo.len());
        assert_eq!(
            u16::from_ne_bytes([linkinfo[2], linkinfo[3]]),
            IFLA_LINKINFO | NLA_F_NESTED
        );
        // KIND "veth\0" (4 + 5 -> 12), then DATA nest holding PEER nest.
        let data = &linkinfo[4 + 12..];
        let data_len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        assert_eq!(data_len, data.len());
        let peer = &data[4..];
        let peer_len = u16::from_ne_bytes([peer[0], peer[1]]) as usize;
        // PEER: 4 + ifinfomsg 16 + IFNAME "b\0" 8 + NET_NS_FD 8
        assert_eq!(peer_len, 4 + 16 + 8 + 8);
    }

    #[test]
    fn parses_ack_error_and_link() {
        let mut data = Vec::new();
        // An error message: header + errno -17 + the original header.
        data.extend_from_slice(&36u32.to_ne_bytes());
        data.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        data.extend_from_slice(&0u16.to_ne_bytes());
        data.extend_from_slice(&3u32.to_ne_bytes());
        data.extend_from_slice(&0u32.to_ne_bytes());
        data.extend_from_slice(&(-17i32).to_ne_bytes());
        data.extend_from_slice(&[0u8; 16]);
        // A link message with index 42, a MAC and an MTU.
        let mac = [2, 0, 0, 0, 0, 9];
        let link = Request::new(RTM_NEWLINK, 0, 4)
            .ifinfo(42, IFF_RUNNING, 0)
            .ifname("x")
            .mac(mac)
            .mtu(9000)
            .attr_u32(IFLA_TXQLEN, 500)
            .alias("vswitch 7")
            .attr(
                IFLA_STATS64,
                &(0..24u64)
                    .flat_map(|i| i.to_ne_bytes())
                    .collect::<Vec<u8>>(),
            );
        data.extend_from_slice(&link.finish());
        let info = LinkInfo {
            index: 42,
            mac: Some(mac),
            mtu: Some(9000),
            tx_queue_len: Some(500),
            errors: Some(LinkErrors {
                rx_errors: 4,
                tx_errors: 5,
                rx_dropped: 6,
                tx_dropped: 7,
            }),
            alias: Some("vswitch 7".into()),
            flags: IFF_RUNNING,
        };
        assert!(info.is_running());
        assert_eq!(
            parse_replies(&data),
            [
                Reply::Status {
                    seq: 3,
                    errno: 17,
                    message: None
                },
                Reply::Link { seq: 4, info }
            ]
        );
        assert!(
            parse_replies(&data[..20]).len() <= 1,
            "truncated input must not panic"
        );
    }
}
