//! What the workers, the housekeeper and the [`Switch`](super::Switch) handle share: the state
//! behind one read-mostly lock (the MAC table and the port table), how frames are decided, and
//! the in-kernel fast path kept equal to the table.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use vswitch_core::{
    FdbKey, ForwardingConfig, MacAddr, MacTable, MacvlanTable, PortId, TableCounters, TableEvent,
    Timestamp,
};

use crate::fastpath::FastPath;
use crate::pipeline::Hook;
use crate::port::{Port, Steering};

use super::lock;
use super::ports::PortTable;

/// What decides where frames go.
#[derive(Debug)]
pub(super) enum Forwarder {
    /// A learning switch (the table lives in [`State`]).
    Learning(ForwardingConfig),
    /// MACVLAN dispatch by bound MAC (bindings change at runtime, rarely: a read lock per
    /// frame, uncontended).
    Macvlan(RwLock<MacvlanTable>),
}

/// State the workers share: the MAC table and the ports, behind one read-mostly lock.
#[derive(Debug)]
pub(super) struct State {
    pub(super) table: MacTable,
    pub(super) ports: PortTable,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) state: RwLock<State>,
    pub(super) busy_poll: Duration,
    pub(super) steering: Steering,
    pub(super) forwarder: Forwarder,
    /// Nanoseconds each worker spent handling frames (not waiting for them).
    pub(super) busy_nanos: Vec<AtomicU64>,
    pub(super) table_counters: TableCounters,
    pub(super) epoch: Instant,
    /// `epoch` on the fast path's clock (`CLOCK_MONOTONIC` ns).
    pub(super) epoch_ns: u64,
    /// The in-kernel fast path, made when the first port it can serve is attached (at start or
    /// later) if [`Shared::fast_allowed`].
    pub(super) fast: OnceLock<FastPath>,
    /// Whether the switch may run a fast path (`Some(cls_bpf)`: the datapath allows and the
    /// switch learns) and hasn't failed to make one.
    pub(super) fast_allowed: Mutex<Option<bool>>,
    /// Held while the fast path's counters are harvested.
    pub(super) harvesting: Mutex<()>,
    /// Frames VLAN membership dropped on ingress, by the VID of their outer tag (0: untagged):
    /// which VLAN a misconfigured neighbour is sending, which the per-port count can't say.
    pub(super) vlan_drops: Box<[AtomicU64]>,
    pub(super) stop: AtomicBool,
}

impl Shared {
    pub(super) fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every port not removed, gone ones included.
    pub(super) fn attached_ports(&self) -> Vec<Arc<Port>> {
        self.read().ports.attached().cloned().collect()
    }

    pub(super) fn count_events(&self, events: &mut Vec<TableEvent>) {
        let c = &self.table_counters;
        for event in events.drain(..) {
            let counter = match event {
                TableEvent::Learned { .. } => &c.learned,
                TableEvent::Moved { .. } => &c.moved,
                TableEvent::Aged { .. } => &c.aged,
                TableEvent::Evicted { .. } => &c.evicted,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?event, "table");
        }
    }

    /// Takes a port whose device failed out of forwarding (live → gone) and forgets its MACs.
    /// Its worker stops polling it when it next looks.
    pub(super) fn port_gone(&self, port: &Port, error: &dyn std::fmt::Display) {
        if port.is_gone() {
            return;
        }
        if let Some(fast) = self.fast.get() {
            fast.detach(port.id());
        }
        let flushed = {
            let mut state = self.write();
            if !state.ports.mark_gone(port) {
                return;
            }
            state.table.flush_port(port.id())
        };
        self.sync_fast_fdb();
        tracing::warn!(port = port.name(), %error, flushed, "port disappeared; removed from the switch");
    }

