//! ICMP echo (ping) of our own, so the demo, `lab check` and the tests need no iputils.
//!
//! A [`Pinger`] is a raw ICMP socket connected to one target. A socket belongs to the namespace
//! of the thread that opened it, so [`Pinger::open_in`] opens it on a thread inside a namespace
//! and the caller then uses it from anywhere. Probes go one at a time: each is sent, waited for
//! up to its timeout, and matched by identifier, sequence number and payload, so a late reply is
//! never counted for a later probe and other pingers in the namespace never interfere.
//!
//! IPv4 echo requests carry DF (the kernel's default path-MTU discovery for raw sockets), so a
//! probe larger than a link on the way is lost rather than fragmented, as with `ping -M do`.

use std::io;
use std::io::Read;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{Netns, NetnsError};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// Type, code, checksum, identifier, sequence number.
const ECHO_HEADER_LEN: usize = 8;
/// The largest IP packet: no reply can be longer.
const MAX_PACKET: usize = 65_535;

/// How a run of probes is paced and sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoOptions {
    /// How many echo requests to send.
    pub count: u32,
    /// From the start of one probe to the start of the next (when its reply came back sooner).
    pub interval: Duration,
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// Payload bytes after the 8-byte ICMP header (`ping -s`).
    pub payload: usize,
}

impl Default for EchoOptions {
    /// One probe of 56 bytes with a 1 s timeout, as `ping -c 1 -W 1`.
    fn default() -> Self {
        EchoOptions {
            count: 1,
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            payload: 56,
        }
    }
}

/// What a run of probes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReport {
    /// The address probed.
    pub target: IpAddr,
    /// Echo requests sent.
    pub sent: u32,
    /// Matching echo replies received within their probe's timeout.
    pub received: u32,
    /// Round-trip time of each reply, in the order received.
    pub rtts: Vec<Duration>,
    /// Replies to a probe already answered: a frame delivered twice on the way.
    pub duplicates: u32,
}

impl EchoReport {
    /// At least one probe was sent and every one was answered, once.
    pub fn all_replied(&self) -> bool {
        self.sent > 0 && self.received == self.sent && self.duplicates == 0
    }

    /// At least one probe was sent and none was answered.
    pub fn none_replied(&self) -> bool {
        self.sent > 0 && self.received == 0
    }

    /// Probes without a reply.
    pub fn lost(&self) -> u32 {
        self.sent - self.received
    }

    /// The median round-trip time, if any reply came back.
    pub fn median_rtt(&self) -> Option<Duration> {
        let mut sorted = self.rtts.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied()
    }
}

impl std::fmt::Display for EchoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} sent, {} received",
            self.target, self.sent, self.received
        )?;
        if self.duplicates > 0 {
            write!(f, ", {} duplicates", self.duplicates)?;
        }
        if let (Some(min), Some(max)) = (self.rtts.iter().min(), self.rtts.iter().max()) {
            let us = |d: &Duration| d.as_secs_f64() * 1e6;
            let avg = self.rtts.iter().map(us).sum::<f64>() / self.rtts.len() as f64;
            write!(
                f,
                ", rtt min/avg/max {:.0}/{avg:.0}/{:.0} µs",
                us(min),
                us(max)
            )?;
        }
        Ok(())
    }
}

/// Identifiers distinct per pinger in this process, starting from the pid so that two processes
/// pinging in one namespace rarely share one (and when they do, the payload still tells).
fn next_identifier() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    (std::process::id() as u16)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919))
}

/// A raw ICMP socket connected to one target (IPv4 or IPv6).
#[derive(Debug)]
pub struct Pinger {
    socket: Socket,
    target: IpAddr,
    identifier: u16,
    sequence: u16,
    buf: Vec<u8>,
}

