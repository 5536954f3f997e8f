//! In-memory ports: a Unix `SOCK_SEQPACKET` pair, one end for the switch, one for a test host.
//!
//! The switch polls and reads it exactly like a TAP, so tests without root exercise the real
//! workers; the far end ([`MemoryPeer`]) is what a smoltcp host or a test writes frames into.
//! A cable may have several receive queues, like a multi-queue TAP: the peer picks the queue of
//! each frame and sees when the switch last found each one empty (the drain clock a TAP's
//! steering program reads), so it can move a flow between queues as that program does.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::port::{CpuSteering, DeviceCapabilities, DeviceStatus, PortDevice};
use crate::sys;

/// The switch's end of an in-memory cable.
#[derive(Debug)]
pub struct MemoryPort {
    /// Receive queue 0, and the way out.
    sock: UnixStream,
    /// Receive queues 1 and up.
    more_queues: Vec<UnixStream>,
    mtu: u32,
    mac: Option<vswitch_core::MacAddr>,
    drained_at: Arc<[AtomicU64]>,
}

/// The host's end of an in-memory cable. Non-blocking: `recv` answers `WouldBlock` when empty.
#[derive(Debug)]
pub struct MemoryPeer {
    sock: UnixStream,
    more_queues: Vec<UnixStream>,
    drained_at: Arc<[AtomicU64]>,
}

impl MemoryPort {
    /// A new cable with one receive queue, whose switch end reports `mtu`.
    pub fn pair(mtu: u32) -> io::Result<(MemoryPort, MemoryPeer)> {
        MemoryPort::with_queues(mtu, 1)
    }

    /// A new cable with `queues` receive queues (at least one).
    pub fn with_queues(mtu: u32, queues: usize) -> io::Result<(MemoryPort, MemoryPeer)> {
        // A SOCK_SEQPACKET socket's read and write move whole records, which is what UnixStream's
        // read/write become on it.
        let mut ends = Vec::new();
        for _ in 0..queues.max(1) {
            let (a, b) = sys::seqpacket_pair()?;
            ends.push((UnixStream::from(a), UnixStream::from(b)));
        }
        let (mut ours, mut theirs): (Vec<_>, Vec<_>) = ends.into_iter().unzip();
        let drained_at: Arc<[AtomicU64]> = (0..ours.len()).map(|_| AtomicU64::new(0)).collect();
        Ok((
            MemoryPort {
                sock: ours.remove(0),
                more_queues: ours,
                mtu,
                mac: None,
                drained_at: drained_at.clone(),
            },
            MemoryPeer {
                sock: theirs.remove(0),
                more_queues: theirs,
                drained_at,
            },
        ))
    }

    fn queue(&self, queue: usize) -> &UnixStream {
        match queue {
            0 => &self.sock,
            q => &self.more_queues[q - 1],
        }
    }
}

impl MemoryPort {
    /// Gives the port a MAC address of its own (as a TAP has), e.g. for MACVLAN's default binding.
    pub fn with_mac(mut self, mac: vswitch_core::MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }
}

/// A zero-length read on a seqpacket socket means the other end hung up.
fn read_record(mut sock: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    match sock.read(buf)? {
        0 => Err(io::Error::from(io::ErrorKind::ConnectionAborted)),
        n => Ok(n),
    }
}

impl PortDevice for MemoryPort {
    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities {
            rx_queues: 1 + self.more_queues.len(),
            mac: self.mac,
            ..DeviceCapabilities::new("memory")
        }
    }

    fn recv(&self, queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        read_record(self.queue(queue), buf)
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        (&self.sock).write(frame).map(drop)
    }

    fn fd(&self, queue: usize) -> BorrowedFd<'_> {
        self.queue(queue).as_fd()
    }

    fn status(&self) -> DeviceStatus {
        DeviceStatus::with_mtu(self.mtu)
    }

    fn cpu_steering(&self) -> Option<&dyn CpuSteering> {
        Some(self)
    }
}

/// Frames go to queues as the test sends them; the switch's drain marks are kept for tests
/// to read.
impl CpuSteering for MemoryPort {
    fn steer_by_cpu(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn queue_drained(&self, queue: usize, at_ns: u64) {
        self.drained_at[queue].fetch_max(at_ns, Ordering::Release);
    }
}

impl MemoryPeer {
    /// Sends a frame into the switch (on receive queue 0).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        (&self.sock).write(frame).map(drop)
    }

    /// Sends a frame into the switch on receive queue `queue`.
    pub fn send_queue(&self, queue: usize, frame: &[u8]) -> io::Result<()> {
        let sock = match queue {
            0 => &self.sock,
            q => &self.more_queues[q - 1],
        };
        let mut sock = sock;
        sock.write(frame).map(drop)
    }

    /// When ([`crate::steering_clock_ns`]) the switch last began a read that found `queue`
    /// empty, after forwarding everything it read before: 0 if never.
    pub fn drained_at(&self, queue: usize) -> u64 {
        self.drained_at[queue].load(Ordering::Acquire)
    }

    /// Receives a frame from the switch, `WouldBlock` if none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_record(&self.sock, buf)
    }

    /// The fd, for callers that want to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}
