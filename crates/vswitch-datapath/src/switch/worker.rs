//! A worker thread: polls its receive queues, reads batches, hands them to the frame path, and
//! releases delayed frames when they are due.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::os::fd::AsRawFd;

use vswitch_core::{
    DropReason, FrameView, LearnRequest, PortId, TableEvent, Timestamp, VNET_HDR_LEN,
};

use crate::capture::Direction;
use crate::pipeline::Hook;
use crate::port::Port;

use super::affinity::Affinity;
use super::frame_path::DelayQueue;
use super::frame_path::{Ctx, forward_frame, transmit};
use super::shared::Shared;
use super::{BATCH, MAX_FRAME, WAKER};

/// A change for a worker, sent over its channel and announced with its waker.
#[derive(Debug)]
pub(super) enum WorkerCommand {
    /// Start polling this receive queue.
    Add(RxQueue),
    /// Stop polling this port and let go of it.
    Remove(PortId),
}

/// One receive queue of a port: what a worker polls and reads.
#[derive(Debug, Clone)]
pub(super) struct RxQueue {
    pub(super) port: Arc<Port>,
    pub(super) queue: usize,
}

impl RxQueue {
    pub(super) fn fd(&self) -> std::os::fd::RawFd {
        self.port.device().fd(self.queue).as_raw_fd()
    }
}