impl Pinger {
    /// Opens a pinger in the namespace of the calling thread. Needs CAP_NET_RAW.
    pub fn open(target: IpAddr) -> io::Result<Pinger> {
        let (domain, protocol) = match target {
            IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
            IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
        };
        let socket = Socket::new(domain, Type::RAW, Some(protocol)).map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                io::Error::new(e.kind(), "a raw ICMP socket needs CAP_NET_RAW: run as root")
            } else {
                e
            }
        })?;
        match target {
            // Our own IPv4 header carries DF; the kernel then refuses rather than fragments a
            // request larger than the first link's MTU, as `ping -M do`.
            IpAddr::V4(_) => socket.set_header_included_v4(true)?,
            IpAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6DontFrag, &true)?,
        }
        // Connected, the kernel hands this socket only what comes from the target.
        socket.connect(&SockAddr::from(SocketAddr::new(target, 0)))?;
        Ok(Pinger {
            socket,
            target,
            identifier: next_identifier(),
            sequence: 0,
            buf: vec![0; MAX_PACKET],
        })
    }

    /// Opens a pinger inside `ns` (on a thread that entered it); use it from any thread.
    pub fn open_in(ns: &Netns, target: IpAddr) -> Result<io::Result<Pinger>, NetnsError> {
        ns.run(|| Pinger::open(target))
    }

    /// The address this pinger probes.
    pub fn target(&self) -> IpAddr {
        self.target
    }

    /// Sends `options.count` probes, `options.interval` apart, and reports what came back: a
    /// reply counts when it arrives within `options.timeout` of its own request. Replies are read
    /// between sends, so a lost probe doesn't hold up the next (as with `ping`).
    pub fn run(&mut self, options: &EchoOptions) -> io::Result<EchoReport> {
        if options.count > u32::from(u16::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {} probes in one run", u16::MAX),
            ));
        }
        let mut run = Run {
            first: self.sequence.wrapping_add(1),
            sent_at: Vec::with_capacity(options.count as usize),
            answered: vec![false; options.count as usize],
            rtts: Vec::new(),
            duplicates: 0,
        };
        let start = Instant::now();
        for i in 0..options.count {
            self.receive_until(start + options.interval * i, &mut run, options)?;
            self.sequence = run.first.wrapping_add(i as u16);
            let request =
                echo_request(self.target, self.identifier, self.sequence, options.payload);
            let request = on_the_wire(self.target, request);
            run.sent_at.push(Instant::now());
            match self.socket.send(&request) {
                Ok(_) => {}
                // Too big for the first link (with DF), or no route: lost, as ping reports it.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMSGSIZE | libc::ENETUNREACH | libc::EHOSTUNREACH)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        // The last reply may come until the last probe's deadline; stop early once all have.
        if let Some(&last) = run.sent_at.last() {
            self.receive_until(last + options.timeout, &mut run, options)?;
        }
        Ok(EchoReport {
            target: self.target,
            sent: options.count,
            received: run.rtts.len() as u32,
            rtts: run.rtts,
            duplicates: run.duplicates,
        })
    }

    /// Reads replies until `until`, or until every probe sent so far is answered, marking each
    /// that matches a probe of `run` and came within that probe's timeout.
    fn receive_until(
        &mut self,
        until: Instant,
        run: &mut Run,
        options: &EchoOptions,
    ) -> io::Result<()> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if run.answered[..run.sent_at.len()].iter().all(|&a| a) {
                if run.sent_at.len() < run.answered.len() {
                    // Nothing outstanding: wait for the next send.
                    std::thread::sleep(left);
                }
                return Ok(());
            }
            // A zero timeout would mean "forever": wait at least a microsecond.
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_micros(1))))?;
            let n = match (&self.socket).read(&mut self.buf) {
                Ok(n) => n,
                // Timed out, interrupted, or an ICMP error about one of our requests
                // (e.g. unreachable): look at the clock and keep waiting.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::HostUnreachable
                            | io::ErrorKind::NetworkUnreachable
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let arrived = Instant::now();
            let Some(reply) = parse_echo_reply(&self.buf[..n], self.target) else {
                continue;
            };
            let index = usize::from(reply.sequence.wrapping_sub(run.first));
            if reply.identifier != self.identifier || index >= run.sent_at.len() {
                continue;
            }
            if run.answered[index] {
                run.duplicates += 1;
                continue;
            }
            let expected = echo_request(
                self.target,
                self.identifier,
                reply.sequence,
                options.payload,
            );
            let rtt = arrived - run.sent_at[index];
            if reply.payload == &expected[ECHO_HEADER_LEN..] && rtt <= options.timeout {
                run.answered[index] = true;
                run.rtts.push(rtt);
            }
        }
    }
}

/// The probes of one [`Pinger::run`] so far.
struct Run {
    /// The sequence number of the run's first probe.
    first: u16,
    /// When each probe was sent.
    sent_at: Vec<Instant>,
    /// Which probes were answered in time (one entry per probe to send).
    answered: Vec<bool>,
    /// Round-trip times of the answered ones, in arrival order.
    rtts: Vec<Duration>,
    /// Second replies to answered probes.
    duplicates: u32,
}

