//! In-memory ports: a Unix `SOCK_SEQPACKET` pair, one end for the switch, one for a test host.
//!
//! The switch polls and reads it exactly like a TAP, so tests without root exercise the real
//! workers; the far end ([`MemoryPeer`]) is what a smoltcp host or a test writes frames into.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use crate::port::PortDevice;
use crate::sys;

/// The switch's end of an in-memory cable.
#[derive(Debug)]
pub struct MemoryPort {
    sock: UnixStream,
    mtu: u32,
    mac: Option<vswitch_core::MacAddr>,
}

/// The host's end of an in-memory cable. Non-blocking: `recv` answers `WouldBlock` when empty.
#[derive(Debug)]
pub struct MemoryPeer {
    sock: UnixStream,
}

impl MemoryPort {
    /// A new cable whose switch end reports `mtu`.
    pub fn pair(mtu: u32) -> io::Result<(MemoryPort, MemoryPeer)> {
        let (a, b) = sys::seqpacket_pair()?;
        // A SOCK_SEQPACKET socket's read and write move whole records, which is what UnixStream's
        // read/write become on it.
        Ok((
            MemoryPort {
                sock: UnixStream::from(a),
                mtu,
                mac: None,
            },
            MemoryPeer {
                sock: UnixStream::from(b),
            },
        ))
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
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_record(&self.sock, buf)
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        (&self.sock).write(frame).map(drop)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    fn mtu(&self) -> io::Result<u32> {
        Ok(self.mtu)
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn mac(&self) -> io::Result<vswitch_core::MacAddr> {
        self.mac.ok_or_else(|| io::ErrorKind::Unsupported.into())
    }
}

impl MemoryPeer {
    /// Sends a frame into the switch.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        (&self.sock).write(frame).map(drop)
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
