//! The way of one frame through the switch: ingress pipeline, forwarding decision, egress
//! pipeline, send; and the queue of frames a pipeline holds back.

use std::cell::RefCell;
use std::collections::BinaryHeap;
use std::io;
use std::sync::atomic::Ordering;

use vswitch_core::forward::{Scope, decide, decide_in};
use vswitch_core::pipeline::corrupt_on_the_wire;
use vswitch_core::vlan::{self, EgressTag, Ingress, TPID_8021Q};
use vswitch_core::vnet::complete_checksum;
use vswitch_core::{
    DropReason, Egress, FdbKey, FrameView, LearnRequest, MacAddr, Outcome, PortId, PortPolicy,
    Timestamp, VNET_HDR_LEN, VlanId, insert_vlan_tag, remove_vlan_tag,
};

use crate::capture::Direction;
use crate::pipeline::{Hook, MirrorCopy};
use crate::port::Port;

use super::shared::{Forwarder, Shared, State};

/// A frame held back by a pipeline (delay or shaping) until `release`.
#[derive(Debug)]
pub(super) struct Delayed {
    pub(super) release: Timestamp,
    pub(super) seq: u64,
    pub(super) port: PortId,
    pub(super) hook: Hook,
    /// `[virtio-net header | frame]`.
    pub(super) data: Vec<u8>,
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
pub(super) struct DelayQueue {
    heap: BinaryHeap<Delayed>,
    seq: u64,
    /// Bytes of frames held (their buffers' capacity).
    bytes: usize,
}

/// Most frames one worker holds back; past that, delayed frames are dropped (and counted), so a
/// long delay on a busy port can't eat the machine's memory.
const MAX_DELAYED: usize = 100_000;
/// Most bytes one worker holds back: 64 KiB GSO frames reach it long before the frame count.
pub(super) const MAX_DELAYED_BYTES: usize = 256 << 20;

impl DelayQueue {
    fn push(&mut self, release: Timestamp, port: &Port, hook: Hook, data: Vec<u8>) {
        if self.heap.len() >= MAX_DELAYED || self.bytes + data.capacity() > MAX_DELAYED_BYTES {
            port.counters().count_drop(DropReason::Pipeline);
            return;
        }
        self.bytes += data.capacity();
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

    pub(super) fn peek(&self) -> Option<&Delayed> {
        self.heap.peek()
    }

    pub(super) fn pop(&mut self) -> Option<Delayed> {
        let delayed = self.heap.pop()?;
        self.bytes -= delayed.data.capacity();
        Some(delayed)
    }

    /// Bytes of frames held.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What a frame's journey through the switch needs at hand.
pub(super) struct Ctx<'a> {
    pub(super) shared: &'a Shared,
    pub(super) state: &'a State,
    pub(super) now: Timestamp,
    pub(super) learn: &'a mut Vec<LearnRequest>,
    pub(super) delays: &'a mut DelayQueue,
}

/// Runs the mirror copies a pipeline asked for.
fn mirror_to(state: &State, target: &str, buf: &[u8], view: &FrameView) {
    if let Some(port) = state.ports.live_ports().find(|p| p.name() == target) {
        send(port, &mut buf.to_vec(), &mut view.clone());
    }
}

/// Whether the frame is unicast to a destination the learning table doesn't know (so it
/// floods). Only asked when a pipeline runs, for storm control.
fn unknown_unicast(ctx: &Ctx<'_>, view: &FrameView) -> bool {
    let dst = view.dst();
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
/// when the frame was dropped or delayed. A corrupted frame comes back in `corrupted` as the
/// frames to send in its place ([`corrupt_on_the_wire`]: checksums final, GSO cut).
fn through_pipeline(
    ctx: &mut Ctx<'_>,
    port: &Port,
    hook: Hook,
    buf: &[u8],
    view: &FrameView,
    corrupted: &mut Option<Vec<Vec<u8>>>,
) -> Option<Outcome> {
    let mut copies: Vec<String> = Vec::new();
    let frame = &buf[VNET_HDR_LEN..];
    let unknown = port.pipeline(hook).needs_unknown_unicast() && unknown_unicast(ctx, view);
    let outcome = port
        .pipeline(hook)
        .process(ctx.now, frame, unknown, |MirrorCopy::Port(name)| {
            copies.push(name.to_owned())
        });
    for name in &copies {
        mirror_to(ctx.state, name, buf, view);
    }
    if !outcome.pass {
        port.counters().count_drop(DropReason::Pipeline);
        return None;
    }
    if let Some((offset, bit)) = outcome.corrupt
        && VNET_HDR_LEN + offset < buf.len()
    {
        *corrupted = Some(corrupt_on_the_wire(buf, view, offset, bit));
    }
    if !outcome.delay.is_zero() {
        let release = ctx.now + outcome.delay;
        let frames = corrupted.take().unwrap_or_else(|| vec![buf.to_vec()]);
        for frame in frames {
            if outcome.duplicate {
                ctx.delays.push(release, port, hook, frame.clone());
            }
            ctx.delays.push(release, port, hook, frame);
        }
        return None;
    }
    Some(outcome)
}

/// Takes the frame in `buf` (`[virtio-net header | frame]`), received on `in_port`, through the
/// port's ingress pipeline (if `run_ingress`: not for a frame the pipeline already delayed), the
/// forwarding decision and out to its egress ports. The frame is viewed here, once; a runt goes
/// no further.
pub(super) fn forward_frame(ctx: &mut Ctx<'_>, in_port: &Port, buf: &mut [u8], run_ingress: bool) {
    match FrameView::parse(buf) {
        Ok(mut view) => forward_viewed(ctx, in_port, buf, &mut view, run_ingress),
        Err(_) => in_port.counters().count_drop(DropReason::Runt),
    }
}

/// [`forward_frame`] for a frame viewed already.
fn forward_viewed(
    ctx: &mut Ctx<'_>,
    in_port: &Port,
    buf: &mut [u8],
    view: &mut FrameView,
    run_ingress: bool,
) {
    if run_ingress && in_port.pipeline(Hook::Ingress).is_active() {
        let mut corrupted = None;
        let Some(outcome) =
            through_pipeline(ctx, in_port, Hook::Ingress, buf, view, &mut corrupted)
        else {
            return;
        };
        if let Some(frames) = corrupted {
            // Corrupted on the way in: every egress port gets the damaged frames.
            for _ in 0..if outcome.duplicate { 2 } else { 1 } {
                for frame in &frames {
                    forward_frame(ctx, in_port, &mut frame.clone(), false);
                }
            }
            return;
        }
        if outcome.duplicate {
            let mut twin = buf.to_vec();
            forward_viewed(ctx, in_port, &mut twin, &mut view.clone(), false);
        }
    }
    let state = ctx.state;
    let policy = state.ports.policy(in_port.id());
    if let Forwarder::Learning(cfg) = &ctx.shared.forwarder
        && !policy.is_default()
    {
        return forward_in_vlan(ctx, in_port, policy, cfg, buf, view);
    }
    let d = match &ctx.shared.forwarder {
        Forwarder::Learning(cfg) => decide(&ctx.state.table, cfg, ctx.now, in_port.id(), view),
        Forwarder::Macvlan(table) => table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .dispatch(in_port.id(), view),
    };
    ctx.learn.extend(d.learn);
    match d.egress {
        Egress::Drop(reason) => in_port.counters().count_drop(reason),
        Egress::Port(out) => {
            if let Some(out) = state.ports.live(out) {
                if state.ports.policy(out.id()).is_default() {
                    transmit(ctx, out, buf, view, true);
                } else {
                    to_port_in_vlan(ctx, out, buf, view, VlanId::UNTAGGED, TPID_8021Q);
                }
            }
        }
        Egress::Flood => {
            for out in state.ports.live_ports() {
                if out.id() != in_port.id() {
                    if state.ports.policy(out.id()).is_default() {
                        transmit(ctx, out, buf, view, true);
                    } else if flood_reaches(state, in_port.id(), out.id(), view.dst()) {
                        to_port_in_vlan(ctx, out, buf, view, VlanId::UNTAGGED, TPID_8021Q);
                    }
                }
            }
        }
        Egress::FloodExcept(skip) => {
            for out in state.ports.live_ports() {
                if out.id() != in_port.id() && out.id() != skip {
                    transmit(ctx, out, buf, view, true);
                }
            }
        }
        Egress::Group(group) => {
            if let Forwarder::Macvlan(table) = &ctx.shared.forwarder {
                let members = table
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .group(group)
                    .to_vec();
                for id in members {
                    if let Some(out) = state.ports.live(id) {
                        transmit(ctx, out, buf, view, true);
                    }
                }
            }
        }
    }
}

/// Whether a flooded frame from `in_port` may go out of `out` by the ports' flags: isolated
/// ports don't reach each other, and a port can refuse unknown unicast, multicast or broadcast.
fn flood_reaches(state: &State, in_port: PortId, out: PortId, dst: MacAddr) -> bool {
    let (from, to) = (
        state.ports.policy(in_port).flags,
        state.ports.policy(out).flags,
    );
    if from.isolated && to.isolated {
        return false;
    }
    if dst.is_broadcast() {
        to.bcast_flood
    } else if dst.is_multicast() {
        to.mcast_flood
    } else {
        to.flood
    }
}

/// [`forward_frame`] for a port with a VLAN mode or flags: classify the frame into its VLAN
/// (taking a trunk's tag off), decide within that VLAN, and send it to the VLAN's members, each
/// in the form its mode asks.
fn forward_in_vlan(
    ctx: &mut Ctx<'_>,
    in_port: &Port,
    policy: &PortPolicy,
    cfg: &vswitch_core::ForwardingConfig,
    buf: &mut [u8],
    view: &mut FrameView,
) {
    let (vlan, tpid, stripped) = match vlan::classify(&policy.vlan, &buf[VNET_HDR_LEN..]) {
        Ingress::Drop(reason) => {
            in_port.counters().count_drop(reason);
            let vid = vlan::outer_tag(&buf[VNET_HDR_LEN..]).map_or(0, |(_, vid)| vid.get());
            if let Some(n) = ctx.shared.vlan_drops.get(usize::from(vid)) {
                n.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        Ingress::Member { vlan, strip, tpid } => {
            let stripped = if strip {
                // With its tag taken out, it is a new frame, viewed anew.
                let view = remove_vlan_tag(buf, buf.len())
                    .and_then(|len| Some((len, FrameView::parse(&buf[..len]).ok()?)));
                let Some(stripped) = view else {
                    in_port.counters().count_drop(DropReason::Runt);
                    return;
                };
                Some(stripped)
            } else {
                None
            };
            (vlan, tpid, stripped)
        }
    };
    let mut untagged;
    let (buf, view) = match stripped {
        Some((len, v)) => {
            untagged = v;
            (&mut buf[..len], &mut untagged)
        }
        None => (buf, view),
    };
    let scope = Scope {
        vlan,
        no_learning: !policy.flags.learning,
        hairpin: policy.flags.hairpin,
    };
    let d = decide_in(&ctx.state.table, cfg, ctx.now, in_port.id(), view, &scope);
    ctx.learn.extend(d.learn);
    let state = ctx.state;
    match d.egress {
        Egress::Drop(reason) => in_port.counters().count_drop(reason),
        Egress::Port(out) => {
            let isolated = policy.flags.isolated && state.ports.policy(out).flags.isolated;
            if let Some(out) = state.ports.live(out) {
                if isolated {
                    in_port.counters().count_drop(DropReason::Filtered);
                } else {
                    to_port_in_vlan(ctx, out, buf, view, vlan, tpid);
                }
            }
        }
        _ => {
            for out in state.ports.live_ports() {
                let back = out.id() == in_port.id();
                if (!back || policy.flags.hairpin)
                    && flood_reaches(state, in_port.id(), out.id(), view.dst())
                {
                    to_port_in_vlan(ctx, out, buf, view, vlan, tpid);
                }
            }
        }
    }
}

/// Sends a frame of `vlan` (as it is inside the switch) out of `out` if `out` is a member,
/// tagged or not as `out`'s mode says.
fn to_port_in_vlan(
    ctx: &mut Ctx<'_>,
    out: &Port,
    buf: &mut [u8],
    view: &mut FrameView,
    vlan: VlanId,
    tpid: u16,
) {
    match vlan::egress(&ctx.state.ports.policy(out.id()).vlan, vlan, tpid) {
        EgressTag::NotMember => {}
        EgressTag::Untagged => transmit(ctx, out, buf, view, true),
        EgressTag::Tagged(tpid) => TAGGED.with_borrow_mut(|tagged| {
            // A copy per tagging port (a flood leaves the others' copy untouched), in a
            // buffer the worker keeps: nothing from `transmit` on comes back here.
            tagged.clear();
            tagged.extend_from_slice(buf);
            tagged.extend_from_slice(&[0; 4]);
            if let Some(len) = insert_vlan_tag(tagged, buf.len(), tpid, vlan.get())
                && let Ok(mut tagged_view) = FrameView::parse(&tagged[..len])
            {
                transmit(ctx, out, &mut tagged[..len], &mut tagged_view, true);
            }
        }),
    }
}

/// Takes the frame in `buf`, viewed as `view`, through `out`'s egress pipeline (if
/// `run_egress`) and sends it.
pub(super) fn transmit(
    ctx: &mut Ctx<'_>,
    out: &Port,
    buf: &mut [u8],
    view: &mut FrameView,
    run_egress: bool,
) {
    if run_egress && out.pipeline(Hook::Egress).is_active() {
        let mut corrupted = None;
        let Some(outcome) = through_pipeline(ctx, out, Hook::Egress, buf, view, &mut corrupted)
        else {
            return;
        };
        let sends = if outcome.duplicate { 2 } else { 1 };
        match corrupted {
            // Damaged copies: the same buffer may still go to other ports of a flood.
            Some(mut frames) => {
                for _ in 0..sends {
                    for frame in &mut frames {
                        if let Ok(mut damaged) = FrameView::parse(frame) {
                            send(out, frame, &mut damaged);
                        }
                    }
                }
            }
            None => {
                for _ in 0..sends {
                    send(out, buf, view);
                }
            }
        }
        return;
    }
    send(out, buf, view);
}

thread_local! {
    /// The segment being built when a worker cuts a GSO frame in software: one buffer per
    /// worker, reused, so segmentation allocates nothing in steady state.
    static SEGMENT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A frame with a VLAN tag put in for one trunk port, reused likewise.
    static TAGGED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Sends the frame in `buf` (`[virtio-net header | frame]`, viewed as `view`) out of `out`,
/// counting the outcome on it, in the form the device takes:
/// - a device with virtio-net headers gets the frame as it is, GSO included; a TCP GSO frame cut
///   for a larger MTU than `out`'s gets a smaller `gso_size`, and the kernel cuts it to fit;
/// - a device without gets wire-sized frames: a GSO frame is segmented in software, a partial
///   checksum finished (in place, and the header updated, so later ports of a flood see a
///   complete frame).
fn send(out: &Port, buf: &mut [u8], view: &mut FrameView) {
    let mtu = out.mtu();
    let vnet = *view.vnet();
    if vnet.is_gso() {
        send_gso(out, buf, view, mtu);
        return;
    }
    let fits = view.fits_mtu(mtu) || (out.mtu_grew() && view.fits_mtu(out.mtu()));
    if !fits {
        out.counters().count_drop(DropReason::Oversize);
        return;
    }
    if out.capabilities().tx_vnet_header {
        write(out, buf, VNET_HDR_LEN);
        return;
    }
    if vnet.needs_csum() {
        let (header, frame) = buf.split_at_mut(VNET_HDR_LEN);
        if complete_checksum(frame, &vnet) {
            view.checksum_finished();
            header[0] = view.vnet().flags;
        }
    }
    write(out, &buf[VNET_HDR_LEN..], 0);
}

/// [`send`] for a GSO frame, whose headers the view found: for the MTU check, the re-cut
/// size and the segmentation.
fn send_gso(out: &Port, buf: &mut [u8], view: &FrameView, mtu: u32) {
    let g = match view.gso(&buf[VNET_HDR_LEN..]) {
        Some(Ok(g)) => g,
        None => return,
        Some(Err(e)) => {
            out.counters().count_drop(DropReason::GsoUnsupported);
            tracing::trace!(port = out.name(), error = %e, "unusable GSO frame");
            return;
        }
    };
    // `None`: the sender's segments fit; else the TCP payload per segment that does.
    let limit = if g.segment_len() <= mtu as usize {
        None
    } else if let Some(mss) = g.tcp_mss_for_mtu(mtu) {
        Some(mss)
    } else {
        out.counters().count_drop(DropReason::Oversize);
        return;
    };
    if !out.capabilities().tx_vnet_header {
        SEGMENT.with_borrow_mut(|scratch| g.segment(limit, scratch, |seg| write(out, seg, 0)));
        return;
    }
    match limit {
        None => write(out, buf, VNET_HDR_LEN),
        Some(mss) => {
            // The kernel cuts to `gso_size`: tell it the smaller one, then put the sender's back
            // for the other ports of a flood.
            let sender_size = [buf[4], buf[5]];
            buf[4..6].copy_from_slice(&mss.to_le_bytes());
            write(out, buf, VNET_HDR_LEN);
            buf[4..6].copy_from_slice(&sender_size);
        }
    }
}

/// Writes `wire` (a frame behind `header_len` bytes of virtio-net header) to `out`'s device and
/// counts the outcome.
fn write(out: &Port, wire: &[u8], header_len: usize) {
    let frame = &wire[header_len..];
    match out.device().send(wire) {
        Ok(()) => {
            out.counters().count_tx(frame.len());
            out.capture_tap().offer(Direction::Out, frame);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            out.counters().count_drop(DropReason::EgressQueueFull)
        }
        // A TAP whose interface is down answers EIO, a packet socket ENETDOWN.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::ENETDOWN)) => {
            out.counters().count_drop(DropReason::LinkDown)
        }
        // Too long for the device after all: a packet socket lets only an 802.1Q tag ride
        // beyond the MTU, not an 802.1ad one (a QinQ provider link needs MTU 1504).
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
            out.counters().count_drop(DropReason::Oversize)
        }
        Err(e) => {
            out.counters().count_drop(DropReason::IoError);
            tracing::trace!(port = out.name(), error = %e, "send failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delayed_frames_are_bounded_in_bytes_and_the_excess_counted() {
        let (device, _peer) = crate::MemoryPort::pair(1500).expect("socketpair");
        let port = Port::new(PortId(0), "mem0".into(), Box::new(device));
        let mut queue = DelayQueue::default();
        let gso_frame = 65_536;
        let fits = MAX_DELAYED_BYTES / gso_frame;
        for _ in 0..fits + 10 {
            queue.push(Timestamp::ZERO, &port, Hook::Egress, vec![0; gso_frame]);
        }
        assert_eq!(queue.heap.len(), fits, "far fewer than the frame limit");
        assert!(queue.bytes() <= MAX_DELAYED_BYTES);
        assert_eq!(port.counters().snapshot().drops(DropReason::Pipeline), 10);
        while queue.pop().is_some() {}
        assert_eq!(queue.bytes(), 0, "released frames give their bytes back");
    }
}
