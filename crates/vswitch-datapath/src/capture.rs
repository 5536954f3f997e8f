//! Copies of a port's frames for `vswitch capture`.
//!
//! When nobody captures, a port pays one relaxed atomic load per frame. When someone does, each
//! frame is copied into a bounded queue; if the reader falls behind, frames are dropped from the
//! capture (and counted), never held back from the datapath.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};

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
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in" => Ok(Direction::In),
            "out" => Ok(Direction::Out),
            "both" => Ok(Direction::Both),
            _ => Err(format!("direction {s:?} is not in, out or both")),
        }
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

#[derive(Debug)]
struct Subscriber {
    id: u64,
    direction: Direction,
    queue: Sender<CapturedFrame>,
    dropped: Arc<AtomicU64>,
}

/// A port's capture state.
#[derive(Debug, Default)]
pub struct CaptureTap {
    active: AtomicBool,
    next_id: AtomicU64,
    subscribers: Mutex<Vec<Subscriber>>,
}

impl CaptureTap {
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
            let copy = CapturedFrame {
                time: SystemTime::now(),
                direction,
                data: frame.to_vec(),
            };
            if let Err(TrySendError::Full(_)) = s.queue.try_send(copy) {
                s.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    fn subscribe(
        &self,
        direction: Direction,
        capacity: usize,
    ) -> (u64, Receiver<CapturedFrame>, Arc<AtomicU64>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let id = self.next_id.fetch_add(1, Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.push(Subscriber {
            id,
            direction,
            queue: tx,
            dropped: dropped.clone(),
        });
        self.active.store(true, Relaxed);
        (id, rx, dropped)
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
    dropped: Arc<AtomicU64>,
}

impl Capture {
    /// Starts capturing `direction` frames of `port`, queueing at most `capacity`.
    pub fn start(port: Arc<Port>, direction: Direction, capacity: usize) -> Capture {
        let (id, frames, dropped) = port.capture_tap().subscribe(direction, capacity);
        Capture {
            port,
            id,
            frames,
            dropped,
        }
    }

    /// The queue of captured frames.
    pub fn frames(&self) -> &Receiver<CapturedFrame> {
        &self.frames
    }

    /// Frames lost because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.port.capture_tap().unsubscribe(self.id);
    }
}
