//! The running switch: worker threads around the forwarding core.
//!
//! Each port's receive side belongs to one worker, so frames of one flow stay in order. A worker
//! waits on its ports with epoll (mio), reads up to [`BATCH`] frames from a ready port into
//! preallocated buffers, decides all of them under one shared (read) lock of the table, transmits,
//! and then applies any learning under the exclusive lock — rare once hosts are known. A
//! housekeeping thread ages the table and re-reads port MTUs once a second.

use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use vswitch_core::forward::decide;
use vswitch_core::pipeline::MirrorTarget;
use vswitch_core::vnet::{F_DATA_VALID, F_NEEDS_CSUM, complete_checksum, fits_mtu};
use vswitch_core::{
    DropReason, Egress, EthernetFrame, FdbKey, ForwardingConfig, LearnRequest, MacAddr, MacTable,
    MacvlanError, MacvlanMode, MacvlanTable, Outcome, Pipeline, PortId, TableConfig, TableCounters,
    TableEvent, TableStats, Timestamp, VNET_HDR_LEN, VnetHeader,
};

use crate::capture::Direction;
use crate::pipeline::{Hook, MirrorCopy};
use crate::port::{Port, PortDevice};

/// Frames read from one port before the worker looks at its other ports.
pub const BATCH: usize = 32;
/// Receive buffer size: a virtio-net header and the largest frame a 64 KiB MTU (or a 64 KiB GSO
/// segment) allows, with a VLAN tag.
const MAX_FRAME: usize = VNET_HDR_LEN + 65536 + 18;
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
    /// MACVLAN dispatch by bound MAC.
    Macvlan(MacvlanTable),
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
}

#[derive(Debug)]
struct Shared {
    state: RwLock<State>,
    /// Every port attached, by id; `None` once removed by the operator.
    registry: Mutex<Vec<Option<Arc<Port>>>>,
    busy_poll: Duration,
    forwarder: Forwarder,
    /// Nanoseconds each worker spent handling frames (not waiting for them).
    busy_nanos: Vec<AtomicU64>,
    table_counters: TableCounters,
    epoch: Instant,
    stop: AtomicBool,
}

