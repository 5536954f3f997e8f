//! The MAC table (forwarding database): which port each (VLAN, MAC) was last seen on.
//!
//! Reads are `&self` and lock-free inside: the hot path looks up destinations and refreshes the
//! last-seen time of known sources with a relaxed atomic store, so many workers can share the
//! table behind a read lock. Changes (new MAC, a move, eviction, ageing) need `&mut self` and are
//! rare in steady state.
//!
//! Capacity is enforced with Open vSwitch's fairness rule: when the table is full, the least
//! recently used entry of the port holding the most entries goes, so a port flooding random source
//! MACs evicts its own entries and not other ports' hosts. Recency is tracked per port with a
//! second-chance queue (an approximation of LRU that costs O(1) amortised per change).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hashbrown::HashMap;

use crate::time::Timestamp;
use crate::wire::{MacAddr, PortId, VlanId};

/// A known source's last-seen time is only rewritten when it is at least this much older than
/// now, so that steady traffic does not write to shared cache lines on every frame.
const REFRESH_GRANULARITY_MS: u64 = 250;

/// Limits and timing of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// Most entries the table holds (`--max-macs`).
    pub capacity: usize,
    /// Most entries one port may hold (`--max-macs-per-port`); `None` for no limit.
    pub per_port_limit: Option<usize>,
    /// An entry not refreshed for this long is forgotten (`--ageing-time`).
    pub ageing_time: Duration,
}

impl Default for TableConfig {
    /// 65536 entries, no per-port limit, 300 s ageing: the kernel bridge's ageing time.
    fn default() -> Self {
        TableConfig {
            capacity: 65536,
            per_port_limit: None,
            ageing_time: Duration::from_secs(300),
        }
    }
}

/// What the table is keyed by. Untagged traffic uses [`VlanId::UNTAGGED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbKey {
    /// The VLAN the MAC was seen in.
    pub vlan: VlanId,
    /// The station's MAC address.
    pub mac: MacAddr,
}

impl FdbKey {
    /// An untagged key for `mac`.
    pub const fn untagged(mac: MacAddr) -> Self {
        FdbKey {
            vlan: VlanId::UNTAGGED,
            mac,
        }
    }
}

/// A change to the table, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableEvent {
    /// A new key was entered.
    Learned {
        /// The key.
        key: FdbKey,
        /// Where it was seen.
        port: PortId,
    },
    /// A known key appeared on another port and moved there.
    Moved {
        /// The key.
        key: FdbKey,
        /// Where it was.
        from: PortId,
        /// Where it is now.
        to: PortId,
    },
    /// A key was silent for the ageing time and was removed.
    Aged {
        /// The key.
        key: FdbKey,
        /// Where it was.
        port: PortId,
    },
    /// A key was removed to make room.
    Evicted {
        /// The key.
        key: FdbKey,
        /// Where it was.
        port: PortId,
    },
}

#[derive(Debug)]
struct Entry {
    port: PortId,
    last_seen: AtomicU64,
    /// Identifies the one live item for this entry in its port's recency queue.
    generation: u64,
}

/// One item of a port's recency queue: a key, the entry generation it belongs to, and the
/// last-seen time when it was queued.
#[derive(Debug, Clone, Copy)]
struct QueueItem {
    key: FdbKey,
    generation: u64,
    stamp: u64,
}

#[derive(Debug, Default)]
struct PortEntries {
    live: usize,
    recency: VecDeque<QueueItem>,
}

/// One row of the table, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// The key.
    pub key: FdbKey,
    /// Where it is.
    pub port: PortId,
    /// When it was last seen; `None` for a static entry.
    pub last_seen: Option<Timestamp>,
}

/// The forwarding database. See the module documentation.
#[derive(Debug)]
pub struct MacTable {
    config: TableConfig,
    entries: HashMap<FdbKey, Entry>,
    /// Entries set by the operator: never aged, never moved by learning, not counted against
    /// the capacity.
    statics: HashMap<FdbKey, PortId>,
    ports: Vec<PortEntries>,
    next_generation: u64,
}

impl MacTable {
    /// An empty table.
    pub fn new(config: TableConfig) -> Self {
        MacTable {
            config,
            entries: HashMap::new(),
            statics: HashMap::new(),
            ports: Vec::new(),
            next_generation: 0,
        }
    }

    /// The table's limits.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Number of entries, including expired ones not yet swept by [`MacTable::age`].
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of entries on `port`.
    pub fn port_len(&self, port: PortId) -> usize {
        self.ports.get(port.index()).map_or(0, |p| p.live)
    }

