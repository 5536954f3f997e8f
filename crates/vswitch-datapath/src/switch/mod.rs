//! The running switch: worker threads around the forwarding core.
//!
//! Each receive queue of a port belongs to one worker (a multi-queue TAP has one per worker, and
//! the kernel keeps each flow on one queue), so frames of one flow stay in order. A worker
//! (`worker`) waits on its queues with epoll (mio), reads up to [`BATCH`] frames from a ready
//! queue into preallocated buffers, and takes each along the frame path (`frame_path`): ingress
//! pipeline, forwarding decision under one shared (read) lock of the table per batch, egress
//! pipeline, send. Learning is applied afterwards under the exclusive lock — rare once hosts are
//! known. A housekeeping thread ages the table and re-reads port MTUs once a second. This module
//! holds the [`Switch`] handle: start, stop, and the runtime operations the control socket uses.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token, Waker};
use vswitch_core::pipeline::MirrorTarget;
use vswitch_core::{
    FdbKey, ForwardingConfig, MacAddr, MacTable, MacvlanError, MacvlanMode, MacvlanTable, Pipeline,
    PortId, PortPolicy, TableConfig, TableCounters, TableEvent, TableStats, Timestamp,
    VNET_HDR_LEN, VlanMode,
};

use crate::fastpath::FastPath;
use crate::pipeline::Hook;
use crate::port::{Port, PortDevice, Steering};

mod affinity;
mod frame_path;
mod stats;
mod worker;

pub use stats::{PortReport, StageCounters, SwitchStats};

#[doc(hidden)]
pub use worker::Injector;

use worker::Worker;

/// Frames read from one port before the worker looks at its other ports.
pub const BATCH: usize = 32;
/// Receive buffer size: a virtio-net header and the largest frame a 64 KiB MTU (or a 64 KiB GSO
/// segment) allows, with a VLAN tag, and room for a tunnel header read in front of it.
const MAX_FRAME: usize = VNET_HDR_LEN + 65536 + 18 + 32;
const WAKER: Token = Token(usize::MAX);
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// How the switch behaves.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// Worker threads (at most one per port is useful).
    pub threads: usize,
    /// MAC table limits and ageing.
    pub table: TableConfig,
    /// Forwarding options.
    pub forwarding: ForwardingConfig,
    /// `Some`: MACVLAN-style dispatch instead of a learning switch.
    pub macvlan: Option<MacvlanConfig>,
    /// After handling traffic, a worker keeps polling without sleeping for this long before it
    /// blocks again (`--busy-poll`): lower latency for more CPU. Zero: block at once, so an idle
    /// switch uses no CPU.
    pub busy_poll: Duration,
    /// How multi-queue ports spread frames over the workers (`--steering`). With
    /// [`Steering::Cpu`] and one worker per CPU, worker `w` is pinned to CPU `w` while its load
    /// is light (`switch::affinity`).
    pub steering: Steering,
    /// Whether known unicast between `dev:` ports may take the in-kernel fast path.
    pub datapath: Datapath,
}

/// Where frames are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Datapath {
    /// Known unicast between `dev:` ports in the kernel (tc ingress, `bpf_redirect`) where
    /// the kernel allows, decided by the switch; the rest by the switch's workers. The
    /// classifier is attached through tcx (Linux 6.6+), else as a cls_bpf filter.
    #[default]
    Auto,
    /// As `Auto`, the classifier always a cls_bpf filter (what `Auto` falls back to).
    ClsBpf,
    /// Every frame through the switch's workers.
    Userspace,
}

impl std::str::FromStr for Datapath {
    type Err = vswitch_core::UnknownChoice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Datapath::Auto),
            "cls-bpf" => Ok(Datapath::ClsBpf),
            "userspace" => Ok(Datapath::Userspace),
            _ => Err(vswitch_core::UnknownChoice::new(
                "datapath",
                s,
                "auto, cls-bpf, userspace",
            )),
        }
    }
}

impl std::fmt::Display for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Datapath::Auto => "auto",
            Datapath::ClsBpf => "cls-bpf",
            Datapath::Userspace => "userspace",
        })
    }
}

impl Default for SwitchConfig {
    /// One worker per CPU, the default table, no link-local forwarding.
    fn default() -> Self {
        SwitchConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            table: TableConfig::default(),
            forwarding: ForwardingConfig::default(),
            macvlan: None,
            busy_poll: Duration::ZERO,
            steering: Steering::default(),
            datapath: Datapath::default(),
        }
    }
}

/// A MACVLAN switch, by port name.
#[derive(Debug, Clone)]
pub struct MacvlanConfig {
    /// How sub-ports relate.
    pub mode: MacvlanMode,
    /// The uplink's port name.
    pub uplink: String,
    /// MACs bound to sub-ports by name; a sub-port not listed, or listed with no MACs, is bound
    /// to its device's own MAC (in source mode: the sources it accepts, none by default). Every
    /// port but the uplink is a sub-port.
    pub bindings: Vec<(String, Vec<MacAddr>)>,
    /// Sub-ports whose source MACs are not checked.
    pub allow_spoofing: Vec<String>,
}

