//! vswitch's I/O side: it moves frames between devices and asks `vswitch-core` where they go.
//!
//! - [`tap`]: TAP devices the switch creates or attaches to.
//! - [`memory`]: in-memory ports (Unix seqpacket pairs) for tests without root.
//! - [`port`]: the [`PortDevice`] trait every kind of port implements, and [`Port`], the switch's
//!   per-port state (counters, MTU).
//! - [`switch`]: the running [`Switch`]: worker threads that poll ports, batch frames through the
//!   forwarding core and transmit, plus a housekeeping thread for ageing and MTU refresh.
//! - `sys`: the only module with `unsafe` code, a handful of ioctl and syscall wrappers.
#![deny(unsafe_code)]

pub mod memory;
pub mod port;
pub mod switch;
mod sys;
pub mod tap;

pub use memory::{MemoryPeer, MemoryPort};
pub use port::{Port, PortDevice};
pub use switch::{Switch, SwitchConfig, SwitchError};
pub use tap::{InvalidIfName, Tap, TapError, validate_ifname};