    fn is_expired(&self, last_seen: u64, now: Timestamp) -> bool {
        let ageing = u64::try_from(self.config.ageing_time.as_millis()).unwrap_or(u64::MAX);
        now.millis().saturating_sub(last_seen) >= ageing
    }

    /// The port `key` is on: its static entry, or where it was last seen unless that expired.
    pub fn lookup(&self, key: FdbKey, now: Timestamp) -> Option<PortId> {
        if !self.statics.is_empty()
            && let Some(port) = self.statics.get(&key)
        {
            return Some(*port);
        }
        let entry = self.entries.get(&key)?;
        (!self.is_expired(entry.last_seen.load(Relaxed), now)).then_some(entry.port)
    }

    /// Records that `key` sent a frame on `port`, if the table already knows it there: refreshes
    /// its last-seen time and answers `true`. Answers `false` when [`MacTable::learn`] is needed
    /// (new key, a move, or an expired entry).
    pub fn refresh(&self, key: FdbKey, port: PortId, now: Timestamp) -> bool {
        if !self.statics.is_empty() && self.statics.contains_key(&key) {
            return true; // static entries are never learned over
        }
        let Some(entry) = self.entries.get(&key) else {
            return false;
        };
        let last = entry.last_seen.load(Relaxed);
        if entry.port != port || self.is_expired(last, now) {
            return false;
        }
        if now.millis().saturating_sub(last) >= REFRESH_GRANULARITY_MS {
            entry.last_seen.store(now.millis(), Relaxed);
        }
        true
    }

    /// Enters or moves `key` to `port`, making room if needed. Changes are appended to `events`.
    pub fn learn(
        &mut self,
        key: FdbKey,
        port: PortId,
        now: Timestamp,
        events: &mut Vec<TableEvent>,
    ) {
        if self.statics.contains_key(&key) {
            return;
        }
        if self.ports.len() <= port.index() {
            self.ports
                .resize_with(port.index() + 1, PortEntries::default);
        }
        let from = match self.entries.get(&key) {
            Some(entry) if entry.port == port => {
                entry.last_seen.store(now.millis(), Relaxed);
                return;
            }
            Some(entry) => Some(entry.port),
            None => None,
        };
        if let Some(from) = from {
            self.ports[from.index()].live -= 1;
        }
        if self
            .config
            .per_port_limit
            .is_some_and(|limit| self.ports[port.index()].live >= limit)
        {
            self.evict_from(port, events);
        }
        if from.is_none() && self.entries.len() >= self.config.capacity {
            self.evict_fair(events);
        }
        if self.config.capacity == 0 || self.config.per_port_limit == Some(0) {
            if let Some(from) = from {
                // The key cannot be kept anywhere: forget it rather than leave it on the old port.
                self.entries.remove(&key);
                events.push(TableEvent::Evicted { key, port: from });
            }
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let entry = Entry {
            port,
            last_seen: AtomicU64::new(now.millis()),
            generation,
        };
        self.entries.insert(key, entry);
        let queue = &mut self.ports[port.index()];
        queue.live += 1;
        queue.recency.push_back(QueueItem {
            key,
            generation,
            stamp: now.millis(),
        });
        if queue.recency.len() > 2 * queue.live + 64 {
            self.compact(port);
        }
        events.push(match from {
            Some(from) => TableEvent::Moved {
                key,
                from,
                to: port,
            },
            None => TableEvent::Learned { key, port },
        });
    }

    /// Evicts from the port with the most entries (the lowest-numbered one on a tie).
    fn evict_fair(&mut self, events: &mut Vec<TableEvent>) {
        let fullest = self
            .ports
            .iter()
            .enumerate()
            .max_by_key(|(i, p)| (p.live, std::cmp::Reverse(*i)))
            .map(|(i, _)| PortId(i as u16));
        if let Some(port) = fullest {
            self.evict_from(port, events);
        }
    }

    /// Evicts the (approximately) least recently used entry of `port`.
    fn evict_from(&mut self, port: PortId, events: &mut Vec<TableEvent>) {
        while let Some(item) = self.ports[port.index()].recency.pop_front() {
            let Some(entry) = self.entries.get(&item.key) else {
                continue;
            };
            if entry.generation != item.generation || entry.port != port {
                continue;
            }
            let last = entry.last_seen.load(Relaxed);
            if last > item.stamp {
                // Used since it was queued: a second chance at the back.
                self.ports[port.index()].recency.push_back(QueueItem {
                    stamp: last,
                    ..item
                });
                continue;
            }
            self.entries.remove(&item.key);
            self.ports[port.index()].live -= 1;
            events.push(TableEvent::Evicted {
                key: item.key,
                port,
            });
            return;
        }
    }

    /// Drops queue items that no longer stand for a live entry.
    fn compact(&mut self, port: PortId) {
        let entries = &self.entries;
        self.ports[port.index()].recency.retain(|item| {
            entries
                .get(&item.key)
                .is_some_and(|e| e.generation == item.generation && e.port == port)
        });
    }

    /// Removes every entry silent for the ageing time. Call it periodically (the datapath does,
    /// every second); lookups already ignore expired entries in between.
    pub fn age(&mut self, now: Timestamp, events: &mut Vec<TableEvent>) {
        let ageing = u64::try_from(self.config.ageing_time.as_millis()).unwrap_or(u64::MAX);
        let ports = &mut self.ports;
        self.entries.retain(|key, entry| {
            let expired = now.millis().saturating_sub(entry.last_seen.load(Relaxed)) >= ageing;
            if expired {
                ports[entry.port.index()].live -= 1;
                events.push(TableEvent::Aged {
                    key: *key,
                    port: entry.port,
                });
            }
            !expired
        });
        for i in 0..self.ports.len() {
            self.compact(PortId(i as u16));
        }
    }

    /// Forgets every entry on `port`, static ones included (the port was removed). Returns how
    /// many.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        let before = self.entries.len() + self.statics.len();
        self.entries.retain(|_, entry| entry.port != port);
        self.statics.retain(|_, p| *p != port);
        if let Some(p) = self.ports.get_mut(port.index()) {
            *p = PortEntries::default();
        }
        before - self.entries.len() - self.statics.len()
    }