/// What decides where frames go.
#[derive(Debug)]
enum Forwarder {
    /// A learning switch (the table lives in [`State`]).
    Learning(ForwardingConfig),
    /// MACVLAN dispatch by bound MAC (bindings change at runtime, rarely: a read lock per
    /// frame, uncontended).
    Macvlan(RwLock<MacvlanTable>),
}

/// Why the switch could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// A switch needs at least one port.
    #[error("no ports given")]
    NoPorts,
    /// Two ports with one name.
    #[error("port {0} is given twice")]
    DuplicatePort(String),
    /// More ports than port ids.
    #[error("too many ports (at most {max})")]
    TooManyPorts {
        /// The limit.
        max: usize,
    },
    /// A MACVLAN setting names a port that isn't there.
    #[error("macvlan: no port {0}")]
    UnknownPort(String),
    /// A sub-port without a binding whose device can't say its MAC.
    #[error("macvlan: sub-port {0} has no MAC of its own; bind one explicitly (NAME=MAC)")]
    NoMac(String),
    /// The bindings are inconsistent.
    #[error("macvlan: {0}")]
    Macvlan(#[from] MacvlanError),
    /// The housekeeping thread couldn't be started.
    #[error("couldn't start the housekeeping thread")]
    Housekeeping(#[source] io::Error),
    /// epoll or thread setup failed.
    #[error("couldn't set up worker {worker}")]
    Worker {
        /// Which worker.
        worker: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// State the workers share: the table and the live ports, behind one read-mostly lock.
#[derive(Debug)]
struct State {
    table: MacTable,
    ports: Vec<Option<Arc<Port>>>,
    /// Each port's VLAN membership and flags, by port id (missing: the default).
    policies: Vec<PortPolicy>,
}

impl State {
    /// Port `id`'s policy.
    fn policy(&self, id: PortId) -> &PortPolicy {
        static DEFAULT: std::sync::OnceLock<PortPolicy> = std::sync::OnceLock::new();
        self.policies
            .get(id.index())
            .unwrap_or_else(|| DEFAULT.get_or_init(PortPolicy::default))
    }
}

#[derive(Debug)]
struct Shared {
    state: RwLock<State>,
    /// Every port attached, by id; `None` once removed by the operator.
    registry: Mutex<Vec<Option<Arc<Port>>>>,
    busy_poll: Duration,
    steering: Steering,
    forwarder: Forwarder,
    /// Nanoseconds each worker spent handling frames (not waiting for them).
    busy_nanos: Vec<AtomicU64>,
    table_counters: TableCounters,
    epoch: Instant,
    /// `epoch` on the fast path's clock (`CLOCK_MONOTONIC` ns).
    epoch_ns: u64,
    /// The in-kernel fast path, when the switch runs one.
    fast: Option<FastPath>,
    /// Held while the fast path's counters are harvested.
    harvesting: Mutex<()>,
    /// Frames VLAN membership dropped on ingress, by the VID of their outer tag (0: untagged):
    /// which VLAN a misconfigured neighbour is sending, which the per-port count can't say.
    vlan_drops: Box<[AtomicU64]>,
    stop: AtomicBool,
}

impl Shared {
    /// Keeps the fast path's MACs equal to the table after `events`: a learned or moved MAC is
    /// forwarded in the kernel from its next frame on, an aged or evicted one no longer. Called
    /// under the table's write lock, so the map changes in the table's order.
    fn fast_learn(&self, events: &[TableEvent]) {
        let Some(fast) = &self.fast else { return };
        for event in events {
            let (key, port) = match *event {
                TableEvent::Learned { key, port } => (key, Some(port)),
                TableEvent::Moved { key, to, .. } => (key, Some(to)),
                TableEvent::Aged { key, .. } | TableEvent::Evicted { key, .. } => (key, None),
            };
            if key == FdbKey::untagged(key.mac)
                && let Err(e) = fast.set_mac(key.mac, port)
            {
                tracing::warn!(error = %e, "fast path: couldn't update a MAC");
            }
        }
    }

    /// Makes the fast path's MACs equal to the table's untagged entries (after a flush, a
    /// static entry, a removed port, a VLAN mode).
    fn sync_fast_fdb(&self) {
        let Some(fast) = &self.fast else { return };
        let now = self.now();
        // The read lock is held until the map is written: a change the snapshot misses (it
        // needs the write lock) is written to the map after this sync, never undone by it.
        let state = self.read();
        let entries: Vec<(MacAddr, PortId)> = state
            .table
            .entries()
            .filter(|e| e.key == FdbKey::untagged(e.key.mac))
            .filter(|e| state.table.lookup(e.key, now) == Some(e.port))
            .map(|e| (e.key.mac, e.port))
            .collect();
        if let Err(e) = fast.sync_fdb(&entries) {
            tracing::warn!(error = %e, "fast path: couldn't sync the MACs");
        }
    }

    /// Lets the fast path serve each of its ports that has no pipeline and no capture, with the
    /// port's MTU; the others' frames all go through the switch.
    fn sync_fast_ports(&self) {
        let Some(fast) = &self.fast else { return };
        if self.stop.load(Ordering::Relaxed) {
            return; // stopping: `Switch::stop` disabled every port for good
        }
        let ports: Vec<Arc<Port>> = lock(&self.registry).iter().flatten().cloned().collect();
        let plain: Vec<bool> = {
            let state = self.read();
            ports
                .iter()
                .map(|p| state.policy(p.id()).is_default())
                .collect()
        };
        for (port, plain) in ports.iter().zip(plain).filter(|(p, _)| fast.serves(p.id())) {
            let enabled = plain
                && !port.is_gone()
                && !port.pipeline(Hook::Ingress).is_active()
                && !port.pipeline(Hook::Egress).is_active()
                && !port.capture_tap().is_active();
            if let Err(e) = fast.set_port(port.id(), enabled, port.mtu()) {
                tracing::warn!(port = port.name(), error = %e, "fast path: couldn't update a port");
            }
        }
    }

    /// Once a tick: what the fast path moved goes into the ports' counters, and the sources it
    /// saw into the table (so they don't age out) before the table ages.
    fn fast_housekeeping(&self) {
        let Some(fast) = &self.fast else { return };
        self.harvest_fast_counters();
        match fast.seen() {
            Ok(seen) => {
                let state = self.read();
                for (mac, port, at_ns) in seen {
                    let micros = at_ns.saturating_sub(self.epoch_ns) / 1000;
                    let at = Timestamp::from_micros(micros);
                    state.table.refresh(FdbKey::untagged(mac), port, at);
                }
            }
            Err(e) => tracing::warn!(error = %e, "fast path: couldn't read the MACs"),
        }
    }

    /// Adds what the fast path moved since the last call to the ports' counters.
    fn harvest_fast_counters(&self) {
        let Some(fast) = &self.fast else { return };
        // One harvest at a time, so no delta is counted twice.
        let _one = lock(&self.harvesting);
        let moved = fast.harvest();
        if moved.is_empty() {
            return;
        }
        let registry = lock(&self.registry);
        for (id, m) in moved {
            if let Some(Some(port)) = registry.get(id.index()) {
                port.counters()
                    .add_fast_path(m.rx_packets, m.rx_bytes, m.tx_packets, m.tx_bytes);
            }
        }
    }

    /// Asks `port` to steer by CPU if the switch does; true if it does so now.
    fn steer(&self, port: &Port) -> bool {
        if self.steering != Steering::Cpu || port.device().rx_queues() < 2 {
            return false;
        }
        match port.device().steer_by_cpu() {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(port = port.name(), error = %e, "steering by flow");
                false
            }
        }
    }

    /// Lets the fast path serve `port` if it can (a `dev:` port); logs why not otherwise.
    fn attach_fast(&self, port: &Port) {
        let Some(fast) = &self.fast else { return };
        match fast.attach(port) {
            Ok(true) => tracing::info!(port = port.name(), "in-kernel fast path"),
            Ok(false) => {}
            Err(e) => {
                fast.detach(port.id());
                tracing::warn!(port = port.name(), error = %e, "no fast path for this port");
            }
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn count_events(&self, events: &mut Vec<TableEvent>) {
        let c = &self.table_counters;
        for event in events.drain(..) {
            let counter = match event {
                TableEvent::Learned { .. } => &c.learned,
                TableEvent::Moved { .. } => &c.moved,
                TableEvent::Aged { .. } => &c.aged,
                TableEvent::Evicted { .. } => &c.evicted,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?event, "table");
        }
    }

    /// Takes `port` out of forwarding and forgets its MACs; returns how many.
    fn detach(&self, port: &Port) -> usize {
        if let Some(fast) = &self.fast {
            fast.detach(port.id());
        }
        let flushed = {
            let mut state = self.write();
            if let Some(slot) = state.ports.get_mut(port.id().index()) {
                *slot = None;
            }
            state.table.flush_port(port.id())
        };
        self.sync_fast_fdb();
        flushed
    }

    /// Takes a port whose device failed out of the switch, forgetting its MACs. Its worker
    /// stops polling it when it next looks.
    fn remove_port(&self, port: &Port, error: &dyn std::fmt::Display) {
        if port.is_gone() {
            return;
        }
        let flushed = self.detach(port);
        port.mark_gone();
        tracing::warn!(port = port.name(), %error, flushed, "port disappeared; removed from the switch");
    }
}

/// Resolves a [`MacvlanConfig`] against the ports.
fn macvlan_table(config: &MacvlanConfig, ports: &[Arc<Port>]) -> Result<MacvlanTable, SwitchError> {
    let id_of = |name: &str| {
        ports
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.id())
            .ok_or_else(|| SwitchError::UnknownPort(name.to_owned()))
    };
    let uplink = id_of(&config.uplink)?;
    for (name, _) in &config.bindings {
        id_of(name)?;
    }
    let mut sub_ports = Vec::new();
    for port in ports.iter().filter(|p| p.id() != uplink) {
        let explicit = config
            .bindings
            .iter()
            .filter(|(name, _)| name == port.name())
            .flat_map(|(_, macs)| macs.iter().copied())
            .collect::<Vec<_>>();
        let macs = if explicit.is_empty() && config.mode == MacvlanMode::Source {
            // In source mode the list is of accepted sources: none unless given.
            explicit
        } else if explicit.is_empty() {
            let own = port
                .device()
                .mac()
                .map_err(|_| SwitchError::NoMac(port.name().to_owned()))?;
            vec![own]
        } else {
            explicit
        };
        sub_ports.push((port.id(), macs));
    }
    let lax = config
        .allow_spoofing
        .iter()
        .map(|name| id_of(name))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MacvlanTable::new(config.mode, uplink, &sub_ports, lax)?)
}

/// A change for a worker, sent over its channel and announced with its waker.
#[derive(Debug)]
enum WorkerCommand {
    /// Start polling this receive queue.
    Add(RxQueue),
    /// Stop polling this port and let go of it.
    Remove(PortId),
}

/// One receive queue of a port: what a worker polls and reads.
#[derive(Debug, Clone)]
struct RxQueue {
    port: Arc<Port>,
    queue: usize,
}

impl RxQueue {
    fn fd(&self) -> std::os::fd::RawFd {
        self.port.device().queue_fd(self.queue).as_raw_fd()
    }
}

#[derive(Debug)]
struct WorkerHandle {
    thread: JoinHandle<()>,
    waker: Arc<Waker>,
    commands: crossbeam_channel::Sender<WorkerCommand>,
}

/// One row of [`Switch::fdb`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbRow {
    /// VLAN and MAC.
    pub key: FdbKey,
    /// The port's name.
    pub port: String,
    /// Time since last seen; `None` for a static entry.
    pub age: Option<Duration>,
}

/// Why a runtime change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No port of that name.
    #[error("no port {0}")]
    UnknownPort(String),
    /// A port of that name is attached already.
    #[error("port {0} exists already")]
    DuplicatePort(String),
    /// MACVLAN bindings are fixed at start.
    #[error("ports can't be added to or removed from a macvlan switch while it runs")]
    Macvlan,
    /// The FDB of a MACVLAN switch is its bindings.
    #[error("a macvlan switch has no learning table")]
    NoTable,
    /// Too many ports.
    #[error("too many ports")]
    TooManyPorts,
    /// The switch is stopping.
    #[error("the switch is stopping")]
    Stopping,
    /// A pipeline text that doesn't parse, or a mirror file that can't be opened.
    #[error("{0}")]
    Pipeline(String),
    /// A VLAN mode or port flag that doesn't parse, or a binding refused.
    #[error("{0}")]
    Policy(String),
    /// MACVLAN bindings asked of a learning switch.
    #[error("this switch is not in macvlan mode (start it with --macvlan)")]
    NotMacvlan,
}

