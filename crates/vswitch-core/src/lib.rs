//! The forwarding core of vswitch: what to do with a frame, never how it moves.
//!
//! This crate holds no file descriptors, spawns no threads and reads no clock. Frames come in as
//! byte slices together with the ingress [`PortId`] and the current [`Timestamp`]; out comes a
//! [`Decision`]: drop (with a [`DropReason`]), send to one port, or flood. The I/O side
//! (`vswitch-datapath`) feeds it from TAPs and sockets, and tests feed it from memory with a fake
//! clock, so learning and ageing are tested without sleeping.
//!
//! The layers, bottom up:
//! - [`wire`]: zero-copy views of Ethernet headers and MAC addresses.
//! - [`table`]: the MAC table (forwarding database), keyed by (VLAN, MAC), with learning, ageing,
//!   capacity and fair eviction.
//! - [`forward`]: the forwarding decision for one frame.
//! - [`macvlan`]: MACVLAN-style dispatch by destination MAC, the kernel's modes, no learning.
//! - [`l3port`]: an IP device (a TUN) on the segment: ARP, next-hop MACs, waiting packets.
//! - [`vlan`]: per-port 802.1Q membership (access, trunk, native, dot1q-tunnel) and flags.
//! - [`vnet`]: the virtio-net header that carries offload metadata (GSO, partial checksums)
//!   with each frame, and what the switch must check or finish because of it.
//! - [`gso`]: software segmentation of GSO frames for ports that can't take them whole.
//! - [`pipeline`]: per-port stages: filters, rate limits, impairments, mirrors.
//! - [`pcap`]: the capture file format.
//! - [`counters`]: per-port and per-table counters that any thread may read at any time.
#![forbid(unsafe_code)]

pub mod checksum;
pub mod choice;
pub mod counters;
pub mod field;
pub mod forward;
pub mod gro;
pub mod gso;
pub mod l3port;
pub mod macvlan;
pub mod pcap;
pub mod pipeline;
pub mod table;
pub mod time;
pub mod view;
pub mod vlan;
pub mod vnet;
pub mod wire;

#[cfg(test)]
mod testing;

pub use choice::UnknownChoice;
pub use counters::{DropReason, PortCounters, PortStats, TableCounters, TableStats};
pub use forward::{Decision, Egress, ForwardingConfig, LearnRequest, Scope};
pub use macvlan::{MacvlanError, MacvlanMode, MacvlanTable};
pub use pipeline::{Outcome, Pipeline, PipelineError};
pub use table::{FdbEntry, FdbKey, MacTable, TableConfig, TableEvent};
pub use time::Timestamp;
pub use view::FrameView;
pub use vlan::{EgressTag, Ingress, PortFlags, PortPolicy, VlanError, VlanMode, VlanSet};
pub use vnet::{VNET_HDR_LEN, VnetHeader, insert_vlan_tag, remove_vlan_tag};
pub use wire::{EthernetFrame, MacAddr, PortId, VlanId};