    /// Forgets the learned entries, of one port or of all (like `bridge fdb flush`); static
    /// entries stay. Returns how many went.
    pub fn flush_dynamic(&mut self, port: Option<PortId>) -> usize {
        let before = self.entries.len();
        match port {
            Some(port) => {
                self.entries.retain(|_, entry| entry.port != port);
                if let Some(p) = self.ports.get_mut(port.index()) {
                    *p = PortEntries::default();
                }
            }
            None => {
                self.entries.clear();
                self.ports.clear();
            }
        }
        before - self.entries.len()
    }

    /// Pins `key` to `port`: replaces any learned entry, is never aged or moved by learning.
    pub fn add_static(&mut self, key: FdbKey, port: PortId) {
        if let Some(entry) = self.entries.remove(&key) {
            self.ports[entry.port.index()].live -= 1;
        }
        self.statics.insert(key, port);
    }

    /// Removes the entry for `key`, static or learned. False if there was none.
    pub fn remove(&mut self, key: FdbKey) -> bool {
        if self.statics.remove(&key).is_some() {
            return true;
        }
        match self.entries.remove(&key) {
            Some(entry) => {
                self.ports[entry.port.index()].live -= 1;
                true
            }
            None => false,
        }
    }

    /// Every entry, static ones first, in no particular order otherwise.
    pub fn entries(&self) -> impl Iterator<Item = FdbEntry> + '_ {
        let statics = self.statics.iter().map(|(key, port)| FdbEntry {
            key: *key,
            port: *port,
            last_seen: None,
        });
        statics.chain(self.entries.iter().map(|(key, e)| FdbEntry {
            key: *key,
            port: e.port,
            last_seen: Some(Timestamp::from_millis(e.last_seen.load(Relaxed))),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u32) -> FdbKey {
        let b = n.to_be_bytes();
        FdbKey::untagged(MacAddr([0x02, 0, b[0], b[1], b[2], b[3]]))
    }

    fn table(capacity: usize, per_port: Option<usize>, ageing_secs: u64) -> MacTable {
        MacTable::new(TableConfig {
            capacity,
            per_port_limit: per_port,
            ageing_time: Duration::from_secs(ageing_secs),
        })
    }

    #[test]
    fn learns_moves_and_refreshes() {
        let mut t = table(16, None, 300);
        let mut ev = Vec::new();
        let now = Timestamp::from_secs(1);
        assert!(!t.refresh(key(1), PortId(0), now));
        t.learn(key(1), PortId(0), now, &mut ev);
        assert_eq!(
            ev,
            [TableEvent::Learned {
                key: key(1),
                port: PortId(0)
            }]
        );
        assert!(t.refresh(key(1), PortId(0), now));
        assert_eq!(t.lookup(key(1), now), Some(PortId(0)));
        assert!(
            !t.refresh(key(1), PortId(1), now),
            "seen elsewhere: must learn"
        );
        ev.clear();
        t.learn(key(1), PortId(1), now, &mut ev);
        assert_eq!(
            ev,
            [TableEvent::Moved {
                key: key(1),
                from: PortId(0),
                to: PortId(1)
            }]
        );
        assert_eq!(t.lookup(key(1), now), Some(PortId(1)));
        assert_eq!((t.port_len(PortId(0)), t.port_len(PortId(1))), (0, 1));
    }

    #[test]
    fn ages_with_a_fake_clock() {
        let mut t = table(16, None, 2);
        let mut ev = Vec::new();
        t.learn(key(1), PortId(0), Timestamp::from_secs(10), &mut ev);
        t.learn(key(2), PortId(1), Timestamp::from_secs(10), &mut ev);
        // key 2 keeps talking, key 1 goes silent.
        assert!(t.refresh(key(2), PortId(1), Timestamp::from_secs(11)));
        let later = Timestamp::from_secs(12);
        assert_eq!(t.lookup(key(1), later), None, "expired before the sweep");
        assert_eq!(t.lookup(key(2), later), Some(PortId(1)));
        ev.clear();
        t.age(later, &mut ev);
        assert_eq!(
            ev,
            [TableEvent::Aged {
                key: key(1),
                port: PortId(0)
            }]
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.port_len(PortId(0)), 0);
    }

    #[test]
    fn full_table_evicts_from_the_fullest_port() {
        let mut t = table(4, None, 300);
        let mut ev = Vec::new();
        let now = Timestamp::from_secs(1);
        t.learn(key(100), PortId(0), now, &mut ev); // the quiet host
        for n in 0..3 {
            t.learn(key(n), PortId(1), now, &mut ev); // the flooder
        }
        ev.clear();
        t.learn(key(3), PortId(1), Timestamp::from_secs(2), &mut ev);
        assert_eq!(
            ev,
            [
                TableEvent::Evicted {
                    key: key(0),
                    port: PortId(1)
                },
                TableEvent::Learned {
                    key: key(3),
                    port: PortId(1)
                }
            ]
        );
        assert_eq!(
            t.lookup(key(100), now),
            Some(PortId(0)),
            "the quiet host survives"
        );
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn eviction_spares_recently_used_entries() {
        let mut t = table(3, None, 300);
        let mut ev = Vec::new();
        for n in 0..3 {
            t.learn(key(n), PortId(0), Timestamp::from_secs(1), &mut ev);
        }
        assert!(t.refresh(key(0), PortId(0), Timestamp::from_secs(5)));
        ev.clear();
        t.learn(key(9), PortId(0), Timestamp::from_secs(6), &mut ev);
        assert_eq!(
            ev[0],
            TableEvent::Evicted {
                key: key(1),
                port: PortId(0)
            }
        );
        assert!(t.lookup(key(0), Timestamp::from_secs(6)).is_some());
    }

    #[test]
    fn per_port_limit_evicts_that_ports_own_entries() {
        let mut t = table(100, Some(2), 300);
        let mut ev = Vec::new();
        let now = Timestamp::from_secs(1);
        t.learn(key(100), PortId(0), now, &mut ev);
        for n in 0..5 {
            t.learn(key(n), PortId(1), now, &mut ev);
        }
        assert_eq!(t.port_len(PortId(1)), 2);
        assert_eq!(t.port_len(PortId(0)), 1);
        assert_eq!(t.lookup(key(4), now), Some(PortId(1)));
    }

    #[test]
    fn flush_port_forgets_only_that_port() {
        let mut t = table(16, None, 300);
        let mut ev = Vec::new();
        let now = Timestamp::from_secs(1);
        t.learn(key(1), PortId(0), now, &mut ev);
        t.learn(key(2), PortId(1), now, &mut ev);
        assert_eq!(t.flush_port(PortId(0)), 1);
        assert_eq!(t.lookup(key(1), now), None);
        assert_eq!(t.lookup(key(2), now), Some(PortId(1)));
        t.learn(key(3), PortId(0), now, &mut ev);
        assert_eq!(t.port_len(PortId(0)), 1);
    }

    #[test]
    fn static_entries_are_never_aged_moved_or_evicted() {
        let mut t = table(2, None, 2);
        let mut ev = Vec::new();
        t.add_static(key(1), PortId(0));
        assert_eq!(
            t.lookup(key(1), Timestamp::from_secs(1000)),
            Some(PortId(0))
        );
        // Learning it elsewhere changes nothing, and the frame needs no learning.
        assert!(t.refresh(key(1), PortId(3), Timestamp::from_secs(1)));
        t.learn(key(1), PortId(3), Timestamp::from_secs(1), &mut ev);
        assert!(ev.is_empty());
        assert_eq!(t.lookup(key(1), Timestamp::from_secs(1)), Some(PortId(0)));
        t.age(Timestamp::from_secs(1000), &mut ev);
        assert_eq!(
            t.lookup(key(1), Timestamp::from_secs(1000)),
            Some(PortId(0))
        );
        // A full table evicts learned entries only.
        for n in 2..6 {
            t.learn(key(n), PortId(1), Timestamp::from_secs(1000), &mut ev);
        }
        assert_eq!(
            t.lookup(key(1), Timestamp::from_secs(1000)),
            Some(PortId(0))
        );
        assert_eq!(t.flush_dynamic(None), 2);
        assert_eq!(t.entries().count(), 1);
        assert!(t.remove(key(1)));
        assert!(!t.remove(key(1)));
        assert_eq!(t.lookup(key(1), Timestamp::from_secs(1000)), None);
    }

    #[test]
    fn a_static_entry_replaces_a_learned_one() {
        let mut t = table(16, None, 300);
        let mut ev = Vec::new();
        t.learn(key(1), PortId(2), Timestamp::ZERO, &mut ev);
        t.add_static(key(1), PortId(0));
        assert_eq!(t.port_len(PortId(2)), 0);
        assert_eq!(t.lookup(key(1), Timestamp::ZERO), Some(PortId(0)));
        assert_eq!(t.entries().filter(|e| e.last_seen.is_none()).count(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Learn { mac: u32, port: u16, dt: u64 },
        Refresh { mac: u32, port: u16, dt: u64 },
        Age { dt: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u32..40, 0u16..4, 0u64..3).prop_map(|(mac, port, dt)| Op::Learn { mac, port, dt }),
            3 => (0u32..40, 0u16..4, 0u64..3).prop_map(|(mac, port, dt)| Op::Refresh { mac, port, dt }),
            1 => (0u64..20).prop_map(|dt| Op::Age { dt }),
        ]
    }

    proptest! {
        /// Against a model of what must hold whatever the eviction order: limits are kept, counts
        /// match, the key just learned is where it was learned, and an eviction caused by a full
        /// table hits a port that held the most entries.
        #[test]
        fn table_invariants(ops in proptest::collection::vec(op(), 1..300),
                            capacity in 1usize..20, per_port in proptest::option::of(1usize..8)) {
            let mut t = table(capacity, per_port, 10);
            let mut now = 0u64;
            let mut ev = Vec::new();
            for op in ops {
                ev.clear();
                match op {
                    Op::Learn { mac, port, dt } => {
                        now += dt * 1000;
                        let counts: Vec<usize> = (0..4).map(|p| t.port_len(PortId(p))).collect();
                        let was_new = !t.entries.contains_key(&key(mac));
                        t.learn(key(mac), PortId(port), Timestamp::from_millis(now), &mut ev);
                        prop_assert_eq!(t.lookup(key(mac), Timestamp::from_millis(now)), Some(PortId(port)));
                        let max = counts.iter().copied().max().unwrap_or(0);
                        for e in &ev {
                            if let TableEvent::Evicted { port: victim, .. } = e {
                                let per_port_full = per_port.is_some_and(|l| counts[usize::from(port)] >= l) && *victim == PortId(port);
                                prop_assert!(per_port_full || (was_new && counts[victim.index()] == max),
                                    "evicted from {:?} holding {} while max was {}", victim, counts[victim.index()], max);
                            }
                        }
                    }
                    Op::Refresh { mac, port, dt } => {
                        now += dt * 1000;
                        let expect = t.lookup(key(mac), Timestamp::from_millis(now)) == Some(PortId(port));
                        prop_assert_eq!(t.refresh(key(mac), PortId(port), Timestamp::from_millis(now)), expect);
                    }
                    Op::Age { dt } => {
                        now += dt * 1000;
                        t.age(Timestamp::from_millis(now), &mut ev);
                        for e in t.entries() {
                            let seen = e.last_seen.expect("no statics here");
                            prop_assert!(now - seen.millis() < 10_000, "{:?} should have aged", e.key);
                        }
                    }
                }
                prop_assert!(t.len() <= capacity);
                let mut sum = 0;
                for p in 0..4u16 {
                    let n = t.entries().filter(|e| e.port == PortId(p)).count();
                    prop_assert_eq!(n, t.port_len(PortId(p)));
                    if let Some(limit) = per_port { prop_assert!(n <= limit); }
                    sum += n;
                }
                prop_assert_eq!(sum, t.len());
            }
        }
    }
}
