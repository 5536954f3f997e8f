//! One snapshot of everything a switch counts, read at one moment: `stats --json`, `/metrics`
//! and the exit report all render this, so they can't disagree on what a counter is.

use std::time::Duration;

use vswitch_core::{PortStats, TableStats};

use super::Switch;
use crate::pipeline::Hook;

/// A pipeline's stages and their counters: (kind, [(counter, value)]).
pub type StageCounters = Vec<(&'static str, Vec<(&'static str, u64)>)>;

/// A port's counters and state.
#[derive(Debug, Clone)]
pub struct PortReport {
    /// Its name.
    pub name: String,
    /// The kind of device (`tap`, `dev`, `vxlan`...).
    pub kind: &'static str,
    /// Its device went away.
    pub gone: bool,
    /// Its MTU now.
    pub mtu: u32,
    /// Frames, bytes and drops (fast-path frames included).
    pub counters: PortStats,
    /// The in-kernel fast path forwards from and to it now.
    pub fast_path: bool,
    /// The device's own counters (a VXLAN port's per-VTEP traffic and decap drops).
    pub device: Vec<(String, u64)>,
    /// The ingress pipeline's stages, then the egress pipeline's.
    pub pipelines: [StageCounters; 2],
}

/// Everything a switch counts.
#[derive(Debug, Clone)]
pub struct SwitchStats {
    /// Every port, gone ones included.
    pub ports: Vec<PortReport>,
    /// Table changes.
    pub table: TableStats,
    /// Entries in the table now.
    pub table_entries: usize,
    /// The table's capacity.
    pub table_capacity: usize,
    /// Time each worker spent handling frames.
    pub workers_busy: Vec<Duration>,
    /// Frames VLAN membership dropped, by VID (only VIDs with drops).
    pub vlan_drops: Vec<(u16, u64)>,
    /// How the fast path's classifiers are attached, if it runs (`tcx`, `cls_bpf`).
    pub fast_path_attachment: Option<&'static str>,
}

impl Switch {
    /// Every counter, read now (the fast path's per-CPU counters merged in first).
    pub fn stats(&self) -> SwitchStats {
        self.sync_counters();
        let fast = self.fast_path_ports();
        let ports = self
            .ports()
            .iter()
            .map(|p| PortReport {
                name: p.name().to_owned(),
                kind: p.capabilities().kind,
                gone: p.is_gone(),
                mtu: p.mtu(),
                counters: p.counters().snapshot(),
                fast_path: fast.iter().any(|f| f == p.name()),
                device: p.device().counters(),
                pipelines: [
                    p.pipeline(Hook::Ingress).counters(),
                    p.pipeline(Hook::Egress).counters(),
                ],
            })
            .collect();
        let (table_entries, table_capacity) = self.table_size();
        SwitchStats {
            ports,
            table: self.table_stats(),
            table_entries,
            table_capacity,
            workers_busy: self.worker_busy(),
            vlan_drops: self.vlan_drops(),
            fast_path_attachment: self.fast_path_attachment(),
        }
    }
}
