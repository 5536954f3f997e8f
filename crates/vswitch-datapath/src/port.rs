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

/// What a device says of itself now; `None` for what it couldn't tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Its MTU (it may change while the switch runs).
    pub mtu: Option<u32>,
    /// Frames the kernel dropped, in all, before the switch could read them.
    pub kernel_drops: Option<u64>,
}

/// Something frames can be read from and written to through a pollable, non-blocking fd.
///
/// TAPs implement it now; packet sockets on existing interfaces, VXLAN and others later. Tests use
/// [`crate::MemoryPort`]. Methods take `&self` because one worker reads a port while others write
/// to it.
pub trait PortDevice: Send + Sync + std::fmt::Debug {
    /// Reads one frame into `buf` (behind a virtio-net header if [`PortDevice::vnet_header`]),
    /// returning the length read; `WouldBlock` when there is none.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame (behind a virtio-net header if [`PortDevice::vnet_header`]);
    /// `WouldBlock` when the device's queue is full.
    fn send(&self, frame: &[u8]) -> io::Result<()>;
    /// The fd the worker polls for readability.
    fn fd(&self) -> BorrowedFd<'_>;
    /// The device's MTU now (it may change while the switch runs).
    fn mtu(&self) -> io::Result<u32>;
    /// A short name of the kind of device, for tables and logs.
    fn kind(&self) -> &'static str;
    /// True if every frame read or written carries a virtio-net header in front
    /// ([`vswitch_core::VNET_HDR_LEN`] bytes) and the device takes GSO frames and partial
    /// checksums.
    fn vnet_header(&self) -> bool {
        false
    }
    /// False once the device is known to be gone for good. For devices whose fd reports that
    /// only ambiguously (a packet socket says the same when its interface goes down and when it
    /// is deleted), the housekeeping thread asks this once a second.
    fn is_present(&self) -> bool {
        true
    }
    /// Frames the kernel has dropped, in all, before the switch could read them (the device's
    /// queue was full); `Unsupported` where the device can't tell.
    fn kernel_drops(&self) -> io::Result<u64> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// What the housekeeping thread re-reads once a second: [`PortDevice::mtu`] and
    /// [`PortDevice::kernel_drops`], which a device may answer together more cheaply (a TAP in
    /// another namespace is visited once for both).
    fn status(&self) -> DeviceStatus {
        DeviceStatus {
            mtu: self.mtu().ok(),
            kernel_drops: self.kernel_drops().ok(),
        }
    }
    /// How many receive queues the device has; each can be served by a different worker.
    fn rx_queues(&self) -> usize {
        1
    }
    /// The fd of receive queue `queue`.
    fn queue_fd(&self, _queue: usize) -> BorrowedFd<'_> {
        self.fd()
    }
    /// Reads one frame from receive queue `queue` (see [`PortDevice::recv`]).
    fn recv_queue(&self, _queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf)
    }
    /// Makes the device put each received frame in the queue numbered after the CPU that sent
    /// it (modulo the queues), so a worker pinned to that CPU serves it ([`Steering::Cpu`]);
    /// `Unsupported` where the device can't, and then it keeps steering by flow.
    fn steer_by_cpu(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Under CPU steering, tells the steering program that `queue` was found empty with every
    /// frame read from it before `at_ns` ([`crate::steering_clock_ns`]) forwarded, so flows may
    /// leave it without being reordered.
    fn queue_drained(&self, _queue: usize, _at_ns: u64) {}
    /// True if frames read from the device come behind a virtio-net header the device wrote,
    /// though frames written to it don't (a VXLAN port: a tunnel can deliver an inner frame
    /// longer than the MTU, which it marks GSO). The same as [`PortDevice::vnet_header`] unless
    /// the device says otherwise.
    fn rx_vnet_header(&self) -> bool {
        self.vnet_header()
    }
    /// Pins `mac` to the remote `remote` (a VXLAN port's VTEP for it, as `bridge fdb append
    /// ... dst`), never aged or moved by learning.
    fn add_remote(&self, _mac: vswitch_core::MacAddr, _remote: std::net::IpAddr) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "only a VXLAN port has remotes",
        ))
    }
    /// Forgets what the device knows of where `mac` is.
    fn remove_remote(&self, _mac: vswitch_core::MacAddr) {}
    /// Counters of the device's own, by name (a VXLAN port's per-VTEP traffic and decap
    /// drops), for `stats`.
    fn extra_counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// The interface index of a device in the switch's own namespace that the in-kernel fast
    /// path can serve (a `dev:` port), or `None`.
    fn fast_path_ifindex(&self) -> Option<u32> {
        None
    }
    /// Runs `program` as a socket filter on every receive queue (the fast path's half that
    /// takes frames it forwards away from the switch).
    fn attach_filter(&self, _program: BorrowedFd<'_>) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// The device's own MAC address, the default MACVLAN binding of a sub-port.
    fn mac(&self) -> io::Result<vswitch_core::MacAddr> {
        Err(io::ErrorKind::Unsupported.into())
    }
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
        let mtu = device.mtu().unwrap_or(1500);
        Port {
            id,
            name,
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
        match self.device.mtu() {
            Ok(mtu) if mtu > self.mtu() => {
                self.mtu.store(mtu, Relaxed);
                tracing::info!(port = %self.name, mtu, "MTU grew");
                true
            }
            _ => false,
        }
    }

    /// Re-reads the MTU and the kernel's drops from the device; keeps the old values of what
    /// the device can't say.
    pub(crate) fn refresh(&self) {
        let status = self.device.status();
        if let Some(mtu) = status.mtu
            && mtu != self.mtu.swap(mtu, Relaxed)
        {
            tracing::info!(port = %self.name, mtu, "MTU changed");
        }
        if let Some(frames) = status.kernel_drops {
            self.counters.set_kernel_drops(frames);
        }
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
