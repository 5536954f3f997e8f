//! Starting a switch: the port table, the forwarder, the fast path, one worker per share of the
//! receive queues, and the housekeeper.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token, Waker};
use vswitch_core::{MacTable, MacvlanMode, MacvlanTable, TableCounters};

use crate::port::{Port, PortDevice, Steering};

use super::ports::PortTable;
use super::shared::{Forwarder, Shared, State};
use super::worker::{RxQueue, Worker, WorkerHandle};
use super::{
    Datapath, MacvlanConfig, Switch, SwitchConfig, SwitchError, WAKER, affinity, housekeeping,
    lock, vlan_drop_counters,
};

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
        let table = PortTable::new(ports);
        let ports: Vec<Arc<Port>> = table.attached().cloned().collect();
        let forwarder = match &config.macvlan {
            None => Forwarder::Learning(config.forwarding),
            Some(m) => Forwarder::Macvlan(RwLock::new(macvlan_table(m, &ports)?)),
        };
        let queues: usize = ports.iter().map(|p| p.capabilities().rx_queues).sum();
        let threads = config.threads.clamp(1, queues.max(1));
        let pinned = config.steering == Steering::Cpu && owns_cpus(threads);
        let fast_allowed = match (config.datapath, &forwarder) {
            (Datapath::Auto | Datapath::ClsBpf, Forwarder::Learning(_)) => {
                Some(config.datapath == Datapath::ClsBpf)
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                table: MacTable::new(config.table.clone()),
                ports: table,
            }),
            forwarder,
            busy_nanos: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            busy_poll: config.busy_poll,
            steering: config.steering,
            table_counters: TableCounters::default(),
            epoch: Instant::now(),
            epoch_ns: crate::steering_clock_ns(),
            fast: OnceLock::new(),
            fast_allowed: Mutex::new(fast_allowed),
            harvesting: Mutex::new(()),
            vlan_drops: vlan_drop_counters(),
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
            for queue in 0..port.capabilities().rx_queues {
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
        let (tx, rx) = std::sync::mpsc::channel();
        let hk_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("vswitch-housekeeping".into())
            .spawn(move || housekeeping::run(&hk_shared, &rx))
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
                .capabilities()
                .mac
                .ok_or_else(|| SwitchError::NoMac(port.name().to_owned()))?;
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

/// The worker that serves receive queue `queue` of the `nth` port. Steered by CPU, queue `q`
/// carries what CPU `q` sent, so worker `q` (pinned to CPU `q`) takes it; otherwise ports spread
/// over the workers, and the queues of a multi-queue port over different ones.
pub(super) fn queue_worker(by_cpu: bool, nth: usize, queue: usize, threads: usize) -> usize {
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
