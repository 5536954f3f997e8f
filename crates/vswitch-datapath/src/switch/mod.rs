//! The running switch: worker threads around the forwarding core.
//!
//! Each receive queue of a port belongs to one worker (a multi-queue TAP has one per worker, and
//! the kernel keeps each flow on one queue), so frames of one flow stay in order. A worker
//! (`worker`) waits on its queues with epoll (mio), reads up to [`BATCH`] frames from a ready
//! queue into preallocated buffers, and takes each along the frame path (`frame_path`): ingress
//! pipeline, forwarding decision under one shared (read) lock of the switch's state per batch,
//! egress pipeline, send. Learning is applied afterwards under the exclusive lock — rare once
//! hosts are known.
//!
//! Where things are: what a switch is started with (`config`), the state workers share
//! (`shared`), the ports and their lives (`ports`), starting (`start`), what changes at runtime
//! (`operations`), the once-a-second chores (`housekeeping`), and one snapshot of every counter
//! (`stats`). This module holds the [`Switch`] handle and stopping.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Token;
use vswitch_core::{PortPolicy, TableStats, VNET_HDR_LEN};

use crate::port::{Port, Steering};

mod affinity;
mod config;
mod frame_path;
mod housekeeping;
mod operations;
mod ports;
mod shared;
mod start;
mod stats;
mod worker;

pub use config::{ControlError, Datapath, MacvlanConfig, SwitchConfig, SwitchError};
pub use operations::FdbRow;
pub use stats::{PortReport, StageCounters, SwitchStats};

#[doc(hidden)]
pub use worker::Injector;

use shared::Shared;
use worker::WorkerHandle;

/// Frames read from one port before the worker looks at its other ports.
pub const BATCH: usize = 32;
/// Receive buffer size: a virtio-net header and the largest frame a 64 KiB MTU (or a 64 KiB GSO
/// segment) allows, with a VLAN tag, and room for a tunnel header read in front of it.
const MAX_FRAME: usize = VNET_HDR_LEN + 65536 + 18 + 32;
const WAKER: Token = Token(usize::MAX);

/// A running switch. Methods take `&self`, so it can be shared with a control thread; dropping
/// it stops the workers (see [`Switch::stop`]).
#[derive(Debug)]
pub struct Switch {
    shared: Arc<Shared>,
    workers: Mutex<Vec<WorkerHandle>>,
    housekeeper: Mutex<Option<(JoinHandle<()>, mpsc::Sender<()>)>>,
    next_worker: AtomicUsize,
}

impl Switch {
    /// A thread-less worker of this switch, for the fuzz target.
    #[doc(hidden)]
    pub fn injector(&self) -> std::io::Result<Injector> {
        Injector::new(self.shared.clone())
    }

    /// Every port attached now or before, including ones whose device has gone; not those
    /// removed with [`Switch::remove_port`].
    pub fn ports(&self) -> Vec<Arc<Port>> {
        self.shared.attached_ports()
    }

    /// The port called `name`: the live one if a port of that name vanished and was added
    /// again, else the gone one (whose counters still show).
    pub fn port(&self, name: &str) -> Option<Arc<Port>> {
        self.shared.read().ports.named(name).cloned()
    }

    /// How multi-queue ports spread frames over the workers.
    pub fn steering(&self) -> Steering {
        self.shared.steering
    }

    /// How many worker threads run.
    pub fn threads(&self) -> usize {
        self.shared.busy_nanos.len()
    }

    /// Time each worker has spent handling frames, as opposed to waiting for them.
    pub fn worker_busy(&self) -> Vec<Duration> {
        self.shared
            .busy_nanos
            .iter()
            .map(|n| Duration::from_nanos(n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Table events so far.
    pub fn table_stats(&self) -> TableStats {
        self.shared.table_counters.snapshot()
    }

    /// Entries in the table and its capacity.
    pub fn table_size(&self) -> (usize, usize) {
        let state = self.shared.read();
        (state.table.len(), state.table.config().capacity)
    }

    /// Frames VLAN membership dropped on ingress, by VID of their outer tag (0 for untagged
    /// frames), for the VIDs with any.
    pub fn vlan_drops(&self) -> Vec<(u16, u64)> {
        self.shared
            .vlan_drops
            .iter()
            .enumerate()
            .map(|(vid, n)| (vid as u16, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Every live port's VLAN membership and flags.
    pub fn policies(&self) -> Vec<(String, PortPolicy)> {
        let state = self.shared.read();
        state
            .ports
            .live_ports()
            .map(|p| (p.name().to_owned(), state.ports.policy(p.id()).clone()))
            .collect()
    }

    /// Brings the ports' counters up to date with what the fast path moved (housekeeping does
    /// it every second; call it before reading counters that must be exact now).
    pub fn sync_counters(&self) {
        self.shared.harvest_fast_counters();
    }

    /// The ports the in-kernel fast path forwards from and to now (none with `--datapath
    /// userspace`, without CAP_BPF or tcx, or without `dev:` ports; not those with a pipeline,
    /// a capture, a VLAN mode or flags).
    pub fn fast_path_ports(&self) -> Vec<String> {
        let Some(fast) = self.shared.fast.get() else {
            return Vec::new();
        };
        self.shared
            .read()
            .ports
            .live_ports()
            .filter(|p| fast.is_enabled(p.id()))
            .map(|p| p.name().to_owned())
            .collect()
    }

    /// How the fast path's classifiers are attached (`tcx` or `cls_bpf`), if it runs.
    pub fn fast_path_attachment(&self) -> Option<&'static str> {
        self.shared.fast.get().map(|f| f.attachment())
    }

    /// Whether the kernel may carry frames for ports added now: a fast path runs, or may be
    /// made for them (so a TAP added with `tap:NAME@NS` is worth a relay).
    pub fn kernel_may_carry(&self) -> bool {
        self.shared.fast.get().is_some() || lock(&self.shared.fast_allowed).is_some()
    }

    /// Stops the workers and the housekeeper and waits for them. Devices close when the switch is
    /// dropped (TAPs this process created disappear then).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(fast) = self.shared.fast.get() {
            fast.disable_all();
        }
        let workers: Vec<WorkerHandle> = lock(&self.workers).drain(..).collect();
        for worker in &workers {
            if let Err(e) = worker.waker.wake() {
                tracing::error!(error = %e, "couldn't wake a worker");
            }
        }
        for worker in workers {
            if worker.thread.join().is_err() {
                tracing::error!("a worker panicked");
            }
        }
        if let Some((handle, tx)) = lock(&self.housekeeper).take() {
            drop(tx);
            if handle.join().is_err() {
                tracing::error!("the housekeeping thread panicked");
            }
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Frames VLAN membership dropped, one counter per VID.
fn vlan_drop_counters() -> Box<[AtomicU64]> {
    (0..4096).map(|_| AtomicU64::new(0)).collect()
}
