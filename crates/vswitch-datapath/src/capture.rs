//! Copies of a port's frames for `vswitch capture`.
//!
//! When nobody captures, a port pays one relaxed atomic load per frame. When someone does, each
//! frame is copied into a queue bounded in frames and in bytes; if the reader falls behind,
//! frames are dropped from the capture (and counted) before anything is copied, never held back
//! from the datapath. A port takes at most [`MAX_CAPTURES_PER_PORT`] captures at once.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::port::Port;

/// Which frames of a port to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Frames the port received.
    In,
    /// Frames the switch sent out of the port.
    Out,
    /// Both.
    Both,
}

impl std::str::FromStr for Direction {
    type Err = vswitch_core::UnknownChoice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in" => Ok(Direction::In),
            "out" => Ok(Direction::Out),
            "both" => Ok(Direction::Both),
            _ => Err(vswitch_core::UnknownChoice::new(
                "direction",
                s,
                "in, out, both",
            )),
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        })
    }
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// When the switch saw it.
    pub time: SystemTime,
    /// Received (`In`) or sent (`Out`).
    pub direction: Direction,
    /// The Ethernet frame.
    pub data: Vec<u8>,
}

/// Captures one port serves at once.
pub const MAX_CAPTURES_PER_PORT: usize = 4;
/// Bytes of frames one capture may hold queued.
pub const MAX_QUEUED_BYTES: u64 = 16 << 20;

/// Why a capture couldn't start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The port serves [`MAX_CAPTURES_PER_PORT`] captures already.
    #[error("port {0} already has {MAX_CAPTURES_PER_PORT} captures running")]
    TooMany(String),
}

/// A capture's queue as the datapath sees it.
#[derive(Debug)]
struct Subscriber {
    id: u64,
    direction: Direction,
    queue: Sender<CapturedFrame>,
    counts: Arc<QueueCounts>,
}

#[derive(Debug, Default)]
struct QueueCounts {
    dropped: AtomicU64,
    queued_bytes: AtomicU64,
}

/// A port's capture state.
#[derive(Debug, Default)]
pub struct CaptureTap {
    active: AtomicBool,
    next_id: AtomicU64,
    subscribers: Mutex<Vec<Subscriber>>,
}

impl CaptureTap {
    /// Whether any capture runs.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Hands a copy of `frame` to every capture of `direction`; costs nothing when none runs.
    pub(crate) fn offer(&self, direction: Direction, frame: &[u8]) {
        if !self.active.load(Relaxed) {
            return;
        }
        let subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for s in subscribers.iter() {
            if s.direction != Direction::Both && s.direction != direction {
                continue;
            }
            // Room first: a full capture costs no clock read and no copy.
            let size = frame.len() as u64;
            if s.queue.is_full() || s.counts.queued_bytes.load(Relaxed) + size > MAX_QUEUED_BYTES {
                s.counts.dropped.fetch_add(1, Relaxed);
                continue;
            }
            let copy = CapturedFrame {
                time: SystemTime::now(),
                direction,
                data: frame.to_vec(),
            };
            s.counts.queued_bytes.fetch_add(size, Relaxed);
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                s.queue.try_send(copy)
            {
                s.counts.queued_bytes.fetch_sub(size, Relaxed);
                s.counts.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    fn subscribe(
        &self,
        direction: Direction,
        capacity: usize,
    ) -> Option<(u64, Receiver<CapturedFrame>, Arc<QueueCounts>)> {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if subscribers.len() >= MAX_CAPTURES_PER_PORT {
            return None;
        }
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let id = self.next_id.fetch_add(1, Relaxed);
        let counts = Arc::new(QueueCounts::default());
        subscribers.push(Subscriber {
            id,
            direction,
            queue: tx,
            counts: counts.clone(),
        });
        self.active.store(true, Relaxed);
        Some((id, rx, counts))
    }

    fn unsubscribe(&self, id: u64) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| s.id != id);
        self.active.store(!subscribers.is_empty(), Relaxed);
    }
}

/// A running capture; dropping it stops the copying.
#[derive(Debug)]
pub struct Capture {
    port: Arc<Port>,
    id: u64,
    frames: Receiver<CapturedFrame>,
    counts: Arc<QueueCounts>,
}

impl Capture {
    /// Starts capturing `direction` frames of `port`, queueing at most `capacity` frames (and
    /// [`MAX_QUEUED_BYTES`]).
    pub fn start(
        port: Arc<Port>,
        direction: Direction,
        capacity: usize,
    ) -> Result<Capture, CaptureError> {
        let (id, frames, counts) = port
            .capture_tap()
            .subscribe(direction, capacity)
            .ok_or_else(|| CaptureError::TooMany(port.name().to_owned()))?;
        Ok(Capture {
            port,
            id,
            frames,
            counts,
        })
    }

    /// The next captured frame, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<CapturedFrame, RecvTimeoutError> {
        let frame = self.frames.recv_timeout(timeout)?;
        self.counts
            .queued_bytes
            .fetch_sub(frame.data.len() as u64, Relaxed);
        Ok(frame)
    }

    /// Frames lost because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Relaxed)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.port.capture_tap().unsubscribe(self.id);
    }
}
