//! Existing interfaces (a veth end, a physical NIC, any netdev) as switch ports, through an
//! `AF_PACKET` socket in promiscuous mode.
//!
//! The socket asks for virtio-net headers (`PACKET_VNET_HDR`), so TCP segments of up to 64 KiB
//! and partial checksums — what veth hands over when the host's stack offloads — pass through
//! untouched, as on TAPs. `PACKET_IGNORE_OUTGOING` keeps the switch from reading back the frames
//! it sends, and `PACKET_QDISC_BYPASS` skips the egress queueing discipline. With several
//! workers, the port opens a socket per worker in one `PACKET_FANOUT` group: the kernel spreads
//! received frames over them by the CPU that received them (a veth receives on its sender's
//! CPU) or by flow hash, as a multi-queue TAP does over its queues.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use crate::port::{
    CpuSteering, DeviceCapabilities, DeviceStatus, KernelLink, PortDevice, Steering,
};
use crate::sys;
use crate::tap::{InvalidIfName, validate_ifname};

/// Why an interface could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum PacketPortError {
    /// Empty, too long, or with characters Linux rejects.
    #[error(transparent)]
    InvalidName(#[from] InvalidIfName),
    /// No interface of that name in the switch's namespace.
    #[error("interface {0} not found (dev: ports must exist in the switch's namespace)")]
    NotFound(String),
    /// The caller lacks CAP_NET_RAW.
    #[error("attaching to {0} needs CAP_NET_RAW (run as root or grant the capability)")]
    PermissionDenied(String),
    /// Any other failure.
    #[error("couldn't attach a packet socket to {name}")]
    Socket {
        /// The interface.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// An existing interface attached through a packet socket.
#[derive(Debug)]
pub struct PacketPort {
    /// One socket per receive queue, all in one fanout group; frames are sent on the first.
    sockets: Vec<File>,
    /// Set when the fanout group spreads frames by receiving CPU ([`Steering::Cpu`]; a veth
    /// receives on its sender's CPU): when each socket was last found empty.
    drained: Option<crate::bpf::DrainClock>,
    /// Frames the sockets dropped so far (the kernel hands out only the count since last asked).
    kernel_drops: std::sync::atomic::AtomicU64,
    name: String,
    ifindex: u32,
    ioctl: std::os::fd::OwnedFd,
}

/// The index of interface `name` in the caller's namespace, if it exists.
pub fn interface_index(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

impl PacketPort {
    /// Attaches to interface `name` with one receive queue, sets it up and puts it in
    /// promiscuous mode.
    pub fn open(name: &str) -> Result<PacketPort, PacketPortError> {
        PacketPort::open_queues(name, 1, Steering::Flow)
    }

    /// Like [`PacketPort::open`], with `queues` receive queues (sockets in a fanout group that
    /// spreads frames by `steering`), so as many workers can share the interface's load.
    pub fn open_queues(
        name: &str,
        queues: usize,
        steering: Steering,
    ) -> Result<PacketPort, PacketPortError> {
        validate_ifname(name)?;
        let ifindex =
            interface_index(name).ok_or_else(|| PacketPortError::NotFound(name.into()))?;
        let err = |source: io::Error| match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                PacketPortError::PermissionDenied(name.into())
            }
            _ => PacketPortError::Socket {
                name: name.into(),
                source,
            },
        };
        // CPU steering: the fanout group runs the same steering program as a TAP (by CPU, a
        // flow sticking to its socket while busy); without it, by flow hash.
        let program = (queues > 1 && steering == Steering::Cpu)
            .then(|| crate::bpf::steering_program(queues))
            .and_then(|p| {
                p.inspect_err(|e| tracing::debug!(port = name, error = %e, "steering by flow"))
                    .ok()
            });
        let mode = if program.is_some() {
            sys::FanoutMode::Program
        } else {
            sys::FanoutMode::Hash
        };
        let mut sockets = Vec::new();
        let mut group = None;
        for _ in 0..queues.max(1) {
            let fd = sys::packet_socket(ifindex).map_err(err)?;
            if queues > 1 {
                match group {
                    None => {
                        group = Some(sys::create_packet_fanout(fd.as_fd(), mode).map_err(err)?);
                        if let Some(steering) = &program {
                            sys::set_fanout_program(fd.as_fd(), steering.program.as_fd())
                                .map_err(err)?;
                        }
                    }
                    Some(id) => sys::join_packet_fanout(fd.as_fd(), id, mode).map_err(err)?,
                }
            }
            sockets.push(File::from(fd));
        }
        if queues > 1 {
            // Until a socket joined the group it saw every frame, as did the group: drop what
            // arrived meanwhile rather than forward it twice.
            let mut scratch = vec![0u8; 65_536 + vswitch_core::VNET_HDR_LEN];
            for mut socket in &sockets {
                while socket.read(&mut scratch).is_ok() {}
            }
        }
        let ioctl = sys::ioctl_socket().map_err(err)?;
        sys::if_set_up(ioctl.as_fd(), name).map_err(err)?;
        Ok(PacketPort {
            drained: program.map(|p| p.drained),
            kernel_drops: std::sync::atomic::AtomicU64::new(0),
            sockets,
            name: name.to_owned(),
            ifindex,
            ioctl,
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl PortDevice for PacketPort {
    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities {
            rx_queues: self.sockets.len(),
            mac: sys::if_hwaddr(self.ioctl.as_fd(), &self.name)
                .ok()
                .map(vswitch_core::MacAddr),
            ..DeviceCapabilities::new("dev").vnet_header(true)
        }
    }

    fn recv(&self, queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        let Some(socket) = self.sockets.get(queue) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        // Leave room to put back a VLAN tag the kernel took out of the frame.
        let room = buf.len().saturating_sub(4);
        let received =
            sys::packet_recv(socket.as_fd(), &mut buf[..room]).map(|(n, tag)| match tag {
                Some(tag) => vswitch_core::insert_vlan_tag(buf, n, tag.tpid, tag.tci).unwrap_or(n),
                None => n,
            });
        match received {
            // ENETDOWN: the link went down (keep the port; it may come back up) or is being
            // deleted, which `status` tells the housekeeper.
            Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            other => other,
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        (&self.sockets[0]).write(frame).map(drop)
    }

    fn fd(&self, queue: usize) -> BorrowedFd<'_> {
        self.sockets.get(queue).unwrap_or(&self.sockets[0]).as_fd()
    }

    /// Present while the interface exists under the index it had when attached; the kernel's
    /// drops are the frames a socket's buffer had no room for, summed over the sockets and
    /// over time.
    fn status(&self) -> DeviceStatus {
        let mut new = 0;
        let mut failed = false;
        for socket in &self.sockets {
            match sys::packet_drops_since_last(socket.as_fd()) {
                Ok(n) => new += n,
                Err(_) => failed = true,
            }
        }
        // Keep what was read even if a socket failed: the kernel has reset those counts.
        let total = self
            .kernel_drops
            .fetch_add(new, std::sync::atomic::Ordering::Relaxed)
            + new;
        DeviceStatus {
            present: interface_index(&self.name) == Some(self.ifindex),
            mtu: sys::if_mtu(self.ioctl.as_fd(), &self.name).ok(),
            kernel_drops: (!failed).then_some(total),
        }
    }

    fn cpu_steering(&self) -> Option<&dyn CpuSteering> {
        Some(self)
    }

    fn kernel_link(&self) -> Option<&dyn KernelLink> {
        Some(self)
    }
}

impl CpuSteering for PacketPort {
    /// Chosen when opened: the fanout group's mode can't change once sockets joined it.
    fn steer_by_cpu(&self) -> io::Result<()> {
        if self.drained.is_some() {
            Ok(())
        } else {
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    fn queue_drained(&self, queue: usize, at_ns: u64) {
        if let Some(drained) = &self.drained {
            drained.mark(queue, at_ns);
        }
    }
}

impl KernelLink for PacketPort {
    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn attach_filter(&self, program: BorrowedFd<'_>) -> io::Result<()> {
        for socket in &self.sockets {
            sys::attach_socket_program(socket.as_fd(), program)?;
        }
        Ok(())
    }
}
