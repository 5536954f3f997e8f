//! Counters that cost one relaxed atomic add and can be read from any thread at any time.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame was dropped. Every drop is counted under exactly one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The destination was learned on the ingress port itself: nothing to forward.
    Filtered,
    /// Shorter than an Ethernet header.
    Runt,
    /// Larger than the egress port's MTU allows.
    Oversize,
    /// Source MAC is multicast, broadcast or zero.
    BadSource,
    /// An IEEE 802.1D link-local frame not enabled by `--forward-link-local`.
    LinkLocal,
    /// MACVLAN: a sub-port sent a frame whose source MAC is not bound to it.
    Spoofed,
    /// MACVLAN: unicast from the uplink to a MAC no sub-port is bound to (never flooded).
    Unbound,
    /// MACVLAN private (and bridge) mode: a sibling's frame came back through the uplink.
    Reflected,
    /// A stage of the port's pipeline (filter, rate limit, loss) dropped it.
    Pipeline,
    /// The egress device would have blocked (its queue is full).
    EgressQueueFull,
    /// A segmentation-offload (GSO) frame that software segmentation could not cut for a port
    /// without offloads: legacy UDP fragmentation offload, or headers that don't add up.
    GsoUnsupported,
    /// The egress device is down (a TAP moved into a namespace and not yet set up).
    LinkDown,
    /// The device returned an error other than a full queue or a down link.
    IoError,
    /// A tagged frame on an access port, or a VLAN the port doesn't carry.
    Vlan,
}

impl DropReason {
    /// Every reason, in display order.
    pub const ALL: [DropReason; 14] = [
        DropReason::Filtered,
        DropReason::Runt,
        DropReason::Oversize,
        DropReason::BadSource,
        DropReason::LinkLocal,
        DropReason::Spoofed,
        DropReason::Unbound,
        DropReason::Reflected,
        DropReason::Pipeline,
        DropReason::EgressQueueFull,
        DropReason::GsoUnsupported,
        DropReason::LinkDown,
        DropReason::IoError,
        DropReason::Vlan,
    ];

    /// A short stable name for tables, logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Filtered => "filtered",
            DropReason::Runt => "runt",
            DropReason::Oversize => "oversize",
            DropReason::BadSource => "bad_source",
            DropReason::LinkLocal => "link_local",
            DropReason::Spoofed => "spoofed",
            DropReason::Unbound => "unbound",
            DropReason::Reflected => "reflected",
            DropReason::Pipeline => "pipeline",
            DropReason::EgressQueueFull => "queue_full",
            DropReason::GsoUnsupported => "gso_unsupp",
            DropReason::LinkDown => "link_down",
            DropReason::IoError => "io_error",
            DropReason::Vlan => "vlan",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Traffic counters of one port. Aligned to a cache line so that ports served by different
/// workers never share one. Drops caused on ingress (runt, bad source, link-local, filtered) count
/// on the ingress port; drops on the way out (oversize, queue full, GSO unsupported,
/// link down, I/O error) on the
/// egress port.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct PortCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    kernel_drops: AtomicU64,
    fast_rx_packets: AtomicU64,
    fast_tx_packets: AtomicU64,
}

impl PortCounters {
    /// Counts what an in-kernel fast path moved for the port: into the totals, and apart.
    pub fn add_fast_path(&self, rx_packets: u64, rx_bytes: u64, tx_packets: u64, tx_bytes: u64) {
        self.rx_packets.fetch_add(rx_packets, Relaxed);
        self.rx_bytes.fetch_add(rx_bytes, Relaxed);
        self.tx_packets.fetch_add(tx_packets, Relaxed);
        self.tx_bytes.fetch_add(tx_bytes, Relaxed);
        self.fast_rx_packets.fetch_add(rx_packets, Relaxed);
        self.fast_tx_packets.fetch_add(tx_packets, Relaxed);
    }

    /// Records how many frames the kernel has dropped on their way into the switch through
    /// this port, as the device last reported it.
    pub fn set_kernel_drops(&self, frames: u64) {
        self.kernel_drops.store(frames, Relaxed);
    }

    /// Counts a frame received from the port.
    pub fn count_rx(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts a frame sent out of the port.
    pub fn count_tx(&self, bytes: usize) {
        self.tx_packets.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts a dropped frame.
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Relaxed);
    }

    /// A consistent-enough copy for display (each field is read once).
    pub fn snapshot(&self) -> PortStats {
        PortStats {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            drops: std::array::from_fn(|i| self.drops[i].load(Relaxed)),
            kernel_drops: self.kernel_drops.load(Relaxed),
            fast_rx_packets: self.fast_rx_packets.load(Relaxed),
            fast_tx_packets: self.fast_tx_packets.load(Relaxed),
        }
    }
}

/// A plain copy of [`PortCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes received from the port.
    pub rx_bytes: u64,
    /// Frames sent out of the port.
    pub tx_packets: u64,
    /// Bytes sent out of the port.
    pub tx_bytes: u64,
    drops: [u64; DropReason::ALL.len()],
    /// Frames the kernel dropped before the switch could read them: a TAP's ring or a packet
    /// socket's buffer was full because the switch fell behind its senders (neither makes the
    /// sender wait). Not among [`PortStats::total_drops`], which are the switch's own.
    pub kernel_drops: u64,
    /// Of `rx_packets`, those the in-kernel fast path forwarded.
    pub fast_rx_packets: u64,
    /// Of `tx_packets`, those the in-kernel fast path forwarded.
    pub fast_tx_packets: u64,
}

impl PortStats {
    /// Drops counted under `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Drops under all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Events of the MAC table over the switch's life.
#[derive(Debug, Default)]
pub struct TableCounters {
    /// New MACs entered.
    pub learned: AtomicU64,
    /// MACs that appeared on another port and moved there.
    pub moved: AtomicU64,
    /// Entries removed because they were silent for the ageing time.
    pub aged: AtomicU64,
    /// Entries pushed out to make room (capacity or per-port limit).
    pub evicted: AtomicU64,
}

/// A plain copy of [`TableCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// New MACs entered.
    pub learned: u64,
    /// MACs moved to another port.
    pub moved: u64,
    /// Entries aged out.
    pub aged: u64,
    /// Entries evicted.
    pub evicted: u64,
}

impl TableCounters {
    /// A copy for display.
    pub fn snapshot(&self) -> TableStats {
        TableStats {
            learned: self.learned.load(Relaxed),
            moved: self.moved.load(Relaxed),
            aged: self.aged.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let c = PortCounters::default();
        c.count_rx(100);
        c.count_tx(60);
        c.count_tx(60);
        c.count_drop(DropReason::Runt);
        c.count_drop(DropReason::Runt);
        c.count_drop(DropReason::Oversize);
        let s = c.snapshot();
        assert_eq!(
            (s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes),
            (1, 100, 2, 120)
        );
        assert_eq!(s.drops(DropReason::Runt), 2);
        assert_eq!(s.drops(DropReason::Oversize), 1);
        assert_eq!(s.drops(DropReason::Filtered), 0);
        assert_eq!(s.total_drops(), 3);
        assert_eq!(std::mem::align_of::<PortCounters>(), 64);
    }
}
