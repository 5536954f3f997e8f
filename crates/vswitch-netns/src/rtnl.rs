//! A synchronous rtnetlink client for the namespace of the thread that opens it.
//!
//! A netlink socket belongs to the namespace it was created in, so work inside another namespace
//! opens its own [`Netlink`] within [`crate::Netns::run`].

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket,
};

use nix::{setsockopt_impl, sockopt_impl};

use crate::error::{NetnsError, Refusal};
use crate::message::{
    IFF_UP, LinkInfo, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
    RTM_DELLINK, RTM_DELNEIGH, RTM_DELQDISC, RTM_DELTFILTER, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK,
    RTM_NEWNEIGH, RTM_NEWQDISC, RTM_NEWROUTE, RTM_NEWTFILTER, Reply, Request, VxlanLink, family,
    parse_replies,
};
use crate::netns::Netns;

sockopt_impl!(
    /// `NETLINK_EXT_ACK`: errors carry the kernel's message (nix has no name for it).
    ExtAck,
    SetOnly,
    libc::SOL_NETLINK,
    libc::NETLINK_EXT_ACK,
    bool
);

/// Checks a link name the way the kernel will, so the error names the problem.
pub fn check_link_name(name: &str) -> Result<(), NetnsError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if bad {
        Err(NetnsError::InvalidLinkName(name.to_owned()))
    } else {
        Ok(())
    }
}

