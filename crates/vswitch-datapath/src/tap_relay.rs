//! A TAP whose host lives in another namespace, carried by the kernel (`tap:NAME@NS`).
//!
//! Reading a frame out of one TAP and writing it into another copies it twice, and on two cores
//! those copies alone cap a userspace switch below the bridge (docs/performance.md). The kernel
//! can't redirect from a TAP in one namespace to a TAP in another, but it can cross namespaces
//! on a veth pair. So the switch gives each such TAP a relay: a veth pair with one end beside
//! the TAP, in the host's namespace (`vsrNh`, no addresses, IPv6 off: the host never uses it),
//! and the other in the switch's (`vsrNs`), and two three-instruction programs in the host's
//! namespace: at the TAP's tc egress, every frame the host sends goes out the relay
//! (`bpf_redirect`); at the relay's tc ingress, every frame arriving is handed to the TAP's
//! ingress, so the host receives it on its TAP as before. The switch end is then an ordinary
//! `dev:` port for the switch and its in-kernel fast path: known unicast never leaves the
//! kernel, the rest reaches the switch through packet sockets, decided and counted as on any
//! port. Frames the switch sends to the host still go into the TAP's fd, and the fd is still
//! read (a sender that bypasses tc, as a packet socket with `PACKET_QDISC_BYPASS` does, still
//! reaches the switch).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use vswitch_core::VNET_HDR_LEN;
use vswitch_netns::{LinkGuard, Netlink, Netns};

use crate::bpf::{
    Asm, BPF_PROG_TYPE_SCHED_CLS, EXIT, FUNC_REDIRECT, MOV64_IMM, R0, R1, R2, attach_tcx_egress,
    attach_tcx_ingress, load_program,
};
use crate::packet::{PacketPort, interface_index};
use crate::port::{
    CpuSteering, DeviceCapabilities, DeviceStatus, KernelLink, PortDevice, Steering,
};
use crate::tap::{Tap, netns_inode};

/// The relay's MTU, veth's largest: the TAP's own MTU is what limits the host's frames (the
/// kernel checks it as it hands a frame to the TAP), whatever the user sets it to.
const RELAY_MTU: u32 = 65_535;

/// `BPF_F_INGRESS`: deliver to the interface's receive path, not its transmit.
const BPF_F_INGRESS: i32 = 1;

/// A TAP in its host's namespace with a relay to the switch's.
#[derive(Debug)]
pub struct RelayedTap {
    tap: Tap,
    /// The TAP's receive queues (which come first) and whether they read a virtio-net header.
    tap_queues: usize,
    tap_vnet: bool,
    /// Packet sockets on the relay's switch end, as for a `dev:` port.
    link: PacketPort,
    relay: Relay,
}

/// The relay's veth pair and the programs' links; dropping it detaches the programs and
/// deletes the pair (both ends; the host's namespace going first takes the pair with it).
#[derive(Debug)]
struct Relay {
    _switch_end: LinkGuard,
    /// The programs' tcx links, in the host's namespace; let go if the TAP leaves it.
    links: Mutex<Vec<OwnedFd>>,
    /// The host's namespace (its inode).
    netns: u64,
}

impl Relay {
    fn is_on(&self) -> bool {
        !self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Detaches the programs if the TAP (in namespace `tap_netns` now) left the relay's
    /// namespace: the relay can't follow it, and its programs would send the host's frames to
    /// an interface that isn't there. The TAP's fd carries them from then on.
    fn follow(&self, tap_netns: io::Result<u64>, tap: &str) {
        let Ok(now) = tap_netns else { return };
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if now != self.netns && !links.is_empty() {
            links.clear();
            tracing::warn!(
                tap,
                "the TAP left its namespace: its relay is off, its frames go through the switch"
            );
        }
    }
}

fn other(e: vswitch_netns::NetnsError) -> io::Error {
    io::Error::other(e)
}

/// A program that sends every frame to interface `ifindex` (its receive path with
/// [`BPF_F_INGRESS`]).
fn redirect_program(ifindex: u32, flags: i32) -> io::Result<OwnedFd> {
    let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::other("ifindex out of range"))?;
    let mut a = Asm::default();
    a.op(MOV64_IMM, R1, 0, 0, ifindex)
        .op(MOV64_IMM, R2, 0, 0, flags)
        .call(FUNC_REDIRECT)
        .op(EXIT, R0, 0, 0, 0);
    load_program(BPF_PROG_TYPE_SCHED_CLS, &a.finish(), "vsw_tap_relay")
}

/// Turns IPv6 off on `name` (in the calling thread's namespace), so the kernel never sends
/// router solicitations or MLD reports of its own out of a relay end.
fn quiet(name: &str) -> io::Result<()> {
    match std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()), // no IPv6 in this kernel
        other => other,
    }
}

/// Deletes every relay (here, and so its peer) that a switch left when it died: its TAP went
/// with the switch's process, its veth pair didn't.
fn remove_orphaned_relays(nl: &mut Netlink) -> io::Result<()> {
    for entry in std::fs::read_dir("/sys/class/net")? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("vsr") && name.ends_with('s') {
            crate::leftover::remove_if_orphaned(nl, name)?;
        }
    }
    Ok(())
}