/// A running switch. Methods take `&self`, so it can be shared with a control thread; dropping
/// it stops the workers (see [`Switch::stop`]).
#[derive(Debug)]
pub struct Switch {
    shared: Arc<Shared>,
    workers: Mutex<Vec<WorkerHandle>>,
    housekeeper: Mutex<Option<(JoinHandle<()>, mpsc::Sender<()>)>>,
    next_worker: AtomicUsize,
}

impl Switch {
    /// A thread-less worker of this switch, for the fuzz target.
    #[doc(hidden)]
    pub fn injector(&self) -> std::io::Result<worker::Injector> {
        worker::Injector::new(self.shared.clone())
    }

    /// Starts switching among `ports` (name and device each) with `config`.
    pub fn start(
        config: SwitchConfig,
        ports: Vec<(String, Box<dyn PortDevice>)>,
    ) -> Result<Switch, SwitchError> {
        if ports.is_empty() {
            return Err(SwitchError::NoPorts);
        }
        if ports.len() > usize::from(u16::MAX) {
            return Err(SwitchError::TooManyPorts {
                max: usize::from(u16::MAX),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &ports {
            if !seen.insert(name.as_str()) {
                return Err(SwitchError::DuplicatePort(name.clone()));
            }
        }
        let ports: Vec<Arc<Port>> = ports
            .into_iter()
            .enumerate()
            .map(|(i, (name, dev))| Arc::new(Port::new(PortId(i as u16), name, dev)))
            .collect();
        let forwarder = match &config.macvlan {
            None => Forwarder::Learning(config.forwarding),
            Some(m) => Forwarder::Macvlan(RwLock::new(macvlan_table(m, &ports)?)),
        };
        let queues: usize = ports.iter().map(|p| p.device().rx_queues()).sum();
        let threads = config.threads.clamp(1, queues.max(1));
        let pinned = config.steering == Steering::Cpu && owns_cpus(threads);
        let fast = match (config.datapath, &forwarder) {
            (Datapath::Auto | Datapath::ClsBpf, Forwarder::Learning(_))
                if ports.iter().any(|p| p.device().fast_path_ifindex().is_some()) =>
            {
                FastPath::new(config.datapath == Datapath::ClsBpf)
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "no in-kernel fast path (needs CAP_BPF and CAP_NET_ADMIN); every frame goes through the switch")
                    })
                    .ok()
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                table: MacTable::new(config.table.clone()),
                ports: ports.iter().cloned().map(Some).collect(),
                policies: vec![PortPolicy::default(); ports.len()],
            }),
            registry: Mutex::new(ports.iter().cloned().map(Some).collect()),
            forwarder,
            busy_nanos: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            busy_poll: config.busy_poll,
            steering: config.steering,
            table_counters: TableCounters::default(),
            epoch: Instant::now(),
            epoch_ns: crate::steering_clock_ns(),
            fast,
            harvesting: Mutex::new(()),
            vlan_drops: (0..4096).map(|_| AtomicU64::new(0)).collect(),
            stop: AtomicBool::new(false),
        });
        for port in &ports {
            shared.attach_fast(port);
        }
        shared.sync_fast_ports();

        let switch = Switch {
            shared: shared.clone(),
            workers: Mutex::new(Vec::new()),
            housekeeper: Mutex::new(None),
            next_worker: AtomicUsize::new(ports.len()),
        };
        // Which worker serves which queue: see `queue_worker`.
        let mut assigned: Vec<Vec<RxQueue>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, port) in ports.iter().enumerate() {
            let by_cpu = shared.steer(port);
            for queue in 0..port.device().rx_queues() {
                assigned[queue_worker(by_cpu, i, queue, threads)].push(RxQueue {
                    port: port.clone(),
                    queue,
                });
            }
        }
        for (w, mine) in assigned.into_iter().enumerate() {
            let worker_err = |source| SwitchError::Worker { worker: w, source };
            let poll = Poll::new().map_err(worker_err)?;
            for (i, rxq) in mine.iter().enumerate() {
                let fd = rxq.fd();
                poll.registry()
                    .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
                    .map_err(worker_err)?;
            }
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(worker_err)?);
            let (tx, rx) = crossbeam_channel::unbounded();
            let worker = Worker::new(w, shared.clone(), mine, poll, rx);
            let cpus = threads;
            let thread = std::thread::Builder::new()
                .name(format!("vswitch-worker{w}"))
                .spawn(move || {
                    let affinity = pinned.then(|| affinity::Affinity::pin(w, cpus));
                    worker.run(affinity)
                })
                .map_err(worker_err)?;
            lock(&switch.workers).push(WorkerHandle {
                thread,
                waker,
                commands: tx,
            });
        }
        let (tx, rx) = mpsc::channel();
        let hk_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("vswitch-housekeeping".into())
            .spawn(move || housekeeping(&hk_shared, &rx))
            .map_err(SwitchError::Housekeeping)?;
        *lock(&switch.housekeeper) = Some((handle, tx));
        tracing::info!(
            ports = ports.len(),
            threads,
            steering = %config.steering,
            pinned,
            "switch started"
        );
        Ok(switch)
    }

    /// Every port attached now or before, including ones whose device has gone; not those
    /// removed with [`Switch::remove_port`].
    pub fn ports(&self) -> Vec<Arc<Port>> {
        lock(&self.shared.registry)
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The port called `name`: the live one if a port of that name vanished and was added
    /// again, else the gone one (whose counters still show).
    pub fn port(&self, name: &str) -> Option<Arc<Port>> {
        let registry = lock(&self.shared.registry);
        let named = || registry.iter().flatten().filter(|p| p.name() == name);
        named()
            .find(|p| !p.is_gone())
            .or_else(|| named().next())
            .cloned()
    }

    /// How multi-queue ports spread frames over the workers.
    pub fn steering(&self) -> Steering {
        self.shared.steering
    }

    /// How many worker threads run.
    pub fn threads(&self) -> usize {
        self.shared.busy_nanos.len()
    }

    /// Time each worker has spent handling frames, as opposed to waiting for them.
    pub fn worker_busy(&self) -> Vec<Duration> {
        self.shared
            .busy_nanos
            .iter()
            .map(|n| Duration::from_nanos(n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Table events so far.
    pub fn table_stats(&self) -> TableStats {
        self.shared.table_counters.snapshot()
    }

    /// Entries in the table and its capacity.
    pub fn table_size(&self) -> (usize, usize) {
        let state = self.shared.read();
        (state.table.len(), state.table.config().capacity)
    }

    /// The table's entries now (expired ones left out): key, port name, age.
    pub fn fdb(&self) -> Vec<FdbRow> {
        let now = self.shared.now();
        let names: Vec<Option<String>> = lock(&self.shared.registry)
            .iter()
            .map(|p| p.as_ref().map(|p| p.name().to_owned()))
            .collect();
        let state = self.shared.read();
        state
            .table
            .entries()
            .filter(|e| state.table.lookup(e.key, now) == Some(e.port))
            .map(|e| FdbRow {
                key: e.key,
                port: names
                    .get(e.port.index())
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| e.port.to_string()),
                age: e.last_seen.map(|seen| now.saturating_since(seen)),
            })
            .collect()
    }

    fn learning_table(&self) -> Result<(), ControlError> {
        match self.shared.forwarder {
            Forwarder::Learning(_) => Ok(()),
            Forwarder::Macvlan(_) => Err(ControlError::NoTable),
        }
    }

    fn live_port(&self, name: &str) -> Result<Arc<Port>, ControlError> {
        self.port(name)
            .filter(|p| !p.is_gone())
            .ok_or_else(|| ControlError::UnknownPort(name.to_owned()))
    }

    /// Pins `mac` (untagged) to port `port`: never aged, never moved by learning.
    pub fn add_static(&self, mac: MacAddr, port: &str) -> Result<(), ControlError> {
        self.learning_table()?;
        let port = self.live_port(port)?;
        self.shared
            .write()
            .table
            .add_static(FdbKey::untagged(mac), port.id());
        self.shared.sync_fast_fdb();
        Ok(())
    }

    /// [`Switch::add_static`], and for a VXLAN port the remote VTEP `dst` the MAC is behind.
    pub fn add_static_at(
        &self,
        mac: MacAddr,
        port: &str,
        dst: Option<std::net::IpAddr>,
    ) -> Result<(), ControlError> {
        if let Some(dst) = dst {
            self.live_port(port)?
                .device()
                .add_remote(mac, dst)
                .map_err(|e| ControlError::Policy(format!("--dst on {port}: {e}")))?;
        }
        self.add_static(mac, port)
    }

    /// Removes the entry for `mac`, static or learned; false if there was none.
    pub fn remove_fdb(&self, mac: MacAddr) -> Result<bool, ControlError> {
        self.learning_table()?;
        for port in self.ports() {
            port.device().remove_remote(mac);
        }
        let removed = self.shared.write().table.remove(FdbKey::untagged(mac));
        self.shared.sync_fast_fdb();
        Ok(removed)
    }

    /// Forgets learned entries, of one port or all; returns how many.
    pub fn flush_fdb(&self, port: Option<&str>) -> Result<usize, ControlError> {
        self.learning_table()?;
        let port = port.map(|name| self.live_port(name)).transpose()?;
        let flushed = self
            .shared
            .write()
            .table
            .flush_dynamic(port.map(|p| p.id()));
        self.shared.sync_fast_fdb();
        Ok(flushed)
    }

    /// Attaches a new port while the switch runs; traffic among the others is not disturbed.
    pub fn add_port(
        &self,
        name: String,
        device: Box<dyn PortDevice>,
    ) -> Result<PortId, ControlError> {
        if matches!(self.shared.forwarder, Forwarder::Macvlan(_)) {
            return Err(ControlError::Macvlan);
        }
        let port = {
            let mut registry = lock(&self.shared.registry);
            if registry
                .iter()
                .flatten()
                .any(|p| p.name() == name && !p.is_gone())
            {
                return Err(ControlError::DuplicatePort(name));
            }
            let id = u16::try_from(registry.len()).map_err(|_| ControlError::TooManyPorts)?;
            let port = Arc::new(Port::new(PortId(id), name, device));
            registry.push(Some(port.clone()));
            {
                let mut state = self.shared.write();
                state.ports.push(Some(port.clone()));
                state.policies.push(PortPolicy::default());
            }
            port
        };
        let workers = lock(&self.workers);
        if workers.is_empty() {
            return Err(ControlError::Stopping);
        }
        let first = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let id = port.id();
        tracing::info!(
            port = port.name(),
            queues = port.device().rx_queues(),
            "port added"
        );
        self.shared.attach_fast(&port);
        self.shared.sync_fast_ports();
        let by_cpu = self.shared.steer(&port);
        for queue in 0..port.device().rx_queues() {
            let w = queue_worker(by_cpu, first, queue, workers.len());
            let rxq = RxQueue {
                port: port.clone(),
                queue,
            };
            let _ = workers[w].commands.send(WorkerCommand::Add(rxq));
            let _ = workers[w].waker.wake();
        }
        Ok(id)
    }

    /// Detaches port `name` and forgets its MACs; its device is closed (a TAP the switch
    /// created disappears).
    pub fn remove_port(&self, name: &str) -> Result<(), ControlError> {
        if matches!(self.shared.forwarder, Forwarder::Macvlan(_)) {
            return Err(ControlError::Macvlan);
        }
        let port = {
            let mut registry = lock(&self.shared.registry);
            // The live port of that name, before any gone one of the same name.
            let named = |p: &Option<Arc<Port>>, live: bool| {
                p.as_ref()
                    .is_some_and(|p| p.name() == name && p.is_gone() != live)
            };
            let index = registry
                .iter()
                .position(|p| named(p, true))
                .or_else(|| registry.iter().position(|p| named(p, false)))
                .ok_or_else(|| ControlError::UnknownPort(name.to_owned()))?;
            let slot = &mut registry[index];
            slot.take()
                .ok_or_else(|| ControlError::UnknownPort(name.to_owned()))?
        };
        self.shared.detach(&port);
        port.mark_gone();
        for worker in lock(&self.workers).iter() {
            let _ = worker.commands.send(WorkerCommand::Remove(port.id()));
            let _ = worker.waker.wake();
        }
        tracing::info!(port = name, "port removed");
        Ok(())
    }

    /// Installs a pipeline (text form, see [`vswitch_core::pipeline`]) on `port` for `hook`,
    /// replacing what was there; other ports are not disturbed.
    pub fn set_pipeline(&self, port: &str, hook: Hook, text: &str) -> Result<(), ControlError> {
        let port = self.live_port(port)?;
        let pipeline = Pipeline::parse(text).map_err(|e| ControlError::Pipeline(e.to_string()))?;
        for i in 0..pipeline.stages().len() {
            if let Some(MirrorTarget::Port(target)) = pipeline.mirror_target(i) {
                self.live_port(target)?;
            }
        }
        // Installed before the fast path lets go of the port: no frame bypasses the stages.
        let installed = port
            .pipeline(hook)
            .install(pipeline)
            .map_err(|e| ControlError::Pipeline(format!("couldn't open the mirror file: {e}")));
        self.shared.sync_fast_ports();
        installed
    }

    /// Removes `port`'s pipeline for `hook`.
    pub fn clear_pipeline(&self, port: &str, hook: Hook) -> Result<(), ControlError> {
        self.live_port(port)?.pipeline(hook).clear();
        self.shared.sync_fast_ports();
        Ok(())
    }

    /// Binds `mac` to MACVLAN sub-port `port` (source mode: adds it to the sources the port
    /// accepts), from the next frame on.
    pub fn macvlan_bind(&self, mac: MacAddr, port: &str) -> Result<(), ControlError> {
        let Forwarder::Macvlan(table) = &self.shared.forwarder else {
            return Err(ControlError::NotMacvlan);
        };
        let port = self.live_port(port)?;
        table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .bind(mac, port.id())
            .map_err(|e| ControlError::Policy(e.to_string()))
    }

    /// Takes `mac` off MACVLAN sub-port `port`; false if it wasn't bound there.
    pub fn macvlan_unbind(&self, mac: MacAddr, port: &str) -> Result<bool, ControlError> {
        let Forwarder::Macvlan(table) = &self.shared.forwarder else {
            return Err(ControlError::NotMacvlan);
        };
        let port = self.live_port(port)?;
        Ok(table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .unbind(mac, port.id()))
    }

    /// Every MACVLAN binding: MAC and sub-port name.
    pub fn macvlan_bindings(&self) -> Result<Vec<(MacAddr, String)>, ControlError> {
        let Forwarder::Macvlan(table) = &self.shared.forwarder else {
            return Err(ControlError::NotMacvlan);
        };
        let names: Vec<Option<String>> = lock(&self.shared.registry)
            .iter()
            .map(|p| p.as_ref().map(|p| p.name().to_owned()))
            .collect();
        let bindings = table.read().unwrap_or_else(|e| e.into_inner()).bindings();
        Ok(bindings
            .into_iter()
            .map(|(mac, port)| {
                let name = names.get(port.index()).cloned().flatten();
                (mac, name.unwrap_or_else(|| port.to_string()))
            })
            .collect())
    }

    /// Puts port `name` in VLAN `mode` (see [`VlanMode`]); its learned entries are forgotten
    /// (they belonged to its old VLAN), and the fast path leaves a port with VLANs to the switch.
    pub fn set_vlan(&self, name: &str, mode: VlanMode) -> Result<(), ControlError> {
        self.learning_table()?;
        let port = self.live_port(name)?;
        {
            let mut state = self.shared.write();
            if let Some(policy) = state.policies.get_mut(port.id().index()) {
                policy.vlan = mode;
            }
            state.table.flush_port(port.id());
        }
        self.shared.sync_fast_ports();
        self.shared.sync_fast_fdb();
        Ok(())
    }

    /// Adds `vlans` to trunk port `name`'s list, or takes them off (`add` false).
    pub fn change_trunk(
        &self,
        name: &str,
        vlans: &vswitch_core::VlanSet,
        add: bool,
    ) -> Result<(), ControlError> {
        self.learning_table()?;
        let port = self.live_port(name)?;
        let mut state = self.shared.write();
        if let Some(policy) = state.policies.get_mut(port.id().index()) {
            policy
                .vlan
                .change_trunk(vlans, add)
                .map_err(|e| ControlError::Policy(format!("port {name}: {e}")))?;
        }
        Ok(())
    }

    /// Sets flag `flag` (`learning`, `flood`, `mcast-flood`, `bcast-flood`, `isolated`,
    /// `hairpin`) of port `name` to `value` (`on`/`off`).
    pub fn set_port_flag(&self, name: &str, flag: &str, value: &str) -> Result<(), ControlError> {
        self.learning_table()?;
        let port = self.live_port(name)?;
        {
            let mut state = self.shared.write();
            if let Some(policy) = state.policies.get_mut(port.id().index()) {
                policy
                    .flags
                    .set(flag, value)
                    .map_err(ControlError::Policy)?;
            }
        }
        self.shared.sync_fast_ports();
        Ok(())
    }

    /// Frames VLAN membership dropped on ingress, by VID of their outer tag (0 for untagged
    /// frames), for the VIDs with any.
    pub fn vlan_drops(&self) -> Vec<(u16, u64)> {
        self.shared
            .vlan_drops
            .iter()
            .enumerate()
            .map(|(vid, n)| (vid as u16, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Every live port's VLAN membership and flags.
    pub fn policies(&self) -> Vec<(String, PortPolicy)> {
        let ports = self.ports();
        let state = self.shared.read();
        ports
            .iter()
            .filter(|p| !p.is_gone())
            .map(|p| (p.name().to_owned(), state.policy(p.id()).clone()))
            .collect()
    }

    /// Brings the ports' counters up to date with what the fast path moved (housekeeping does
    /// it every second; call it before reading counters that must be exact now).
    pub fn sync_counters(&self) {
        self.shared.harvest_fast_counters();
    }

    /// Tells the fast path that a capture started or ended (so a captured port's frames all
    /// pass through the switch); the housekeeping tick does it too, within a second.
    pub fn captures_changed(&self) {
        self.shared.sync_fast_ports();
    }

    /// The ports the in-kernel fast path forwards from and to now (none with `--datapath
    /// userspace`, without CAP_BPF or tcx, or without `dev:` ports; not those with a pipeline,
    /// a capture, a VLAN mode or flags).
    pub fn fast_path_ports(&self) -> Vec<String> {
        let Some(fast) = &self.shared.fast else {
            return Vec::new();
        };
        lock(&self.shared.registry)
            .iter()
            .flatten()
            .filter(|p| fast.is_enabled(p.id()) && !p.is_gone())
            .map(|p| p.name().to_owned())
            .collect()
    }

    /// How the fast path's classifiers are attached (`tcx` or `cls_bpf`), if it runs.
    pub fn fast_path_attachment(&self) -> Option<&'static str> {
        self.shared.fast.as_ref().map(|f| f.attachment())
    }

    /// `port`'s stages and their counters, ingress then egress.
    pub fn describe_pipelines(&self, port: &str) -> Result<[(Hook, Vec<String>); 2], ControlError> {
        let port = self.live_port(port)?;
        Ok([Hook::Ingress, Hook::Egress].map(|h| (h, port.pipeline(h).describe())))
    }

    /// Stops the workers and the housekeeper and waits for them. Devices close when the switch is
    /// dropped (TAPs this process created disappear then).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(fast) = &self.shared.fast {
            fast.disable_all();
        }
        let workers: Vec<WorkerHandle> = lock(&self.workers).drain(..).collect();
        for worker in &workers {
            if let Err(e) = worker.waker.wake() {
                tracing::error!(error = %e, "couldn't wake a worker");
            }
        }
        for worker in workers {
            if worker.thread.join().is_err() {
                tracing::error!("a worker panicked");
            }
        }
        if let Some((handle, tx)) = lock(&self.housekeeper).take() {
            drop(tx);
            if handle.join().is_err() {
                tracing::error!("the housekeeping thread panicked");
            }
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The worker that serves receive queue `queue` of the `nth` port. Steered by CPU, queue `q`
/// carries what CPU `q` sent, so worker `q` (pinned to CPU `q`) takes it; otherwise ports spread
/// over the workers, and the queues of a multi-queue port over different ones.
fn queue_worker(by_cpu: bool, nth: usize, queue: usize, threads: usize) -> usize {
    if by_cpu {
        queue % threads
    } else {
        (nth + queue) % threads
    }
}

/// Whether the switch may pin `threads` workers to CPUs 0..threads: exactly the CPUs it may run
/// on, so that queue `q` (what CPU `q` sent) and worker `q` meet on CPU `q`.
fn owns_cpus(threads: usize) -> bool {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return false;
    };
    let allowed: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    allowed.len() == threads && allowed.iter().enumerate().all(|(i, &c)| i == c)
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn housekeeping(shared: &Shared, stop: &mpsc::Receiver<()>) {
    let mut events = Vec::new();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(HOUSEKEEPING_INTERVAL) {
        shared.fast_housekeeping();
        let now = shared.now();
        {
            let mut state = shared.write();
            state.table.age(now, &mut events);
            shared.fast_learn(&events);
        }
        shared.count_events(&mut events);
        let ports: Vec<Arc<Port>> = lock(&shared.registry).iter().flatten().cloned().collect();
        for port in ports.iter().filter(|p| !p.is_gone()) {
            if port.device().is_present() {
                port.refresh();
            } else {
                shared.remove_port(port, &"interface deleted");
            }
        }
        // The MAC map needs no sweep here: every table change updates it where it happens
        // (learning and ageing through `fast_learn`, flushes and static entries through
        // `sync_fast_fdb`), and a sweep costs two syscalls per MAC.
        shared.sync_fast_ports();
    }
}