/// An rtnetlink socket in the caller's network namespace.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens a route netlink socket in the calling thread's namespace.
    pub fn open() -> Result<Netlink, NetnsError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| NetnsError::from_errno("opening a netlink socket", "", io::Error::from(e)))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| {
            NetnsError::from_errno("binding a netlink socket", "", io::Error::from(e))
        })?;
        // The kernel's own words with each refusal (Linux 4.12+; without, the errno alone).
        let _ = setsockopt(&fd, ExtAck, &true);
        Ok(Netlink { fd, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `req` (built with sequence `seq`) and waits for its acknowledgement; returns the
    /// link description if the reply carried one, or the kernel's refusal in its own words.
    fn transact(&mut self, seq: u32, req: Request) -> Result<Option<LinkInfo>, Refusal> {
        let msg = req.finish();
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty()).map_err(io::Error::from)?;
        let mut buf = vec![0u8; 65536];
        let mut index = None;
        loop {
            let n = recv(self.fd.as_fd().as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(io::Error::from)?;
            for reply in parse_replies(&buf[..n]) {
                match reply {
                    Reply::Status {
                        seq: s,
                        errno,
                        message,
                    } if s == seq => {
                        return if errno == 0 {
                            Ok(index)
                        } else {
                            Err(Refusal {
                                errno: io::Error::from_raw_os_error(errno),
                                message,
                            })
                        };
                    }
                    Reply::Link { seq: s, info } if s == seq => index = Some(info),
                    _ => {}
                }
            }
        }
    }

    /// The index of interface `name`.
    pub fn link_index(&mut self, name: &str) -> Result<u32, NetnsError> {
        self.link(name).map(|info| info.index)
    }

    /// Index, MAC and MTU of interface `name`.
    pub fn link(&mut self, name: &str) -> Result<LinkInfo, NetnsError> {
        check_link_name(name)?;
        let seq = self.next_seq();
        let req = Request::new(RTM_GETLINK, NLM_F_ACK, seq)
            .ifinfo(0, 0, 0)
            .ifname(name);
        match self.transact(seq, req) {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(NetnsError::LinkNotFound(name.to_owned())),
            Err(e) => Err(NetnsError::from_errno(
                format!("looking up link {name}"),
                name,
                e,
            )),
        }
    }

    /// Waits until link `name` is operationally up (see [`crate::message::IFF_RUNNING`]), for
    /// at most `limit`; returns whether it is.
    pub fn wait_running(
        &mut self,
        name: &str,
        limit: std::time::Duration,
    ) -> Result<bool, NetnsError> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.link(name)?.is_running() {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Whether interface `name` exists here.
    pub fn link_exists(&mut self, name: &str) -> Result<bool, NetnsError> {
        match self.link_index(name) {
            Ok(_) => Ok(true),
            Err(NetnsError::LinkNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn set_link(
        &mut self,
        name: &str,
        op: &str,
        build: impl FnOnce(Request) -> Request,
    ) -> Result<(), NetnsError> {
        check_link_name(name)?;
        let seq = self.next_seq();
        let req = build(Request::new(RTM_NEWLINK, NLM_F_ACK, seq));
        self.transact(seq, req)
            .map(drop)
            .map_err(|e| NetnsError::from_errno(format!("{op} {name}"), name, e))
    }

    /// Sets interface `name`'s alias (`ip link set NAME alias ALIAS`).
    pub fn set_alias(&mut self, name: &str, alias: &str) -> Result<(), NetnsError> {
        self.set_link(name, "setting the alias of", |r| {
            r.ifinfo(0, 0, 0).ifname(name).alias(alias)
        })
    }

    /// Brings interface `name` up.
    pub fn set_up(&mut self, name: &str) -> Result<(), NetnsError> {
        self.set_link(name, "setting up link", |r| {
            r.ifinfo(0, IFF_UP, IFF_UP).ifname(name)
        })
    }

    /// Takes interface `name` down.
    pub fn set_down(&mut self, name: &str) -> Result<(), NetnsError> {
        self.set_link(name, "setting down link", |r| {
            r.ifinfo(0, 0, IFF_UP).ifname(name)
        })
    }

    /// Renames link `name` to `new_name` (it must be down).
    pub fn rename(&mut self, name: &str, new_name: &str) -> Result<(), NetnsError> {
        check_link_name(new_name)?;
        let index = self.link_index(name)?;
        self.set_link(name, "renaming link", |r| {
            r.ifinfo(index, 0, 0).ifname(new_name)
        })
    }

    /// Sets the MTU of `name`.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), NetnsError> {
        self.set_link(name, "setting the MTU of", |r| {
            r.ifinfo(0, 0, 0).ifname(name).mtu(mtu)
        })
    }

    /// Sets the MAC address of `name`.
    pub fn set_mac(&mut self, name: &str, mac: [u8; 6]) -> Result<(), NetnsError> {
        self.set_link(name, "setting the MAC of", |r| {
            r.ifinfo(0, 0, 0).ifname(name).mac(mac)
        })
    }

    /// Moves `name` into namespace `ns` (it goes down on the way, as with `ip link set netns`).
    pub fn move_to(&mut self, name: &str, ns: &Netns) -> Result<(), NetnsError> {
        let fd = ns.as_fd().as_raw_fd();
        self.set_link(name, "moving link", |r| {
            r.ifinfo(0, 0, 0).ifname(name).netns_fd(fd)
        })
    }

    /// Creates a veth pair `name` (here) and `peer` (here, or in `peer_ns`), with random MACs.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: Option<&Netns>,
    ) -> Result<(), NetnsError> {
        self.add_veth_with_macs(name, peer, peer_ns, None, None)
    }

    /// Like [`Netlink::add_veth`], with chosen MACs for either end.
    pub fn add_veth_with_macs(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: Option<&Netns>,
        mac: Option<[u8; 6]>,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<(), NetnsError> {
        check_link_name(name)?;
        check_link_name(peer)?;
        let seq = self.next_seq();
        let peer_fd = peer_ns.map(|ns| ns.as_fd().as_raw_fd());
        let mut req = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq)
            .ifinfo(0, 0, 0)
            .ifname(name);
        if let Some(mac) = mac {
            req = req.mac(mac);
        }
        let req = req.veth_peer(peer, peer_mac, peer_fd);
        self.transact(seq, req).map(drop).map_err(|e| {
            NetnsError::from_errno(format!("creating veth pair {name}/{peer}"), name, e)
        })
    }

    /// Creates a kernel bridge `name` (like `ip link add NAME type bridge`).
    pub fn add_bridge(&mut self, name: &str) -> Result<(), NetnsError> {
        check_link_name(name)?;
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq)
            .ifinfo(0, 0, 0)
            .ifname(name)
            .link_kind("bridge");
        self.transact(seq, req)
            .map(drop)
            .map_err(|e| NetnsError::from_errno(format!("creating bridge {name}"), name, e))
    }

    /// Creates a Linux vxlan device `name` (`ip link add NAME type vxlan ...`) with MTU `mtu`,
    /// its UDP socket in this socket's namespace and the device in `device_ns` if given (a
    /// vxlan device may live in another namespace than its underlay, as `ip link add ...
    /// netns NS type vxlan` puts it).
    pub fn add_vxlan(
        &mut self,
        name: &str,
        link: &VxlanLink,
        mtu: u32,
        device_ns: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(), NetnsError> {
        check_link_name(name)?;
        let seq = self.next_seq();
        let mut req = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq)
            .ifinfo(0, 0, 0)
            .ifname(name)
            .mtu(mtu);
        if let Some(ns) = device_ns {
            req = req.netns_fd(ns.as_raw_fd());
        }
        let req = req.vxlan(link);
        self.transact(seq, req)
            .map(drop)
            .map_err(|e| NetnsError::from_errno(format!("creating vxlan device {name}"), name, e))
    }

    /// Adds `dst` to the remotes of `mac` in vxlan device `index`'s FDB (`bridge fdb append MAC
    /// dev DEV dst DST`); the all-zeros MAC's remotes get every flood (head-end replication).
    pub fn fdb_append(&mut self, index: u32, mac: [u8; 6], dst: IpAddr) -> Result<(), NetnsError> {
        self.fdb_change(index, mac, dst, NLM_F_APPEND)
    }

    /// Makes `dst` the one remote of `mac` in vxlan device `index`'s FDB, static (`bridge fdb
    /// replace MAC dev DEV dst DST`).
    pub fn fdb_replace(&mut self, index: u32, mac: [u8; 6], dst: IpAddr) -> Result<(), NetnsError> {
        self.fdb_change(index, mac, dst, NLM_F_REPLACE)
    }

    fn fdb_change(
        &mut self,
        index: u32,
        mac: [u8; 6],
        dst: IpAddr,
        how: u16,
    ) -> Result<(), NetnsError> {
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWNEIGH, NLM_F_CREATE | how | NLM_F_ACK, seq)
            .fdb_ndmsg(index)
            .fdb_entry(mac, Some(dst));
        self.transact(seq, req).map(drop).map_err(|e| {
            NetnsError::from_errno(format!("adding an FDB entry to interface {index}"), "", e)
        })
    }

    /// Removes `mac`'s entry from device `index`'s own FDB; false if there was none.
    pub fn fdb_delete(&mut self, index: u32, mac: [u8; 6]) -> Result<bool, NetnsError> {
        let seq = self.next_seq();
        let req = Request::new(RTM_DELNEIGH, NLM_F_ACK, seq)
            .fdb_ndmsg(index)
            .fdb_entry(mac, None);
        match self.transact(seq, req) {
            Ok(_) => Ok(true),
            Err(e) if e.errno.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(NetnsError::from_errno(
                format!("removing an FDB entry from interface {index}"),
                "",
                e,
            )),
        }
    }

    /// Makes `name` a port of bridge `master` (like `ip link set NAME master MASTER`).
    pub fn set_master(&mut self, name: &str, master: &str) -> Result<(), NetnsError> {
        let index = self.link_index(master)?;
        self.set_link(name, "enslaving", |r| {
            r.ifinfo(0, 0, 0).ifname(name).master(index)
        })
    }

    /// Deletes interface `name` (a veth's peer goes with it).
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetnsError> {
        check_link_name(name)?;
        let seq = self.next_seq();
        let req = Request::new(RTM_DELLINK, NLM_F_ACK, seq)
            .ifinfo(0, 0, 0)
            .ifname(name);
        self.transact(seq, req)
            .map(drop)
            .map_err(|e| NetnsError::from_errno(format!("deleting link {name}"), name, e))
    }

    /// Adds `addr/prefix` to interface `name`.
    pub fn add_address(&mut self, name: &str, addr: IpAddr, prefix: u8) -> Result<(), NetnsError> {
        let index = self.link_index(name)?;
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq)
            .ifaddr(addr, prefix, index)
            .address(addr);
        self.transact(seq, req).map(drop).map_err(|e| {
            NetnsError::from_errno(format!("adding {addr}/{prefix} to {name}"), name, e)
        })
    }

    /// Adds a default route via `gateway`.
    pub fn add_default_route(&mut self, gateway: IpAddr) -> Result<(), NetnsError> {
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq)
            .rtmsg(family(gateway), 0)
            .gateway(gateway);
        self.transact(seq, req).map(drop).map_err(|e| {
            NetnsError::from_errno(format!("adding default route via {gateway}"), "", e)
        })
    }

    /// Adds a route to `dst/prefix` via `gateway` (`ip route add DST/PREFIX via GATEWAY`).
    pub fn add_route(
        &mut self,
        dst: IpAddr,
        prefix: u8,
        gateway: IpAddr,
    ) -> Result<(), NetnsError> {
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq)
            .rtmsg(family(gateway), prefix)
            .destination(dst)
            .gateway(gateway);
        self.transact(seq, req).map(drop).map_err(|e| {
            NetnsError::from_errno(format!("adding route {dst}/{prefix} via {gateway}"), "", e)
        })
    }

    /// Adds the clsact qdisc to interface `index` (`tc qdisc add dev DEV clsact`), where
    /// ingress and egress filters hang; false if it was there already.
    pub fn add_clsact(&mut self, index: u32) -> Result<bool, NetnsError> {
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq)
            .tcmsg(index, TC_H_CLSACT & 0xffff_0000, TC_H_CLSACT, 0)
            .attr_str(TCA_KIND, "clsact");
        match self.transact(seq, req) {
            Ok(_) => Ok(true),
            Err(e) if e.errno.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(NetnsError::from_errno(
                format!("adding the clsact qdisc to interface {index}"),
                "",
                e,
            )),
        }
    }

    /// Removes interface `index`'s clsact qdisc and every filter on it.
    pub fn delete_clsact(&mut self, index: u32) -> Result<(), NetnsError> {
        let seq = self.next_seq();
        let req = Request::new(RTM_DELQDISC, NLM_F_ACK, seq)
            .tcmsg(index, TC_H_CLSACT & 0xffff_0000, TC_H_CLSACT, 0)
            .attr_str(TCA_KIND, "clsact");
        self.transact(seq, req).map(drop).map_err(|e| {
            NetnsError::from_errno(format!("removing interface {index}'s clsact qdisc"), "", e)
        })
    }

    /// Attaches the BPF classifier `program` at interface `index`'s ingress as a direct-action
    /// cls_bpf filter of priority `prio` for every protocol (`tc filter add dev DEV ingress
    /// prio PRIO bpf da fd FD`), replacing one of that priority. Needs the clsact qdisc.
    pub fn attach_bpf_ingress(
        &mut self,
        index: u32,
        prio: u16,
        program: std::os::fd::BorrowedFd<'_>,
        name: &str,
    ) -> Result<(), NetnsError> {
        let seq = self.next_seq();
        let req = Request::new(
            RTM_NEWTFILTER,
            NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
            seq,
        )
        .tcmsg(index, 1, TC_H_CLSACT_INGRESS, filter_info(prio))
        .attr_str(TCA_KIND, "bpf")
        .begin_nest(TCA_OPTIONS)
        .attr_u32(TCA_BPF_FD, program.as_raw_fd() as u32)
        .attr_str(TCA_BPF_NAME, name)
        .attr_u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)
        .end_nest();
        self.transact(seq, req).map(drop).map_err(|e| {
            NetnsError::from_errno(
                format!("attaching BPF program {name} at interface {index}'s ingress"),
                "",
                e,
            )
        })
    }

    /// Removes the ingress filter of priority `prio` from interface `index`.
    pub fn detach_bpf_ingress(&mut self, index: u32, prio: u16) -> Result<(), NetnsError> {
        let seq = self.next_seq();
        let req = Request::new(RTM_DELTFILTER, NLM_F_ACK, seq)
            .tcmsg(index, 1, TC_H_CLSACT_INGRESS, filter_info(prio))
            .attr_str(TCA_KIND, "bpf");
        self.transact(seq, req).map(drop).map_err(|e| {
            NetnsError::from_errno(
                format!("removing the ingress filter of priority {prio} from interface {index}"),
                "",
                e,
            )
        })
    }
}

/// `TC_H_CLSACT`: the clsact qdisc's parent (`TC_H_INGRESS`) and, in its upper half, handle.
const TC_H_CLSACT: u32 = 0xffff_fff1;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`: its ingress hook.
const TC_H_CLSACT_INGRESS: u32 = 0xffff_fff2;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
/// Direct action: the program's return value is the verdict (`TC_ACT_*`).
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;

/// A filter's `tcm_info`: priority, and `ETH_P_ALL` in network order.
fn filter_info(prio: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from((libc::ETH_P_ALL as u16).to_be())
}
