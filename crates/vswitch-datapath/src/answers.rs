//! What the ports that are stations themselves (TUN ports, the switch's own address) share:
//! frames they make in answer to the switch (ARP replies, echo replies, packets that waited for
//! a neighbour) reach a worker through a socket pair, so they are read, counted and captured as
//! received frames; a clock for their neighbour caches; a MAC of their own.

use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use vswitch_core::{MacAddr, Timestamp};

use crate::sys;

/// A queue of frames a port made, bounded by its socket buffer.
#[derive(Debug)]
pub(crate) struct Answers {
    read: UnixStream,
    write: UnixStream,
    lost: AtomicU64,
    epoch: Instant,
}

impl Answers {
    pub(crate) fn new() -> io::Result<Answers> {
        let (read, write) = sys::seqpacket_pair()?;
        let (read, write) = (UnixStream::from(read), UnixStream::from(write));
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(Answers {
            read,
            write,
            lost: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Queues `frame`; when the queue is full it is lost, and counted.
    pub(crate) fn push(&self, frame: &[u8]) {
        if (&self.write).write(frame).is_err() {
            self.lost.fetch_add(1, Relaxed);
        }
    }

    /// The next queued frame, `WouldBlock` if none.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match (&self.read).read(buf)? {
            0 => Err(io::ErrorKind::ConnectionAborted.into()),
            n => Ok(n),
        }
    }

    /// The fd a worker polls.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Frames lost to a full queue.
    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Relaxed)
    }

    /// Now, for the port's neighbour cache: time since the port opened.
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

/// A locally administered unicast MAC derived from `seed`, the same each run.
pub fn local_mac(seed: &str) -> MacAddr {
    let mut h = std::hash::DefaultHasher::new();
    seed.hash(&mut h);
    let b = h.finish().to_be_bytes();
    MacAddr([0x02, b[1], b[2], b[3], b[4], b[5]])
}
