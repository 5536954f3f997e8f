//! Where a worker runs under CPU steering: pinned to its CPU while its load is light, free to
//! move while it is busy.
//!
//! Pinned, the worker shares a CPU with the senders whose frames its queue carries, so waking it
//! is a context switch there rather than a wake-up of another CPU (what makes a ping through the
//! switch 3× faster on a VM). Busy, it would compete for that CPU with the very sender it
//! serves; unpinned, the scheduler can move it next to an idle core, as with flow steering.

use std::time::{Duration, Instant};

/// How long a stretch of time the worker's load is measured over.
const WINDOW: Duration = Duration::from_millis(20);
/// Busy for more than this share of a window: unpin.
const UNPIN_ABOVE: f64 = 0.5;
/// Busy for less than this share of a window: pin again (the gap avoids flapping).
const PIN_BELOW: f64 = 0.2;

/// Whether a worker should be pinned after a window in which it was busy for `load` (0 to 1) of
/// the time, given whether it is now.
pub(super) fn should_pin(pinned: bool, load: f64) -> bool {
    if pinned {
        load <= UNPIN_ABOVE
    } else {
        load < PIN_BELOW
    }
}

/// A worker's CPU affinity under CPU steering.
#[derive(Debug)]
pub(super) struct Affinity {
    /// The CPU whose frames the worker's queues carry.
    cpu: usize,
    /// The CPUs the switch runs on: 0..cpus.
    cpus: usize,
    pinned: bool,
    window_start: Instant,
    busy: Duration,
}

impl Affinity {
    /// Pins the calling thread to `cpu` (of `0..cpus`) and starts measuring.
    pub(super) fn pin(cpu: usize, cpus: usize) -> Affinity {
        let mut a = Affinity {
            cpu,
            cpus,
            pinned: false,
            window_start: Instant::now(),
            busy: Duration::ZERO,
        };
        a.set(true);
        a
    }

    /// Counts `busy` time ending `now`; at the end of a window, pins or unpins the thread.
    pub(super) fn account(&mut self, now: Instant, busy: Duration) {
        self.busy += busy;
        let window = now.saturating_duration_since(self.window_start);
        if window < WINDOW {
            return;
        }
        let load = self.busy.as_secs_f64() / window.as_secs_f64();
        let pin = should_pin(self.pinned, load);
        if pin != self.pinned {
            self.set(pin);
        }
        self.window_start = now;
        self.busy = Duration::ZERO;
    }

    fn set(&mut self, pin: bool) {
        let mut set = nix::sched::CpuSet::new();
        let cpus = if pin {
            self.cpu..self.cpu + 1
        } else {
            0..self.cpus
        };
        let result = cpus
            .into_iter()
            .try_for_each(|c| set.set(c))
            .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
        match result {
            Ok(()) => self.pinned = pin,
            Err(e) => tracing::debug!(cpu = self.cpu, pin, error = %e, "couldn't change affinity"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpins_when_busy_and_pins_again_only_when_quiet() {
        assert!(should_pin(true, 0.1) && should_pin(true, 0.5));
        assert!(!should_pin(true, 0.6), "a busy pinned worker lets go");
        assert!(!should_pin(false, 0.3), "between the marks nothing changes");
        assert!(should_pin(false, 0.1), "a quiet free worker goes home");
    }
}
