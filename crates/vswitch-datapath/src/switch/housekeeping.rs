//! The housekeeping thread: once a second it folds in what the fast path saw and moved, ages the
//! table, re-reads each port's MTU and drops, and takes out ports whose device went away.

use std::sync::mpsc;
use std::time::Duration;

use vswitch_core::{FdbKey, Timestamp};

use super::shared::Shared;

/// How often housekeeping runs.
pub(super) const INTERVAL: Duration = Duration::from_secs(1);

/// Runs housekeeping every [`INTERVAL`] until `stop` is dropped.
pub(super) fn run(shared: &Shared, stop: &mpsc::Receiver<()>) {
    let mut events = Vec::new();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(INTERVAL) {
        fast_path_seen(shared);
        let now = shared.now();
        {
            let mut state = shared.write();
            state.table.age(now, &mut events);
            shared.fast_learn(&events);
        }
        shared.count_events(&mut events);
        for port in shared.attached_ports().iter().filter(|p| !p.is_gone()) {
            if !port.refresh() {
                shared.port_gone(port, &"interface deleted");
            }
        }
        // The MAC map needs no sweep here: every table change updates it where it happens
        // (learning and ageing through `fast_learn`, flushes and static entries through
        // `sync_fast_fdb`), and a sweep costs two syscalls per MAC.
        shared.sync_fast_ports();
    }
}

/// What the fast path moved goes into the ports' counters, and the sources it saw into the table
/// (so they don't age out) before the table ages.
fn fast_path_seen(shared: &Shared) {
    let Some(fast) = shared.fast.get() else {
        return;
    };
    shared.harvest_fast_counters();
    match fast.seen() {
        Ok(seen) => {
            let state = shared.read();
            for (mac, port, at_ns) in seen {
                let micros = at_ns.saturating_sub(shared.epoch_ns) / 1000;
                let at = Timestamp::from_micros(micros);
                state.table.refresh(FdbKey::untagged(mac), port, at);
            }
        }
        Err(e) => tracing::warn!(error = %e, "fast path: couldn't read the MACs"),
    }
}