/// A worker thread, as the [`Switch`](super::Switch) handle holds it.
#[derive(Debug)]
pub(super) struct WorkerHandle {
    pub(super) thread: std::thread::JoinHandle<()>,
    pub(super) waker: Arc<mio::Waker>,
    pub(super) commands: crossbeam_channel::Sender<WorkerCommand>,
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

pub(super) struct Worker {
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
    pub(super) fn new(
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

    /// Serves the worker's queues until the switch stops; `affinity`, under CPU steering, pins
    /// the thread to its CPU while its load is light.
    pub(super) fn run(mut self, mut affinity: Option<Affinity>) {
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
            } else if spinning {
                // Poll, but let whatever else wants this CPU (often the very application whose
                // frames we wait for) go first: two spinning workers on two cores otherwise
                // halve TCP throughput.
                std::thread::yield_now();
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
                        self.shared.port_gone(port, &error);
                    }
                }
            }
            if !events.is_empty() || !ready.is_empty() {
                let busy = woke.elapsed();
                let nanos = u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX);
                self.shared.busy_nanos[self.index].fetch_add(nanos, Ordering::Relaxed);
                if let Some(a) = &mut affinity {
                    a.account(woke + busy, busy);
                }
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
                        self.shared.port_gone(&rxq.port, &e);
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
        let vnet = port.capabilities().rx_vnet_header;
        let mut count = 0;
        let mut outcome = Drain::More;
        // When the read that found the queue empty began: every frame that entered the queue
        // before it has been read (and is forwarded below).
        let mut read_at = 0;
        while count < BATCH {
            let buf = &mut self.buffers[count];
            read_at = crate::steering_clock_ns();
            let read = if vnet {
                port.device().recv(queue, buf)
            } else {
                buf[..VNET_HDR_LEN].fill(0);
                port.device()
                    .recv(queue, &mut buf[VNET_HDR_LEN..])
                    .map(|n| n + VNET_HDR_LEN)
            };
            match read {
                Ok(len) => {
                    if self.received(port, count, len) {
                        count += 1;
                    }
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
        if matches!(outcome, Drain::Empty)
            && let Some(steering) = port.device().cpu_steering()
        {
            steering.queue_drained(queue, read_at);
        }
        outcome
    }

    /// Counts the `len` bytes just read into buffer `slot` and offers them to captures; false
    /// for a runt, which goes no further.
    fn received(&mut self, port: &Port, slot: usize, len: usize) -> bool {
        if len < VNET_HDR_LEN {
            port.counters().count_rx(len);
            port.counters().count_drop(DropReason::Runt);
            return false;
        }
        port.counters().count_rx(len - VNET_HDR_LEN);
        port.capture_tap()
            .offer(Direction::In, &self.buffers[slot][VNET_HDR_LEN..len]);
        self.lengths[slot] = len;
        true
    }

    /// Decides and transmits the first `count` buffered frames, then applies learning.
    fn forward(&mut self, in_port: &Port, count: usize) {
        let now = self.shared.now();
        with_ctx(
            &self.shared,
            &mut self.learn,
            &mut self.delays,
            now,
            |ctx| {
                for (buf, &len) in self.buffers.iter_mut().zip(&self.lengths[..count]) {
                    forward_frame(ctx, in_port, &mut buf[..len], true);
                }
            },
        );
        self.apply_learning(now);
    }

    /// Sends on the frames whose delay is over; returns how long until the next one is due.
    fn release_delayed(&mut self) -> Option<Duration> {
        let now = self.shared.now();
        if self.delays.peek().is_some_and(|d| d.release <= now) {
            with_ctx(
                &self.shared,
                &mut self.learn,
                &mut self.delays,
                now,
                |ctx| {
                    // A released frame may be delayed again (an egress stage after an ingress one),
                    // but never to `now` or earlier, so this ends.
                    while ctx.delays.peek().is_some_and(|d| d.release <= now) {
                        let Some(mut d) = ctx.delays.pop() else { break };
                        let port = ctx.state.ports.live(d.port).cloned();
                        match (port, d.hook) {
                            (Some(p), Hook::Ingress) => forward_frame(ctx, &p, &mut d.data, false),
                            (Some(p), Hook::Egress) => {
                                if let Ok(mut view) = FrameView::parse(&d.data) {
                                    transmit(ctx, &p, &mut d.data, &mut view, false);
                                }
                            }
                            (None, _) => {}
                        }
                    }
                },
            );
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
                if state.ports.live(req.port).is_some() {
                    state.table.learn(req.key, req.port, now, &mut self.events);
                }
            }
            self.shared.fast_learn(&self.events);
        }
        self.shared.count_events(&mut self.events);
    }
}

/// Runs `f` with what a frame's way through the switch needs, under one read lock of the
/// switch's state (the learning it asks for is applied by the caller, under the write lock).
fn with_ctx(
    shared: &Shared,
    learn: &mut Vec<LearnRequest>,
    delays: &mut DelayQueue,
    now: Timestamp,
    f: impl FnOnce(&mut Ctx<'_>),
) {
    let state = shared.read();
    f(&mut Ctx {
        shared,
        state: &state,
        now,
        learn,
        delays,
    });
}

/// A worker without a thread or queues: each frame handed to [`Injector::inject`] goes the way
/// a worker takes a frame it read, on the caller's thread. For the fuzz target (`fuzz/`), which
/// must reach the whole frame path deterministically.
#[doc(hidden)]
pub struct Injector(Worker);

impl Injector {
    pub(super) fn new(shared: Arc<Shared>) -> io::Result<Injector> {
        let (_, commands) = crossbeam_channel::bounded(0);
        Ok(Injector(Worker::new(
            0,
            shared,
            Vec::new(),
            Poll::new()?,
            commands,
        )))
    }

    /// Forwards `bytes` (`[virtio-net header | frame]`, as a device with offloads reads them;
    /// the header is zeroed for a port without) as if read on `port`, then sends on every
    /// delayed frame that is due.
    pub fn inject(&mut self, port: &Port, bytes: &[u8]) {
        let worker = &mut self.0;
        let len = bytes.len().min(MAX_FRAME);
        worker.buffers[0][..len].copy_from_slice(&bytes[..len]);
        if !port.capabilities().rx_vnet_header {
            worker.buffers[0][..len.min(VNET_HDR_LEN)].fill(0);
        }
        if worker.received(port, 0, len) {
            worker.forward(port, 1);
        }
        worker.release_delayed();
    }
}
