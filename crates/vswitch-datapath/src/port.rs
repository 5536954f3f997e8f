//! Ports: a device that moves frames, plus the switch's per-port state.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

use vswitch_core::{PortCounters, PortId};

use crate::capture::CaptureTap;
use crate::pipeline::{Hook, PortPipeline};

/// How a multi-queue port spreads the frames it receives over its queues (and so over the
/// workers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Steering {
    /// By the CPU that sent the frame: with worker `q` pinned to CPU `q`, a frame is forwarded
    /// on the CPU its sender runs on, as the kernel bridge forwards it, and waking the worker
    /// costs a context switch instead of a cross-CPU wake-up (on a VM, ~2.5 µs instead of
    /// ~19 µs). A busy flow keeps its queue, and a flow moves to another only once a worker
    /// found its old queue empty after its last frame (see `crate::bpf`): never reordered.
    #[default]
    Cpu,
    /// By flow hash: every flow on one queue, in order, wherever its sender runs.
    Flow,
}

impl std::str::FromStr for Steering {
    type Err = vswitch_core::UnknownChoice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Steering::Cpu),
            "flow" => Ok(Steering::Flow),
            other => Err(vswitch_core::UnknownChoice::new(
                "steering",
                other,
                "cpu, flow",
            )),
        }
    }
}

impl std::fmt::Display for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Steering::Cpu => "cpu",
            Steering::Flow => "flow",
        })
    }
}

/// What a device is and can do, read once when it is attached (as smoltcp's
/// `DeviceCapabilities`): the switch decides by these, never by the kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCapabilities {
    /// A short name of the kind of device, for tables and logs.
    pub kind: &'static str,
    /// How many receive queues it has; each can be served by a different worker.
    pub rx_queues: usize,
    /// Every frame written carries a virtio-net header in front ([`vswitch_core::VNET_HDR_LEN`]
    /// bytes), and the device takes GSO frames and partial checksums.
    pub tx_vnet_header: bool,
    /// Every frame read carries a virtio-net header the device wrote. Usually the same as
    /// `tx_vnet_header`; a VXLAN port reads behind one (a tunnel can deliver an inner frame
    /// longer than the MTU, which it marks GSO) but can write either.
    pub rx_vnet_header: bool,
    /// The device's own MAC, the default MACVLAN binding of a sub-port.
    pub mac: Option<vswitch_core::MacAddr>,
}

impl DeviceCapabilities {
    /// A device of `kind` with one queue, no virtio-net header and no MAC of its own.
    pub fn new(kind: &'static str) -> DeviceCapabilities {
        DeviceCapabilities {
            kind,
            rx_queues: 1,
            tx_vnet_header: false,
            rx_vnet_header: false,
            mac: None,
        }
    }

    /// With a virtio-net header on frames read and written.
    pub fn vnet_header(self, on: bool) -> DeviceCapabilities {
        DeviceCapabilities {
            tx_vnet_header: on,
            rx_vnet_header: on,
            ..self
        }
    }
}

/// What a device says of itself now (the housekeeping thread asks once a second); `None` for
/// what it couldn't tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStatus {
    /// False once the device is known to be gone for good (a packet socket's fd says the same
    /// when its interface goes down and when it is deleted, so it is asked here).
    pub present: bool,
    /// Its MTU (it may change while the switch runs).
    pub mtu: Option<u32>,
    /// Frames the kernel dropped, in all, before the switch could read them (the device's queue
    /// was full).
    pub kernel_drops: Option<u64>,
}

impl DeviceStatus {
    /// A present device of MTU `mtu` that can't tell its drops.
    pub fn with_mtu(mtu: u32) -> DeviceStatus {
        DeviceStatus {
            present: true,
            mtu: Some(mtu),
            kernel_drops: None,
        }
    }
}