    /// Asks `port` to steer by CPU if the switch does; true if it does so now.
    pub(super) fn steer(&self, port: &Port) -> bool {
        if self.steering != Steering::Cpu || port.capabilities().rx_queues < 2 {
            return false;
        }
        let Some(steering) = port.device().cpu_steering() else {
            return false;
        };
        match steering.steer_by_cpu() {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(port = port.name(), error = %e, "steering by flow");
                false
            }
        }
    }

    /// Lets the fast path serve `port` if it can (a `dev:` port, a relayed TAP), making the
    /// fast path first if this is the first such port; logs why not otherwise.
    pub(super) fn attach_fast(&self, port: &Port) {
        if port.device().kernel_link().is_none() {
            return;
        }
        let Some(fast) = self.fast_path() else { return };
        match fast.attach(port) {
            Ok(true) => tracing::info!(port = port.name(), "in-kernel fast path"),
            Ok(false) => {}
            Err(e) => {
                fast.detach(port.id());
                tracing::warn!(port = port.name(), error = %e, "no fast path for this port");
            }
        }
    }

    /// The fast path, made now if it may be and isn't yet (once: a failure is logged and not
    /// tried again).
    fn fast_path(&self) -> Option<&FastPath> {
        let mut allowed = lock(&self.fast_allowed);
        if self.fast.get().is_none() {
            let cls_bpf = (*allowed)?;
            match FastPath::new(cls_bpf) {
                Ok(fast) => {
                    let _ = self.fast.set(fast);
                    drop(allowed);
                    self.sync_fast_fdb();
                }
                Err(e) => {
                    *allowed = None;
                    tracing::warn!(error = %e, "no in-kernel fast path (needs CAP_BPF and CAP_NET_ADMIN); every frame goes through the switch");
                    return None;
                }
            }
        }
        self.fast.get()
    }

    /// Keeps the fast path's MACs equal to the table after `events`: a learned or moved MAC is
    /// forwarded in the kernel from its next frame on, an aged or evicted one no longer. Called
    /// under the table's write lock, so the map changes in the table's order.
    pub(super) fn fast_learn(&self, events: &[TableEvent]) {
        let Some(fast) = self.fast.get() else { return };
        for event in events {
            let (key, port) = match *event {
                TableEvent::Learned { key, port } => (key, Some(port)),
                TableEvent::Moved { key, to, .. } => (key, Some(to)),
                TableEvent::Aged { key, .. } | TableEvent::Evicted { key, .. } => (key, None),
            };
            if key == FdbKey::untagged(key.mac)
                && let Err(e) = fast.set_mac(key.mac, port)
            {
                tracing::warn!(error = %e, "fast path: couldn't update a MAC");
            }
        }
    }

    /// Makes the fast path's MACs equal to the table's untagged entries (after a flush, a
    /// static entry, a removed port, a VLAN mode).
    pub(super) fn sync_fast_fdb(&self) {
        let Some(fast) = self.fast.get() else { return };
        let now = self.now();
        // The read lock is held until the map is written: a change the snapshot misses (it
        // needs the write lock) is written to the map after this sync, never undone by it.
        let state = self.read();
        let entries: Vec<(MacAddr, PortId)> = state
            .table
            .entries()
            .filter(|e| e.key == FdbKey::untagged(e.key.mac))
            .filter(|e| state.table.lookup(e.key, now) == Some(e.port))
            .map(|e| (e.key.mac, e.port))
            .collect();
        if let Err(e) = fast.sync_fdb(&entries) {
            tracing::warn!(error = %e, "fast path: couldn't sync the MACs");
        }
    }

    /// Lets the fast path serve each of its ports that has no pipeline and no capture, with the
    /// port's MTU; the others' frames all go through the switch.
    pub(super) fn sync_fast_ports(&self) {
        let Some(fast) = self.fast.get() else { return };
        if self.stop.load(Ordering::Relaxed) {
            return; // stopping: `Switch::stop` disabled every port for good
        }
        let ports: Vec<(Arc<Port>, bool)> = {
            let state = self.read();
            state
                .ports
                .attached()
                .map(|p| (p.clone(), state.ports.policy(p.id()).is_default()))
                .collect()
        };
        for (port, plain) in ports.iter().filter(|(p, _)| fast.serves(p.id())) {
            let enabled = *plain
                && !port.is_gone()
                // (A relayed TAP that left its namespace is no longer a kernel link.)
                && port.device().kernel_link().is_some()
                && !port.pipeline(Hook::Ingress).is_active()
                && !port.pipeline(Hook::Egress).is_active()
                && !port.capture_tap().is_active();
            if let Err(e) = fast.set_port(port.id(), enabled, port.mtu()) {
                tracing::warn!(port = port.name(), error = %e, "fast path: couldn't update a port");
            }
        }
    }

    /// Adds what the fast path moved since the last call to the ports' counters.
    pub(super) fn harvest_fast_counters(&self) {
        let Some(fast) = self.fast.get() else { return };
        // One harvest at a time, so no delta is counted twice.
        let _one = lock(&self.harvesting);
        let moved = fast.harvest();
        if moved.is_empty() {
            return;
        }
        let state = self.read();
        for (id, m) in moved {
            if let Some(port) = state.ports.get(id) {
                port.counters()
                    .add_fast_path(m.rx_packets, m.rx_bytes, m.tx_packets, m.tx_bytes);
            }
        }
    }
}
