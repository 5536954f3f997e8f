//! vswitch's I/O side: it moves frames between devices and asks `vswitch-core` where they go.
//!
//! - [`tap`]: TAP devices the switch creates or attaches to.
//! - [`packet`]: existing interfaces (veth ends, NICs) through `AF_PACKET` sockets.
//! - [`capture`]: copies of a port's frames for `vswitch capture`, free when unused.
//! - [`pipeline`]: a port's ingress and egress stage lists (filters, rates, impairments, mirrors).
//! - [`memory`]: in-memory ports (Unix seqpacket pairs) for tests without root.
//! - [`spec`]: `tap:NAME`, `dev:NAME` or a bare name, as given on `--ports`.
//! - [`port`]: the [`PortDevice`] trait every kind of port implements, and [`Port`], the switch's
//!   per-port state (counters, MTU).
//! - [`switch`]: the running [`Switch`]: worker threads that poll ports, batch frames through the
//!   forwarding core and transmit, plus a housekeeping thread for ageing and re-reading each
//!   device's MTU and kernel drops.
//! - [`hugepage`]: a global allocator asking for huge pages behind large blocks (the MAC table).
//! - `bpf`: the steering program for CPU steering (TAP queues and fanout sockets), assembled
//!   and loaded with `bpf(2)`, and the drain clock the workers share with it.
//! - `sys`: a handful of ioctl and syscall wrappers. It, `bpf` and `hugepage` are the only
//!   modules with `unsafe` code.
#![deny(unsafe_code)]

mod answers;
mod bpf;
pub mod capture;
mod fastpath;
pub mod hugepage;
pub mod kernel_vxlan;
mod leftover;
pub mod memory;
pub mod mirror_file;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod spec;
pub mod station;
pub mod switch;
mod sys;
pub mod tap;
pub mod tap_relay;
pub mod tun;
pub mod vxlan;

pub use answers::local_mac;
pub use bpf::steering_clock_ns;
pub use capture::{Capture, CapturedFrame, Direction};
pub use hugepage::HugePageAlloc;
pub use kernel_vxlan::KernelVxlanPort;
pub use memory::{MemoryPeer, MemoryPort};
pub use packet::{PacketPort, PacketPortError};
pub use pipeline::{Hook, PortPipeline};
pub use port::{
    CpuSteering, DeviceCapabilities, DeviceStatus, KernelLink, Port, PortDevice, PortState,
    Steering, Tunnel,
};
pub use spec::{OpenPortError, PortSpec, PortSpecError, TapSpec};
pub use station::StationPort;
pub use switch::{
    ControlError, Datapath, FdbRow, MacvlanConfig, PortReport, Switch, SwitchConfig, SwitchError,
    SwitchStats,
};
pub use tap::{InvalidIfName, Tap, TapError, validate_ifname};
pub use tap_relay::RelayedTap;
pub use tun::{TunConfig, TunPort};
pub use vxlan::{Carrier, VxlanConfig, VxlanPort};