/// Something frames can be read from and written to through pollable, non-blocking fds: a TAP,
/// a packet socket on an interface, a VXLAN tunnel, a TUN, a station; tests use
/// [`crate::MemoryPort`]. Methods take `&self` because one worker reads a port while others
/// write to it. What a device can do beyond moving frames, it says through
/// [`PortDevice::capabilities`] and the optional roles at the end.
pub trait PortDevice: Send + Sync + std::fmt::Debug {
    /// What the device is and can do.
    fn capabilities(&self) -> DeviceCapabilities;
    /// Reads one frame from receive queue `queue` into `buf` (behind a virtio-net header if
    /// [`DeviceCapabilities::rx_vnet_header`]), returning the length read; `WouldBlock` when
    /// there is none.
    fn recv(&self, queue: usize, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame (behind a virtio-net header if
    /// [`DeviceCapabilities::tx_vnet_header`]); `WouldBlock` when the device's queue is full.
    fn send(&self, frame: &[u8]) -> io::Result<()>;
    /// The fd the worker polls for readability of receive queue `queue`.
    fn fd(&self, queue: usize) -> BorrowedFd<'_>;
    /// Whether it is still there, its MTU and the kernel's drops, now.
    fn status(&self) -> DeviceStatus;
    /// Counters of the device's own, by name (a VXLAN port's per-VTEP traffic and decap
    /// drops), for `stats`.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// Its receive queues can be steered by sending CPU ([`Steering::Cpu`]).
    fn cpu_steering(&self) -> Option<&dyn CpuSteering> {
        None
    }
    /// It is a tunnel with remote endpoints (VXLAN).
    fn tunnel(&self) -> Option<&dyn Tunnel> {
        None
    }
    /// It is an interface in the switch's own namespace, read through packet sockets, that the
    /// in-kernel fast path can serve (a `dev:` port).
    fn kernel_link(&self) -> Option<&dyn KernelLink> {
        None
    }
}

/// A multi-queue device that can put each frame in the queue numbered after the CPU that sent
/// it (modulo the queues), so a worker pinned to that CPU serves it.
pub trait CpuSteering {
    /// Starts steering by CPU; an error where the device can't (then it keeps steering by
    /// flow).
    fn steer_by_cpu(&self) -> io::Result<()>;
    /// Tells the steering program that `queue` was found empty with every frame read from it
    /// before `at_ns` ([`crate::steering_clock_ns`]) forwarded, so flows may leave it without
    /// being reordered.
    fn queue_drained(&self, queue: usize, at_ns: u64);
}

/// A tunnel's remote endpoints, by inner MAC.
pub trait Tunnel {
    /// Pins `mac` to the remote `remote` (a VXLAN port's VTEP for it, as `bridge fdb append
    /// ... dst`), never aged or moved by learning.
    fn add_remote(&self, mac: vswitch_core::MacAddr, remote: std::net::IpAddr) -> io::Result<()>;
    /// Forgets where `mac` is.
    fn remove_remote(&self, mac: vswitch_core::MacAddr);
}

/// An interface in the switch's namespace that the in-kernel fast path can serve.
pub trait KernelLink {
    /// Its interface index.
    fn ifindex(&self) -> u32;
    /// Runs `program` as a socket filter on every receive queue (the fast path's half that
    /// takes frames it forwards away from the switch).
    fn attach_filter(&self, program: BorrowedFd<'_>) -> io::Result<()>;
}

/// Where a port is in its life; it only moves forward (see `switch::ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum PortState {
    /// Forwarding.
    Live = 0,
    /// Its device went away: out of forwarding and its MACs forgotten, its counters still
    /// reported.
    Gone = 1,
    /// Removed by the operator (`port del`): out of the switch's table, its device closed once
    /// no worker holds it.
    Removed = 2,
}

impl PortState {
    fn from_u8(v: u8) -> PortState {
        match v {
            0 => PortState::Live,
            1 => PortState::Gone,
            _ => PortState::Removed,
        }
    }
}

/// A port attached to the switch: its device, counters and cached MTU.
#[derive(Debug)]
pub struct Port {
    id: PortId,
    name: String,
    device: Box<dyn PortDevice>,
    capabilities: DeviceCapabilities,
    counters: PortCounters,
    mtu: AtomicU32,
    state: AtomicU8,
    capture: CaptureTap,
    ingress: PortPipeline,
    egress: PortPipeline,
    /// When (`steering_clock_ns`) a frame too big for the cached MTU last made the port re-read
    /// it from the device.
    mtu_checked_ns: AtomicU64,
}

/// How often a frame over the cached MTU may make a port re-read its device's MTU.
const MTU_RECHECK_NS: u64 = 50_000_000;

impl Port {
    pub(crate) fn new(id: PortId, name: String, device: Box<dyn PortDevice>) -> Self {
        let mtu = device.status().mtu.unwrap_or(1500);
        Port {
            id,
            name,
            capabilities: device.capabilities(),
            device,
            counters: PortCounters::default(),
            mtu: AtomicU32::new(mtu),
            state: AtomicU8::new(PortState::Live as u8),
            capture: CaptureTap::default(),
            ingress: PortPipeline::default(),
            egress: PortPipeline::default(),
            mtu_checked_ns: AtomicU64::new(0),
        }
    }

    /// The port's id in the forwarding core.
    pub fn id(&self) -> PortId {
        self.id
    }

    /// The name the user gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device.
    pub fn device(&self) -> &dyn PortDevice {
        &*self.device
    }

    /// What the device can do, as it said when attached.
    pub fn capabilities(&self) -> &DeviceCapabilities {
        &self.capabilities
    }

    /// Its traffic counters.
    pub fn counters(&self) -> &PortCounters {
        &self.counters
    }

    /// The MTU as last read from the device.
    pub fn mtu(&self) -> u32 {
        self.mtu.load(Relaxed)
    }

    /// Re-reads the device's MTU now, for a frame too big for the cached one (at most every
    /// 50 ms per port): true if it grew, so that an MTU raised a moment ago (`ip link set ...
    /// mtu 9000`) takes effect with the first frame that needs it, as on the kernel bridge,
    /// not at the next housekeeping tick.
    pub(crate) fn mtu_grew(&self) -> bool {
        let now = crate::steering_clock_ns();
        let last = self.mtu_checked_ns.load(Relaxed);
        if now.saturating_sub(last) < MTU_RECHECK_NS
            || self
                .mtu_checked_ns
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            return false;
        }
        match self.device.status().mtu {
            Some(mtu) if mtu > self.mtu() => {
                self.mtu.store(mtu, Relaxed);
                tracing::info!(port = %self.name, mtu, "MTU grew");
                true
            }
            _ => false,
        }
    }

    /// Re-reads the MTU and the kernel's drops from the device, keeping the old values of what
    /// the device can't say; false if the device is gone.
    pub(crate) fn refresh(&self) -> bool {
        let status = self.device.status();
        if !status.present {
            return false;
        }
        if let Some(mtu) = status.mtu
            && mtu != self.mtu.swap(mtu, Relaxed)
        {
            tracing::info!(port = %self.name, mtu, "MTU changed");
        }
        if let Some(frames) = status.kernel_drops {
            self.counters.set_kernel_drops(frames);
        }
        true
    }

    /// Where captures of this port get their copies.
    pub fn capture_tap(&self) -> &CaptureTap {
        &self.capture
    }

    /// The port's pipeline for `hook`.
    pub fn pipeline(&self, hook: Hook) -> &PortPipeline {
        match hook {
            Hook::Ingress => &self.ingress,
            Hook::Egress => &self.egress,
        }
    }

    /// Where the port is in its life.
    pub fn state(&self) -> PortState {
        PortState::from_u8(self.state.load(Relaxed))
    }

    /// True once the port no longer forwards: its device disappeared, or it was removed.
    pub fn is_gone(&self) -> bool {
        self.state() != PortState::Live
    }

    /// Moves the port on to `to`; false if it was there or beyond already (a port never comes
    /// back to life: a name added again is a new port).
    pub(crate) fn advance(&self, to: PortState) -> bool {
        self.state.fetch_max(to as u8, Relaxed) < to as u8
    }
}