impl Shared {
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
        let mut state = self.write();
        if let Some(slot) = state.ports.get_mut(port.id().index()) {
            *slot = None;
        }
        state.table.flush_port(port.id())
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
            Some(m) => Forwarder::Macvlan(macvlan_table(m, &ports)?),
        };
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                table: MacTable::new(config.table.clone()),
                ports: ports.iter().cloned().map(Some).collect(),
            }),
            registry: Mutex::new(ports.iter().cloned().map(Some).collect()),
            forwarder,
            busy_nanos: (0..config.threads.clamp(
                1,
                ports
                    .iter()
                    .map(|p| p.device().rx_queues())
                    .sum::<usize>()
                    .max(1),
            ))
                .map(|_| AtomicU64::new(0))
                .collect(),
            busy_poll: config.busy_poll,
            table_counters: TableCounters::default(),
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
        });
        let queues: usize = ports.iter().map(|p| p.device().rx_queues()).sum();
        let threads = config.threads.clamp(1, queues.max(1));
        let switch = Switch {
            shared: shared.clone(),
            workers: Mutex::new(Vec::new()),
            housekeeper: Mutex::new(None),
            next_worker: AtomicUsize::new(ports.len()),
        };
        // Queue q of port i goes to worker (i + q) % threads: ports spread over the workers, and
        // the queues of a multi-queue port over different ones.
        let mut assigned: Vec<Vec<RxQueue>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, port) in ports.iter().enumerate() {
            for queue in 0..port.device().rx_queues() {
                assigned[(i + queue) % threads].push(RxQueue {
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
            let thread = std::thread::Builder::new()
                .name(format!("vswitch-worker{w}"))
                .spawn(move || worker.run())
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
            .map_err(|source| SwitchError::Worker {
                worker: threads,
                source,
            })?;
        *lock(&switch.housekeeper) = Some((handle, tx));
        tracing::info!(ports = ports.len(), threads, "switch started");
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

    /// The port called `name`.
    pub fn port(&self, name: &str) -> Option<Arc<Port>> {
        lock(&self.shared.registry)
            .iter()
            .flatten()
            .find(|p| p.name() == name)
            .cloned()
    }

    /// The number of worker threads.
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
        Ok(())
    }

    /// Removes the entry for `mac`, static or learned; false if there was none.
    pub fn remove_fdb(&self, mac: MacAddr) -> Result<bool, ControlError> {
        self.learning_table()?;
        Ok(self.shared.write().table.remove(FdbKey::untagged(mac)))
    }

    /// Forgets learned entries, of one port or all; returns how many.
    pub fn flush_fdb(&self, port: Option<&str>) -> Result<usize, ControlError> {
        self.learning_table()?;
        let port = port.map(|name| self.live_port(name)).transpose()?;
        Ok(self
            .shared
            .write()
            .table
            .flush_dynamic(port.map(|p| p.id())))
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
            self.shared.write().ports.push(Some(port.clone()));
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
        for queue in 0..port.device().rx_queues() {
            let w = (first + queue) % workers.len();
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
            let slot = registry
                .iter_mut()
                .find(|p| p.as_ref().is_some_and(|p| p.name() == name))
                .ok_or_else(|| ControlError::UnknownPort(name.to_owned()))?;
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
        port.pipeline(hook)
            .install(pipeline)
            .map_err(|e| ControlError::Pipeline(format!("couldn't open the mirror file: {e}")))
    }

    /// Removes `port`'s pipeline for `hook`.
    pub fn clear_pipeline(&self, port: &str, hook: Hook) -> Result<(), ControlError> {
        self.live_port(port)?.pipeline(hook).clear();
        Ok(())
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

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn housekeeping(shared: &Shared, stop: &mpsc::Receiver<()>) {
    let mut events = Vec::new();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(HOUSEKEEPING_INTERVAL) {
        let now = shared.now();
        shared.write().table.age(now, &mut events);
        shared.count_events(&mut events);
        let ports: Vec<Arc<Port>> = lock(&shared.registry).iter().flatten().cloned().collect();
        for port in ports.iter().filter(|p| !p.is_gone()) {
            if port.device().is_present() {
                port.refresh_mtu();
            } else {
                shared.remove_port(port, &"interface deleted");
            }
        }
    }
}

/// What reading a port's queue ended with.
enum Drain {
    /// The batch filled up: more may be waiting.
    More,
    /// The device had nothing more (`WouldBlock`).
    Empty,
    /// The device failed for good.
    Failed(io::Error),
}

struct Worker {
    index: usize,
    shared: Arc<Shared>,
    /// The receive queues this worker polls, by token.
    ports: Vec<Option<RxQueue>>,
    poll: Poll,
    commands: crossbeam_channel::Receiver<WorkerCommand>,
    buffers: Vec<Vec<u8>>,
    lengths: [usize; BATCH],
    learn: Vec<LearnRequest>,
    events: Vec<TableEvent>,
    delays: DelayQueue,
}

impl Worker {
    fn new(
        index: usize,
        shared: Arc<Shared>,
        ports: Vec<RxQueue>,
        poll: Poll,
        commands: crossbeam_channel::Receiver<WorkerCommand>,
    ) -> Self {
        Worker {
            index,
            shared,
            ports: ports.into_iter().map(Some).collect(),
            poll,
            commands,
            buffers: (0..BATCH).map(|_| vec![0u8; MAX_FRAME]).collect(),
            lengths: [0; BATCH],
            learn: Vec::with_capacity(BATCH),
            events: Vec::new(),
            delays: DelayQueue::default(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut ready: VecDeque<usize> = VecDeque::new();
        let mut queued = vec![false; self.ports.len()];
        let mut last_work = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let spinning =
                !self.shared.busy_poll.is_zero() && last_work.elapsed() < self.shared.busy_poll;
            let next_release = self.release_delayed();
            let timeout = if !ready.is_empty() || spinning {
                Some(Duration::ZERO)
            } else {
                next_release
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "epoll failed; worker stops");
                return;
            }
            let woke = Instant::now();
            if !events.is_empty() {
                last_work = woke;
            }
            for command in self.commands.try_iter().collect::<Vec<_>>() {
                self.apply(command);
                queued.resize(self.ports.len(), false);
            }
            for event in events.iter() {
                let i = event.token().0;
                if event.token() != WAKER && !queued[i] {
                    queued[i] = true;
                    ready.push_back(i);
                }
            }
            // Serve each ready port one batch per round, so a busy port can't starve the others.
            for _ in 0..ready.len() {
                let Some(i) = ready.pop_front() else { break };
                queued[i] = false;
                let Some(rxq) = self.ports[i].clone() else {
                    continue;
                };
                let port = &rxq.port;
                let outcome = if port.is_gone() {
                    Drain::Failed(io::Error::other("removed"))
                } else {
                    self.serve(port, rxq.queue)
                };
                match outcome {
                    Drain::More => {
                        queued[i] = true;
                        ready.push_back(i);
                    }
                    Drain::Empty => {}
                    Drain::Failed(error) => {
                        let fd = rxq.fd();
                        if let Err(e) = self.poll.registry().deregister(&mut SourceFd(&fd)) {
                            tracing::debug!(error = %e, "deregister failed");
                        }
                        self.ports[i] = None;
                        self.shared.remove_port(port, &error);
                    }
                }
            }
            if !events.is_empty() || !ready.is_empty() {
                let busy = u64::try_from(woke.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.shared.busy_nanos[self.index].fetch_add(busy, Ordering::Relaxed);
            }
        }
    }

    /// Starts or stops polling a port.
    fn apply(&mut self, command: WorkerCommand) {
        match command {
            WorkerCommand::Add(rxq) => {
                let token = Token(self.ports.len());
                let fd = rxq.fd();
                match self
                    .poll
                    .registry()
                    .register(&mut SourceFd(&fd), token, Interest::READABLE)
                {
                    Ok(()) => self.ports.push(Some(rxq)),
                    Err(e) => {
                        tracing::error!(port = rxq.port.name(), error = %e, "couldn't poll the new port");
                        self.shared.remove_port(&rxq.port, &e);
                    }
                }
            }
            WorkerCommand::Remove(id) => {
                for slot in &mut self.ports {
                    if slot.as_ref().is_some_and(|q| q.port.id() == id)
                        && let Some(rxq) = slot.take()
                    {
                        let fd = rxq.fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    }
                }
            }
        }
    }

    /// Reads one batch from `port` and forwards it.
    ///
    /// Every buffer is laid out as `[virtio-net header | frame]`: devices with offloads read
    /// both at once; others read the frame behind a zeroed header. So a frame can go out to
    /// either kind of device from the same buffer without copying.
    fn serve(&mut self, port: &Port, queue: usize) -> Drain {
        let vnet = port.device().vnet_header();
        let mut count = 0;
        let mut outcome = Drain::More;
        while count < BATCH {
            let buf = &mut self.buffers[count];
            let read = if vnet {
                port.device().recv_queue(queue, buf)
            } else {
                buf[..VNET_HDR_LEN].fill(0);
                port.device()
                    .recv_queue(queue, &mut buf[VNET_HDR_LEN..])
                    .map(|n| n + VNET_HDR_LEN)
            };
            match read {
                Ok(len) if len < VNET_HDR_LEN => {
                    port.counters().count_rx(len);
                    port.counters().count_drop(DropReason::Runt);
                }
                Ok(len) => {
                    port.counters().count_rx(len - VNET_HDR_LEN);
                    port.capture_tap()
                        .offer(Direction::In, &buf[VNET_HDR_LEN..len]);
                    self.lengths[count] = len;
                    count += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    outcome = Drain::Empty;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    outcome = Drain::Failed(e);
                    break;
                }
            }
        }
        if count > 0 {
            self.forward(port, count);
        }
        outcome
    }

    /// Decides and transmits the first `count` buffered frames, then applies learning.
    fn forward(&mut self, in_port: &Port, count: usize) {
        let now = self.shared.now();
        {
            let state = self.shared.read();
            let mut ctx = Ctx {
                shared: &self.shared,
                state: &state,
                now,
                learn: &mut self.learn,
                delays: &mut self.delays,
            };
            for (buf, &len) in self.buffers.iter_mut().zip(&self.lengths[..count]) {
                forward_frame(&mut ctx, in_port, &mut buf[..len], true);
            }
        }
        self.apply_learning(now);
    }

    /// Sends on the frames whose delay is over; returns how long until the next one is due.
    fn release_delayed(&mut self) -> Option<Duration> {
        let now = self.shared.now();
        if self.delays.peek().is_some_and(|d| d.release <= now) {
            {
                let state = self.shared.read();
                let mut due = Vec::new();
                while self.delays.peek().is_some_and(|d| d.release <= now) {
                    if let Some(d) = self.delays.pop() {
                        due.push(d);
                    }
                }
                let mut ctx = Ctx {
                    shared: &self.shared,
                    state: &state,
                    now,
                    learn: &mut self.learn,
                    delays: &mut self.delays,
                };
                for mut d in due {
                    let port = state.ports.get(d.port.index()).cloned().flatten();
                    match (port, d.hook) {
                        (Some(p), Hook::Ingress) => forward_frame(&mut ctx, &p, &mut d.data, false),
                        (Some(p), Hook::Egress) => transmit(&mut ctx, &p, &mut d.data, false),
                        (None, _) => {}
                    }
                }
            }
            self.apply_learning(now);
        }
        self.delays
            .peek()
            .map(|d| d.release.saturating_since(self.shared.now()))
    }

    fn apply_learning(&mut self, now: Timestamp) {
        if self.learn.is_empty() {
            return;
        }
        {
            let mut state = self.shared.write();
            for req in self.learn.drain(..) {
                // A port removed meanwhile must not get entries back.
                if state
                    .ports
                    .get(req.port.index())
                    .is_some_and(Option::is_some)
                {
                    state.table.learn(req.key, req.port, now, &mut self.events);
                }
            }
        }
        self.shared.count_events(&mut self.events);
    }
}

/// A frame held back by a pipeline (delay or shaping) until `release`.
#[derive(Debug)]
struct Delayed {
    release: Timestamp,
    seq: u64,
    port: PortId,
    hook: Hook,
    /// `[virtio-net header | frame]`.
    data: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.seq) == (other.release, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    /// Reversed, so that `BinaryHeap` pops the earliest release first (and in order of arrival
    /// among equal ones).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.release, other.seq).cmp(&(self.release, self.seq))
    }
}

/// A worker's queue of delayed frames.
#[derive(Debug, Default)]
struct DelayQueue {
    heap: BinaryHeap<Delayed>,
    seq: u64,
}

/// Most frames one worker holds back; past that, delayed frames are dropped (and counted), so a
/// long delay on a busy port can't eat the machine's memory.
const MAX_DELAYED: usize = 100_000;

impl DelayQueue {
    fn push(&mut self, release: Timestamp, port: &Port, hook: Hook, data: Vec<u8>) {
        if self.heap.len() >= MAX_DELAYED {
            port.counters().count_drop(DropReason::Pipeline);
            return;
        }
        let port = port.id();
        self.seq += 1;
        self.heap.push(Delayed {
            release,
            seq: self.seq,
            port,
            hook,
            data,
        });
    }

    fn peek(&self) -> Option<&Delayed> {
        self.heap.peek()
    }

    fn pop(&mut self) -> Option<Delayed> {
        self.heap.pop()
    }
}

/// What a frame's journey through the switch needs at hand.
struct Ctx<'a> {
    shared: &'a Shared,
    state: &'a State,
    now: Timestamp,
    learn: &'a mut Vec<LearnRequest>,
    delays: &'a mut DelayQueue,
}

/// Runs the mirror copies a pipeline asked for.
fn mirror_to(state: &State, target: &str, buf: &mut [u8]) {
    if let Some(port) = state.ports.iter().flatten().find(|p| p.name() == target) {
        send(port, buf);
    }
}

/// Whether `frame` is unicast to a destination the learning table doesn't know (so it floods).
/// Only asked when a pipeline runs, for storm control.
fn unknown_unicast(ctx: &Ctx<'_>, frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    let dst = eth.dst();
    matches!(ctx.shared.forwarder, Forwarder::Learning(_))
        && !dst.is_multicast()
        && ctx
            .state
            .table
            .lookup(FdbKey::untagged(dst), ctx.now)
            .is_none()
}

/// Runs `port`'s pipeline for `hook` on the frame in `buf`: makes the mirror copies, counts a
/// drop, queues a delayed frame (twice if duplicated). Returns what is left to do now, or `None`
/// when the frame was dropped or delayed. A corrupted frame comes back as a copy in `corrupted`.
fn through_pipeline(
    ctx: &mut Ctx<'_>,
    port: &Port,
    hook: Hook,
    buf: &[u8],
    corrupted: &mut Option<Vec<u8>>,
) -> Option<Outcome> {
    let mut copies: Vec<String> = Vec::new();
    let frame = &buf[VNET_HDR_LEN..];
    let unknown = unknown_unicast(ctx, frame);
    let outcome = port
        .pipeline(hook)
        .process(ctx.now, frame, unknown, |MirrorCopy::Port(name)| {
            copies.push(name.to_owned())
        });
    for name in &copies {
        mirror_to(ctx.state, name, &mut buf.to_vec());
    }
    if !outcome.pass {
        port.counters().count_drop(DropReason::Pipeline);
        return None;
    }
    if let Some((offset, bit)) = outcome.corrupt
        && VNET_HDR_LEN + offset < buf.len()
    {
        let mut frame = buf.to_vec();
        frame[VNET_HDR_LEN + offset] ^= 1 << bit;
        *corrupted = Some(frame);
    }
    if !outcome.delay.is_zero() {
        let release = ctx.now + outcome.delay;
        let frame = corrupted.take().unwrap_or_else(|| buf.to_vec());
        if outcome.duplicate {
            ctx.delays.push(release, port, hook, frame.clone());
        }
        ctx.delays.push(release, port, hook, frame);
        return None;
    }
    Some(outcome)
}

/// Takes the frame in `buf` (`[virtio-net header | frame]`), received on `in_port`, through the
/// port's ingress pipeline (if `run_ingress`: not for a frame the pipeline already delayed), the
/// forwarding decision and out to its egress ports.
fn forward_frame(ctx: &mut Ctx<'_>, in_port: &Port, buf: &mut [u8], run_ingress: bool) {
    if run_ingress && in_port.pipeline(Hook::Ingress).is_active() {
        let mut corrupted = None;
        let Some(outcome) = through_pipeline(ctx, in_port, Hook::Ingress, buf, &mut corrupted)
        else {
            return;
        };
        if let Some(frame) = corrupted {
            // Corrupted on the way in: every egress port gets the damaged frame.
            buf.copy_from_slice(&frame);
        }
        if outcome.duplicate {
            let mut twin = buf.to_vec();
            forward_frame(ctx, in_port, &mut twin, false);
        }
    }
    let frame = &buf[VNET_HDR_LEN..];
    let d = match &ctx.shared.forwarder {
        Forwarder::Learning(cfg) => decide(&ctx.state.table, cfg, ctx.now, in_port.id(), frame),
        Forwarder::Macvlan(table) => table.dispatch(in_port.id(), frame),
    };
    ctx.learn.extend(d.learn);
    let state = ctx.state;
    match d.egress {
        Egress::Drop(reason) => in_port.counters().count_drop(reason),
        Egress::Port(out) => {
            if let Some(Some(out)) = state.ports.get(out.index()) {
                transmit(ctx, out, buf, true);
            }
        }
        Egress::Flood => {
            for out in state.ports.iter().flatten() {
                if out.id() != in_port.id() {
                    transmit(ctx, out, buf, true);
                }
            }
        }
        Egress::FloodExcept(skip) => {
            for out in state.ports.iter().flatten() {
                if out.id() != in_port.id() && out.id() != skip {
                    transmit(ctx, out, buf, true);
                }
            }
        }
        Egress::Group(group) => {
            if let Forwarder::Macvlan(table) = &ctx.shared.forwarder {
                for id in table.group(group) {
                    if let Some(Some(out)) = state.ports.get(id.index()) {
                        transmit(ctx, out, buf, true);
                    }
                }
            }
        }
    }
}

/// Takes the frame in `buf` through `out`'s egress pipeline (if `run_egress`) and sends it.
fn transmit(ctx: &mut Ctx<'_>, out: &Port, buf: &mut [u8], run_egress: bool) {
    if run_egress && out.pipeline(Hook::Egress).is_active() {
        let mut corrupted = None;
        let Some(outcome) = through_pipeline(ctx, out, Hook::Egress, buf, &mut corrupted) else {
            return;
        };
        // A corrupted copy: the same buffer may still go to other ports of a flood.
        let buf: &mut [u8] = corrupted.as_deref_mut().unwrap_or(buf);
        if outcome.duplicate {
            send(out, buf);
        }
        send(out, buf);
        return;
    }
    send(out, buf);
}

/// Sends the frame in `buf` (`[virtio-net header | frame]`) out of `out`, counting the outcome
/// on it. For a device without offloads, a partial checksum is finished first (in place, and
/// the header updated, so later ports of a flood see a complete frame).
fn send(out: &Port, buf: &mut [u8]) {
    let Some(vnet) = VnetHeader::parse(buf) else {
        return;
    };
    let frame_len = buf.len() - VNET_HDR_LEN;
    if !fits_mtu(&buf[VNET_HDR_LEN..], &vnet, out.mtu()) {
        out.counters().count_drop(DropReason::Oversize);
        return;
    }
    let wire = if out.device().vnet_header() {
        &buf[..]
    } else {
        if vnet.is_gso() {
            out.counters().count_drop(DropReason::GsoUnsupported);
            return;
        }
        if vnet.needs_csum() {
            let (header, frame) = buf.split_at_mut(VNET_HDR_LEN);
            if complete_checksum(frame, &vnet) {
                header[0] = (vnet.flags & !F_NEEDS_CSUM) | F_DATA_VALID;
            }
        }
        &buf[VNET_HDR_LEN..]
    };
    match out.device().send(wire) {
        Ok(()) => {
            out.counters().count_tx(frame_len);
            out.capture_tap()
                .offer(Direction::Out, &wire[wire.len() - frame_len..]);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            out.counters().count_drop(DropReason::EgressQueueFull)
        }
        // A TAP whose interface is down answers EIO.
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {
            out.counters().count_drop(DropReason::LinkDown)
        }
        Err(e) => {
            out.counters().count_drop(DropReason::IoError);
            tracing::trace!(port = out.name(), error = %e, "send failed");
        }
    }
}