impl RelayedTap {
    /// Puts `tap` (just opened, in the switch's namespace) into namespace `netns` and builds its
    /// relay, with `queues` packet sockets spread by `steering` on the switch end. On an error
    /// the TAP comes back with it (moved or not yet) for the caller to use without a relay.
    pub fn open(
        tap: Tap,
        netns: &Netns,
        queues: usize,
        steering: Steering,
    ) -> Result<RelayedTap, (Tap, io::Error)> {
        match Self::relay(&tap, netns, queues, steering) {
            Ok((link, relay)) => {
                tap.relayed();
                let can = tap.capabilities();
                Ok(RelayedTap {
                    tap_queues: can.rx_queues,
                    tap_vnet: can.rx_vnet_header,
                    tap,
                    link,
                    relay,
                })
            }
            Err(e) => Err((tap, e)),
        }
    }

    fn relay(
        tap: &Tap,
        netns: &Netns,
        queues: usize,
        steering: Steering,
    ) -> io::Result<(PacketPort, Relay)> {
        let name = tap.name();
        let index = interface_index(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no TAP {name}")))?;
        let (switch_end, host_end) = (format!("vsr{index}s"), format!("vsr{index}h"));
        let mut nl = Netlink::open().map_err(other)?;
        remove_orphaned_relays(&mut nl)?;
        netns
            .run(|| {
                Netlink::open()
                    .map_err(other)
                    .and_then(|mut nl| crate::leftover::remove_if_orphaned(&mut nl, &host_end))
            })
            .map_err(other)??;
        nl.move_to(name, netns).map_err(other)?;
        nl.add_veth(&switch_end, &host_end, Some(netns))
            .map_err(other)?;
        // From here on, dropping `relay` deletes the pair.
        let mut relay = Relay {
            _switch_end: LinkGuard::new(&switch_end),
            links: Mutex::new(Vec::new()),
            netns: netns_inode(netns.as_fd())?,
        };
        let alias = crate::leftover::alias(&format!("relay for TAP {name}"));
        nl.set_alias(&switch_end, &alias).map_err(other)?;
        nl.set_mtu(&switch_end, RELAY_MTU).map_err(other)?;
        quiet(&switch_end)?;
        let links = netns
            .run(|| -> io::Result<Vec<OwnedFd>> {
                let mut nl = Netlink::open().map_err(other)?;
                nl.set_alias(&host_end, &alias).map_err(other)?;
                nl.set_mtu(&host_end, RELAY_MTU).map_err(other)?;
                quiet(&host_end)?;
                nl.set_up(&host_end).map_err(other)?;
                nl.set_up(name).map_err(other)?;
                let tap_index = nl.link_index(name).map_err(other)?;
                let host_index = nl.link_index(&host_end).map_err(other)?;
                let out = attach_tcx_egress(&redirect_program(host_index, 0)?, tap_index)?;
                let back =
                    attach_tcx_ingress(&redirect_program(tap_index, BPF_F_INGRESS)?, host_index)?;
                Ok(vec![out, back])
            })
            .map_err(other)??;
        relay.links = Mutex::new(links);
        let link =
            PacketPort::open_queues(&switch_end, queues, steering).map_err(io::Error::other)?;
        Ok((link, relay))
    }
}

impl PortDevice for RelayedTap {
    /// The TAP's queues first, then the relay's; every queue reads `[virtio-net header |
    /// frame]`.
    fn capabilities(&self) -> DeviceCapabilities {
        let tap = self.tap.capabilities();
        DeviceCapabilities {
            kind: "tap-kernel",
            rx_queues: tap.rx_queues + self.link.capabilities().rx_queues,
            rx_vnet_header: true,
            ..tap
        }
    }

    fn recv(&self, queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        let taps = self.tap_queues;
        if queue >= taps {
            return self.link.recv(queue - taps, buf);
        }
        if self.tap_vnet {
            return self.tap.recv(queue, buf);
        }
        buf[..VNET_HDR_LEN].fill(0);
        self.tap
            .recv(queue, &mut buf[VNET_HDR_LEN..])
            .map(|n| n + VNET_HDR_LEN)
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.tap.send(frame)
    }

    fn fd(&self, queue: usize) -> BorrowedFd<'_> {
        let taps = self.tap_queues;
        if queue >= taps {
            self.link.fd(queue - taps)
        } else {
            self.tap.fd(queue)
        }
    }

    /// The TAP's MTU; present while the relay is (the kernel deletes the pair with the host's
    /// namespace, and the TAP with it); the drops of both. Turns the relay off if the TAP moved.
    fn status(&self) -> DeviceStatus {
        self.relay.follow(self.tap.netns(), self.tap.name());
        let tap = self.tap.status();
        let link = self.link.status();
        DeviceStatus {
            present: tap.present && link.present,
            mtu: tap.mtu,
            kernel_drops: match (tap.kernel_drops, link.kernel_drops) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            },
        }
    }

    fn cpu_steering(&self) -> Option<&dyn CpuSteering> {
        Some(self)
    }

    /// The relay's switch end, while the relay is on.
    fn kernel_link(&self) -> Option<&dyn KernelLink> {
        self.relay.is_on().then_some(&self.link as &dyn KernelLink)
    }
}

impl CpuSteering for RelayedTap {
    fn steer_by_cpu(&self) -> io::Result<()> {
        self.tap.steer_by_cpu()?;
        self.link.steer_by_cpu()
    }

    fn queue_drained(&self, queue: usize, at_ns: u64) {
        let taps = self.tap_queues;
        if queue >= taps {
            self.link.queue_drained(queue - taps, at_ns);
        } else {
            self.tap.queue_drained(queue, at_ns);
        }
    }
}
