//! A VXLAN port carried by Linux's own vxlan device (`vxlan:...,carrier=kernel`).
//!
//! The switch creates a vxlan device with the port's settings (its UDP socket in the underlay
//! namespace, the device itself in the switch's), puts every remote in the device's FDB under
//! the all-zeros MAC (the kernel's head-end replication, as `bridge fdb append 00:00:00:00:00:00
//! dev vx0 dst REMOTE` does), and attaches the device like a `dev:` port. So the kernel
//! encapsulates and decapsulates, on the wire exactly as Linux speaks VXLAN, and a 64 KiB TCP
//! segment crosses the tunnel whole (the underlay cuts it, or a NIC does); the switch still
//! decides which port each frame goes to, and the in-kernel fast path carries known unicast
//! between this port and other `dev:` ports. Which remote VTEP a MAC is behind is the device's
//! FDB: learned by the kernel (unless `learning=off`), pinned with `fdb add ... --dst`. Per-VTEP
//! counters and decap drop reasons are the kernel's (`ip -s link show`, `bridge fdb show`); the
//! userspace carrier (the default) counts them itself.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use vswitch_core::MacAddr;
use vswitch_netns::message::VxlanLink;
use vswitch_netns::{LinkGuard, Netlink};

use crate::packet::PacketPort;
use crate::port::{
    CpuSteering, DeviceCapabilities, DeviceStatus, KernelLink, PortDevice, Steering, Tunnel,
};
use crate::vxlan::VxlanConfig;

/// A VXLAN port whose device is a Linux vxlan interface the switch made.
#[derive(Debug)]
pub struct KernelVxlanPort {
    /// Packet sockets on the device, as for a `dev:` port.
    link: PacketPort,
    /// The vxlan interface, deleted when the port goes (unless its underlay namespace went
    /// first: the kernel deletes a vxlan device with its socket's namespace).
    device: LinkGuard,
    /// Its index, for FDB changes.
    index: u32,
    local_is_v4: bool,
}

fn other(e: vswitch_netns::NetnsError) -> io::Error {
    io::Error::other(e)
}

impl KernelVxlanPort {
    /// Creates the vxlan device for `config` and attaches to it with `queues` packet sockets
    /// spread by `steering`.
    pub fn open(
        config: &VxlanConfig,
        queues: usize,
        steering: Steering,
    ) -> io::Result<KernelVxlanPort> {
        let link = VxlanLink {
            vni: config.vni,
            local: config.local,
            dstport: config.dstport,
            learning: config.learning,
            srcport: config.srcport,
            udp6_zero_csum_rx: config.udp6_zero_csum_rx,
        };
        let mtu = config.underlay_mtu - config.overhead();
        let name = config.name.as_str();
        let mut nl = Netlink::open().map_err(other)?;
        crate::leftover::remove_if_orphaned(&mut nl, name)?;
        match &config.netns {
            None => nl.add_vxlan(name, &link, mtu, None).map_err(other)?,
            Some(ns) => {
                // The socket in the underlay, the device here.
                let here = OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net")?);
                let underlay = std::fs::File::open(std::path::Path::new("/run/netns").join(ns))
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("vxlan underlay namespace {ns}: {e}"))
                    })?;
                crate::tap::in_netns(OwnedFd::from(underlay), || {
                    Netlink::open()
                        .and_then(|mut nl| nl.add_vxlan(name, &link, mtu, Some(here.as_fd())))
                        .map_err(other)
                })?;
            }
        }
        let device = LinkGuard::new(name);
        let index = nl.link_index(name).map_err(other)?;
        nl.set_alias(name, &crate::leftover::alias("vxlan"))
            .map_err(other)?;
        for remote in &config.remotes {
            nl.fdb_append(index, [0; 6], *remote).map_err(other)?;
        }
        nl.set_up(name).map_err(other)?;
        let link = PacketPort::open_queues(name, queues, steering).map_err(io::Error::other)?;
        Ok(KernelVxlanPort {
            link,
            device,
            index,
            local_is_v4: config.local.is_ipv4(),
        })
    }
}

impl PortDevice for KernelVxlanPort {
    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities {
            kind: "vxlan-kernel",
            ..self.link.capabilities()
        }
    }

    fn recv(&self, queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        self.link.recv(queue, buf)
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.link.send(frame)
    }

    fn fd(&self, queue: usize) -> BorrowedFd<'_> {
        self.link.fd(queue)
    }

    fn status(&self) -> DeviceStatus {
        self.link.status()
    }

    /// The device's own error and drop counts (decapsulation failures among them), as
    /// `ip -s link` shows them.
    fn counters(&self) -> Vec<(String, u64)> {
        let errors = Netlink::open()
            .and_then(|mut nl| nl.link(self.device.name()))
            .ok()
            .and_then(|info| info.errors)
            .unwrap_or_default();
        vec![
            ("kernel_rx_errors".into(), errors.rx_errors),
            ("kernel_rx_dropped".into(), errors.rx_dropped),
            ("kernel_tx_errors".into(), errors.tx_errors),
            ("kernel_tx_dropped".into(), errors.tx_dropped),
        ]
    }

    fn cpu_steering(&self) -> Option<&dyn CpuSteering> {
        self.link.cpu_steering()
    }

    fn tunnel(&self) -> Option<&dyn Tunnel> {
        Some(self)
    }

    fn kernel_link(&self) -> Option<&dyn KernelLink> {
        self.link.kernel_link()
    }
}

impl Tunnel for KernelVxlanPort {
    /// A static entry in the device's FDB (`bridge fdb replace MAC dev DEV dst REMOTE`).
    fn add_remote(&self, mac: MacAddr, remote: std::net::IpAddr) -> io::Result<()> {
        if remote.is_ipv4() != self.local_is_v4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{remote} is not of the underlay's family"),
            ));
        }
        Netlink::open()
            .and_then(|mut nl| nl.fdb_replace(self.index, mac.0, remote))
            .map_err(other)
    }

    fn remove_remote(&self, mac: MacAddr) {
        if let Err(e) = Netlink::open().and_then(|mut nl| nl.fdb_delete(self.index, mac.0)) {
            tracing::warn!(device = %self.device.name(), %mac, error = %e, "couldn't remove an FDB entry");
        }
    }
}
