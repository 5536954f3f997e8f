//! Network namespace and link plumbing for vswitch: what `ip netns` and `ip link add type veth`
//! do, as a library that speaks rtnetlink directly.
//!
//! - [`netns`]: named namespaces compatible with iproute2 (`/run/netns/NAME` bind mounts), created
//!   without forking, and [`Netns::run`] to do work inside one on a dedicated thread.
//! - [`rtnl`]: a small synchronous rtnetlink client ([`Netlink`]) bound to the namespace of the
//!   thread that opened it: links (veth, move, up, MTU, delete), addresses, routes.
//! - [`message`]: rtnetlink message building and parsing, pure and unit-tested.
//! - [`icmp`]: ICMP echo of our own ([`Pinger`]), run from inside a namespace.
//! - [`guard`]: RAII guards that delete what they created, so tests and labs never leak.
#![forbid(unsafe_code)]

pub mod error;
pub mod guard;
pub mod icmp;
pub mod message;
pub mod netns;
pub mod rtnl;

pub use error::{NetnsError, Refusal};
pub use guard::{LinkGuard, NetnsGuard};
pub use icmp::{EchoOptions, EchoReport, Pinger};
pub use netns::Netns;
pub use rtnl::Netlink;