/// An echo request: header, then `payload` bytes of a pattern keyed by the sequence number. The
/// ICMPv4 checksum is ours to fill; the kernel fills ICMPv6's (RFC 3542).
pub fn echo_request(target: IpAddr, identifier: u16, sequence: u16, payload: usize) -> Vec<u8> {
    let kind = match target {
        IpAddr::V4(_) => ICMP_ECHO_REQUEST,
        IpAddr::V6(_) => ICMPV6_ECHO_REQUEST,
    };
    let mut packet = vec![kind, 0, 0, 0];
    packet.extend_from_slice(&identifier.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend((0..payload).map(|i| (i as u8) ^ (sequence as u8)));
    if target.is_ipv4() {
        let sum = internet_checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// What goes to the socket: for IPv4 (`IP_HDRINCL`) an IP header with DF before the message,
/// whose length, identification, checksum and source address the kernel fills in.
fn on_the_wire(target: IpAddr, message: Vec<u8>) -> Vec<u8> {
    match target {
        IpAddr::V4(destination) => {
            let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0, 0, 0, 0, 0];
            packet.extend_from_slice(&destination.octets());
            packet.extend_from_slice(&message);
            packet
        }
        IpAddr::V6(_) => message,
    }
}

/// An echo reply's fields, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReply<'a> {
    /// The identifier the request carried.
    pub identifier: u16,
    /// The request's sequence number.
    pub sequence: u16,
    /// The payload echoed back.
    pub payload: &'a [u8],
}

/// Parses `received` as an echo reply: with its IPv4 header, as raw IPv4 sockets deliver, or
/// without one for IPv6. Anything else (requests, errors, short packets) is `None`.
pub fn parse_echo_reply(received: &[u8], target: IpAddr) -> Option<EchoReply<'_>> {
    let (icmp, reply_type) = match target {
        IpAddr::V4(_) => {
            let first = *received.first()?;
            let header_len = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || header_len < 20 {
                return None;
            }
            (received.get(header_len..)?, ICMP_ECHO_REPLY)
        }
        IpAddr::V6(_) => (received, ICMPV6_ECHO_REPLY),
    };
    if icmp.len() < ECHO_HEADER_LEN || icmp[0] != reply_type || icmp[1] != 0 {
        return None;
    }
    Some(EchoReply {
        identifier: u16::from_be_bytes([icmp[4], icmp[5]]),
        sequence: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: &icmp[ECHO_HEADER_LEN..],
    })
}

/// The ones' complement sum of RFC 1071.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    fn ipv4_wrapped(icmp: &[u8]) -> Vec<u8> {
        let mut packet = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        packet.extend_from_slice(icmp);
        packet
    }

    fn as_reply(request: &[u8], reply_type: u8) -> Vec<u8> {
        let mut reply = request.to_vec();
        reply[0] = reply_type;
        reply
    }

    #[test]
    fn the_request_checksums_to_zero() {
        let request = echo_request(V4, 0x1234, 7, 57);
        assert_eq!(request.len(), 8 + 57);
        assert_eq!(request[0], ICMP_ECHO_REQUEST);
        assert_eq!(
            internet_checksum(&request),
            0,
            "a valid packet sums to zero"
        );
    }

    #[test]
    fn replies_parse_and_nothing_else_does() {
        let request = echo_request(V4, 0x1234, 7, 16);
        let reply = ipv4_wrapped(&as_reply(&request, ICMP_ECHO_REPLY));
        assert_eq!(
            parse_echo_reply(&reply, V4),
            Some(EchoReply {
                identifier: 0x1234,
                sequence: 7,
                payload: &request[8..],
            })
        );
        // A request seen on the socket, an error, a short packet, a header longer than it.
        assert_eq!(parse_echo_reply(&ipv4_wrapped(&request), V4), None);
        assert_eq!(
            parse_echo_reply(&ipv4_wrapped(&as_reply(&request, 3)), V4),
            None
        );
        assert_eq!(parse_echo_reply(&reply[..27], V4), None);
        assert_eq!(parse_echo_reply(&[], V4), None);
        assert_eq!(parse_echo_reply(&[0x4f], V4), None);
        assert_eq!(parse_echo_reply(&[0x60; 40], V4), None, "not IPv4");
    }

    #[test]
    fn ipv6_replies_come_without_an_ip_header() {
        let request = echo_request(V6, 9, 1, 8);
        assert_eq!(request[0], ICMPV6_ECHO_REQUEST);
        let reply = as_reply(&request, ICMPV6_ECHO_REPLY);
        let reply = parse_echo_reply(&reply, V6);
        assert_eq!(reply.map(|r| (r.identifier, r.sequence)), Some((9, 1)));
        assert_eq!(
            parse_echo_reply(&as_reply(&request, ICMP_ECHO_REPLY), V6),
            None
        );
    }

    #[test]
    fn payloads_differ_by_sequence() {
        assert_ne!(
            echo_request(V4, 1, 1, 8)[8..],
            echo_request(V4, 1, 2, 8)[8..]
        );
    }

    #[test]
    fn a_report_counts_exactly() {
        let report = EchoReport {
            target: V4,
            sent: 3,
            received: 2,
            rtts: vec![Duration::from_micros(30), Duration::from_micros(10)],
            duplicates: 0,
        };
        assert!(!report.all_replied() && !report.none_replied());
        assert_eq!(report.lost(), 1);
        assert_eq!(report.median_rtt(), Some(Duration::from_micros(30)));
        let nothing = EchoReport {
            target: V4,
            sent: 0,
            received: 0,
            rtts: vec![],
            duplicates: 0,
        };
        assert!(
            !nothing.all_replied() && !nothing.none_replied(),
            "no probe proves nothing"
        );
    }
}
