//! The in-kernel fast path for `dev:` ports: known unicast between two such ports is redirected
//! at tc ingress, never copied through the switch, as the kernel bridge would forward it.
//!
//! It is a cache of the switch's decisions, never a second brain. The switch keeps BPF maps
//! equal to its forwarding state: which MAC is behind which port ([`FastPath::set_mac`],
//! [`FastPath::sync_fdb`]) and which ports the fast path may serve ([`FastPath::set_port`]: not
//! one with a pipeline or a capture). Anything else (unknown unicast, broadcast, multicast, a
//! source not learned on its ingress port, a tagged frame, an egress port whose MTU is smaller
//! than the ingress port's) goes to the switch as before.
//!
//! Exactly once: a port's packet sockets see each frame before tc ingress does, on the same CPU,
//! for the same frame. So the decision is made once, by a socket filter on the port's sockets
//! ([`filter_program`]): for a frame it forwards, it leaves a per-CPU verdict (ingress, egress,
//! length) and keeps the frame from the socket; the tc program ([`classifier_program`]) that
//! runs next on that CPU finds the verdict for that very frame, consumes it, counts and
//! redirects. Every other frame reaches the socket and the classifier lets it pass. The two can
//! never disagree, whatever the switch changes in the maps between them.
//!
//! The filter also stamps the source MAC's entry with the time it was seen, so a station heard
//! only on the fast path is not aged out: housekeeping reads the stamps ([`FastPath::seen`]) into
//! the table, and the per-CPU counters ([`FastPath::harvest`]) into the ports' counters.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use vswitch_core::{MacAddr, PortId};
use vswitch_netns::Netlink;

use crate::bpf::{
    ADD64_IMM, ADD64_REG, Asm, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
    BPF_MAP_TYPE_PERCPU_HASH, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_SOCKET_FILTER, EXIT,
    FUNC_KTIME_GET_NS, FUNC_REDIRECT, JEQ_IMM, JEQ_REG, JLT_REG, JNE_IMM, JNE_REG, LDX_DW, LDX_W,
    MOV64_IMM, MOV64_REG, Map, R0, R1, R2, R6, R7, R8, R9, R10, ST_DW, ST_W, STX_DW, STX_W,
    attach_tcx_ingress, load_program,
};
use crate::port::Port;

/// MACs the fast path knows at most (beyond, the rest go through the switch).
const MAX_MACS: u32 = 65_536;
/// Ports the fast path serves at most.
const MAX_PORTS: u32 = 1024;

// `struct __sk_buff` offsets.
const SKB_LEN: i16 = 0;
const SKB_PKT_TYPE: i16 = 4;
/// `PACKET_OUTGOING`.
const PACKET_OUTGOING: i32 = 4;
const SKB_PROTOCOL: i16 = 16;
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_IFINDEX: i16 = 40;
/// `skb->protocol` of a frame with a tag still in its bytes, as a little-endian load sees
/// 0x8100 and 0x88a8 in network order.
const PROTO_8021Q: i32 = 0x0081;
const PROTO_8021AD: i32 = 0xa888;
/// What a socket filter returns to keep a whole frame.
const KEEP_WHOLE: i32 = 0x40000;
/// `TCX_NEXT`: not ours, on to the next program or the stack.
const TCX_NEXT: i32 = -1;

/// The socket filter: decides, and leaves its verdict for the classifier.
///
/// Maps: `fdb` (8-byte MAC key → `{ifindex: u32, pad: u32, seen_ns: u64}`), `ports` (ifindex →
/// `{enabled: u32, mtu: u32}`), `verdict` (per-CPU `{in, out, len, valid}`).
fn filter_program(fdb: i32, ports: i32, verdict: i32) -> Vec<u64> {
    let mut a = Asm::default();
    a.op(MOV64_REG, R6, R1, 0, 0) // r6 = skb
        // A frame leaving the port (the stack's, or one the fast path redirected here) is
        // nobody's to switch.
        .op(LDX_W, R0, R6, SKB_PKT_TYPE, 0)
        .jump(JEQ_IMM, R0, 0, PACKET_OUTGOING, "drop")
        .op(LDX_W, R0, R6, SKB_VLAN_PRESENT, 0)
        .jump(JNE_IMM, R0, 0, 0, "slow")
        .op(LDX_W, R0, R6, SKB_PROTOCOL, 0)
        .jump(JEQ_IMM, R0, 0, PROTO_8021Q, "slow")
        .jump(JEQ_IMM, R0, 0, PROTO_8021AD, "slow")
        .op(LDX_W, R7, R6, SKB_IFINDEX, 0) // r7 = ingress ifindex
        .op(ST_DW, R10, 0, -8, 0) // destination key
        .op(ST_DW, R10, 0, -16, 0) // source key
        .load_bytes(0, -8, 6, "slow")
        .load_bytes(6, -16, 6, "slow")
        // The ingress port must be served.
        .op(STX_W, R10, R7, -20, 0)
        .lookup(ports, -20, "slow")
        .op(MOV64_REG, R8, R0, 0, 0) // r8 = ingress port entry
        .op(LDX_W, R1, R8, 0, 0)
        .jump(JEQ_IMM, R1, 0, 0, "slow")
        // The source must be known on this very port (else the switch learns or moves it).
        .lookup(fdb, -16, "slow")
        .op(MOV64_REG, R9, R0, 0, 0) // r9 = source entry
        .op(LDX_W, R1, R9, 0, 0)
        .jump(JNE_REG, R1, R7, 0, "slow")
        // The destination must be known, on another port.
        .lookup(fdb, -8, "slow")
        .op(LDX_W, R1, R0, 0, 0)
        .jump(JEQ_REG, R1, R7, 0, "slow")
        .op(STX_W, R10, R1, -24, 0) // egress ifindex
        // The egress port must be served, with room for whatever the ingress port takes.
        .lookup(ports, -24, "slow")
        .op(LDX_W, R1, R0, 0, 0)
        .jump(JEQ_IMM, R1, 0, 0, "slow")
        .op(LDX_W, R1, R0, 4, 0)
        .op(LDX_W, R2, R8, 4, 0)
        .jump(JLT_REG, R1, R2, 0, "slow")
        // Forward: the source was seen now, and the verdict waits for the classifier.
        .call(FUNC_KTIME_GET_NS)
        .op(STX_DW, R9, R0, 8, 0)
        .op(ST_W, R10, 0, -20, 0)
        .lookup(verdict, -20, "slow")
        .op(STX_W, R0, R7, 0, 0)
        .op(LDX_W, R1, R10, -24, 0)
        .op(STX_W, R0, R1, 4, 0)
        .op(LDX_W, R1, R6, SKB_LEN, 0)
        .op(STX_W, R0, R1, 8, 0)
        .op(ST_W, R0, 0, 12, 1)
        .op(MOV64_IMM, R0, 0, 0, 0) // not for the socket
        .op(EXIT, 0, 0, 0, 0)
        .label("slow")
        .op(ST_W, R10, 0, -20, 0)
        .lookup(verdict, -20, "keep")
        .op(ST_W, R0, 0, 12, 0)
        .label("keep")
        .op(MOV64_IMM, R0, 0, 0, KEEP_WHOLE)
        .op(EXIT, 0, 0, 0, 0)
        .label("drop")
        .op(MOV64_IMM, R0, 0, 0, 0)
        .op(EXIT, 0, 0, 0, 0);
    a.finish()
}

/// The tc ingress program: follows the filter's verdict for this frame, counts, redirects.
///
/// Maps: `verdict` as above, `counters` (per-CPU, ifindex → `{rx_packets, rx_bytes,
/// tx_packets, tx_bytes}`).
fn classifier_program(verdict: i32, counters: i32) -> Vec<u64> {
    let mut a = Asm::default();
    a.op(MOV64_REG, R6, R1, 0, 0)
        .op(ST_W, R10, 0, -4, 0)
        .lookup(verdict, -4, "pass")
        .op(MOV64_REG, R8, R0, 0, 0) // r8 = this CPU's verdict
        .op(LDX_W, R1, R8, 12, 0)
        .jump(JEQ_IMM, R1, 0, 0, "pass")
        .op(ST_W, R8, 0, 12, 0) // consumed, whatever follows
        .op(LDX_W, R7, R6, SKB_IFINDEX, 0)
        .op(LDX_W, R1, R8, 0, 0)
        .jump(JNE_REG, R1, R7, 0, "pass")
        .op(LDX_W, R9, R6, SKB_LEN, 0)
        .op(LDX_W, R1, R8, 8, 0)
        .jump(JNE_REG, R1, R9, 0, "pass")
        .op(LDX_W, R1, R8, 4, 0)
        .op(STX_W, R10, R1, -8, 0) // egress ifindex
        .op(STX_W, R10, R7, -4, 0);
    // Received on the ingress port, sent on the egress port (r9: the frame's length).
    count(&mut a, counters, -4, 0, "tx");
    count(&mut a, counters, -8, 16, "go");
    a.op(LDX_W, R1, R10, -8, 0)
        .op(MOV64_IMM, R2, 0, 0, 0)
        .call(FUNC_REDIRECT)
        .op(EXIT, 0, 0, 0, 0)
        .label("pass")
        .op(MOV64_IMM, R0, 0, 0, TCX_NEXT)
        .op(EXIT, 0, 0, 0, 0);
    a.finish()
}

/// Adds one frame of r9 bytes to the per-CPU counters at `field` (packets, then bytes) of the
/// port whose ifindex is on the stack at `key`, then goes on at `next`.
fn count(a: &mut Asm, counters: i32, key: i16, field: i16, next: &'static str) {
    a.lookup(counters, key, next)
        .op(LDX_DW, R1, R0, field, 0)
        .op(ADD64_IMM, R1, 0, 0, 1)
        .op(STX_DW, R0, R1, field, 0)
        .op(LDX_DW, R1, R0, field + 8, 0)
        .op(ADD64_REG, R1, R9, 0, 0)
        .op(STX_DW, R0, R1, field + 8, 0)
        .label(next);
}

fn mac_key(mac: MacAddr) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[..6].copy_from_slice(&mac.0);
    key
}

/// The priority of the cls_bpf filter: a number of our own, so no filter of the user's is
/// replaced; one a crashed switch left is.
const CLS_BPF_PRIO: u16 = 0x7673;

/// The classifier at one port's tc ingress, detached when dropped.
#[derive(Debug)]
enum Attachment {
    /// A tcx link (Linux 6.6+): closing it detaches, also when the process dies.
    Tcx { _link: OwnedFd },
    /// A direct-action cls_bpf filter on the clsact qdisc (any kernel with eBPF): removed on
    /// drop, with the qdisc if the switch added it.
    ClsBpf { ifindex: u32, added_qdisc: bool },
}

impl Attachment {
    fn cls_bpf(classifier: &OwnedFd, ifindex: u32) -> io::Result<Attachment> {
        let mut netlink = Netlink::open().map_err(io::Error::other)?;
        let added_qdisc = netlink.add_clsact(ifindex).map_err(io::Error::other)?;
        let attachment = Attachment::ClsBpf {
            ifindex,
            added_qdisc,
        };
        netlink
            .attach_bpf_ingress(ifindex, CLS_BPF_PRIO, classifier.as_fd(), CLASSIFIER_NAME)
            .map_err(io::Error::other)?;
        Ok(attachment)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let Attachment::ClsBpf {
            ifindex,
            added_qdisc,
        } = *self
        else {
            return;
        };
        // A device deleted meanwhile took its filters with it.
        let removed = Netlink::open().and_then(|mut netlink| {
            if added_qdisc {
                netlink.delete_clsact(ifindex)
            } else {
                netlink.detach_bpf_ingress(ifindex, CLS_BPF_PRIO)
            }
        });
        if let Err(e) = removed {
            tracing::debug!(ifindex, error = %e, "removing the fast path's cls_bpf filter");
        }
    }
}

/// The classifier's name, as `tc filter show` and `bpftool` list it.
const CLASSIFIER_NAME: &str = "vswitch_fp_tc";

/// A port the fast path serves.
#[derive(Debug)]
struct Served {
    ifindex: u32,
    /// Dropping it detaches the classifier.
    _attachment: Attachment,
    /// Counters already handed to the port: `[rx_packets, rx_bytes, tx_packets, tx_bytes]`.
    harvested: [u64; 4],
    /// Whether the fast path forwards from and to it now.
    enabled: bool,
}

/// Frames and bytes the fast path moved for a port since the last harvest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Moved {
    pub(crate) rx_packets: u64,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_packets: u64,
    pub(crate) tx_bytes: u64,
}

/// The maps and programs of one switch's fast path.
#[derive(Debug)]
pub(crate) struct FastPath {
    fdb: Map,
    ports: Map,
    _verdict: Map,
    counters: Map,
    filter: OwnedFd,
    classifier: OwnedFd,
    /// Attach with cls_bpf: asked for, or tcx found missing.
    cls_bpf: AtomicBool,
    served: Mutex<HashMap<PortId, Served>>,
}

impl FastPath {
    /// Creates the maps and loads both programs: fails without CAP_BPF (or CAP_SYS_ADMIN), or
    /// on a kernel that refuses them. With `cls_bpf`, classifiers are attached as cls_bpf
    /// filters; else through tcx where the kernel has it.
    pub(crate) fn new(cls_bpf: bool) -> io::Result<FastPath> {
        let fdb = Map::create(BPF_MAP_TYPE_HASH, 8, 16, MAX_MACS)?;
        let ports = Map::create(BPF_MAP_TYPE_HASH, 4, 8, MAX_PORTS)?;
        let verdict = Map::create(BPF_MAP_TYPE_PERCPU_ARRAY, 4, 16, 1)?;
        let counters = Map::create(BPF_MAP_TYPE_PERCPU_HASH, 4, 32, MAX_PORTS)?;
        let filter = load_program(
            BPF_PROG_TYPE_SOCKET_FILTER,
            &filter_program(fdb.raw_fd(), ports.raw_fd(), verdict.raw_fd()),
            "vswitch_fp_sock",
        )?;
        let classifier = load_program(
            BPF_PROG_TYPE_SCHED_CLS,
            &classifier_program(verdict.raw_fd(), counters.raw_fd()),
            CLASSIFIER_NAME,
        )?;
        Ok(FastPath {
            fdb,
            ports,
            _verdict: verdict,
            counters,
            filter,
            classifier,
            cls_bpf: AtomicBool::new(cls_bpf),
            served: Mutex::new(HashMap::new()),
        })
    }

    fn served(&self) -> std::sync::MutexGuard<'_, HashMap<PortId, Served>> {
        self.served.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts serving `port` if its device allows (a `dev:` port): the classifier at its tc
    /// ingress first, then the filter on its sockets, so no frame is ever kept from the socket
    /// without a classifier to redirect it. The port stays disabled until [`FastPath::set_port`].
    pub(crate) fn attach(&self, port: &Port) -> io::Result<bool> {
        let Some(link) = port.device().kernel_link() else {
            return Ok(false);
        };
        let ifindex = link.ifindex();
        self.counters.update(&ifindex.to_ne_bytes(), &[0u8; 32])?;
        let attachment = self.attach_classifier(ifindex)?;
        link.attach_filter(self.filter.as_fd())?;
        self.served().insert(
            port.id(),
            Served {
                ifindex,
                _attachment: attachment,
                harvested: [0; 4],
                enabled: false,
            },
        );
        Ok(true)
    }

    /// The classifier at `ifindex`'s ingress: through tcx, or as a cls_bpf filter where asked
    /// or where the kernel has no tcx (before 6.6, `BPF_LINK_CREATE` refuses the attach type).
    fn attach_classifier(&self, ifindex: u32) -> io::Result<Attachment> {
        if !self.cls_bpf.load(Ordering::Relaxed) {
            match attach_tcx_ingress(&self.classifier, ifindex) {
                Ok(link) => return Ok(Attachment::Tcx { _link: link }),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!(error = %e, "no tcx (Linux 6.6+): the fast path attaches as cls_bpf filters");
                    self.cls_bpf.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        Attachment::cls_bpf(&self.classifier, ifindex)
    }

    /// How classifiers are attached: `tcx` or `cls_bpf`.
    pub(crate) fn attachment(&self) -> &'static str {
        if self.cls_bpf.load(Ordering::Relaxed) {
            "cls_bpf"
        } else {
            "tcx"
        }
    }

    /// Whether `port` is attached.
    pub(crate) fn serves(&self, port: PortId) -> bool {
        self.served().contains_key(&port)
    }

    /// Whether the fast path forwards from and to `port` now.
    pub(crate) fn is_enabled(&self, port: PortId) -> bool {
        self.served().get(&port).is_some_and(|s| s.enabled)
    }

    /// Stops serving `port`: disabled at once, its classifier detached.
    pub(crate) fn detach(&self, port: PortId) {
        if let Some(served) = self.served().remove(&port) {
            let _ = self.ports.delete(&served.ifindex.to_ne_bytes());
            let _ = self.counters.delete(&served.ifindex.to_ne_bytes());
        }
    }

    /// Sends every frame to the switch from now on (as the switch stops: its sockets may
    /// outlive the classifiers for a moment, and no frame may be kept from both).
    pub(crate) fn disable_all(&self) {
        for served in self.served().values_mut() {
            served.enabled = false;
            let _ = self.ports.delete(&served.ifindex.to_ne_bytes());
        }
    }

    /// Lets the fast path forward from and to `port` (or not), with its MTU.
    pub(crate) fn set_port(&self, port: PortId, enabled: bool, mtu: u32) -> io::Result<()> {
        let Some(ifindex) = self.served().get_mut(&port).map(|s| {
            s.enabled = enabled;
            s.ifindex
        }) else {
            return Ok(());
        };
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&u32::from(enabled).to_ne_bytes());
        value[4..].copy_from_slice(&mtu.to_ne_bytes());
        self.ports.update(&ifindex.to_ne_bytes(), &value)
    }

    /// Records that `mac` is behind `port`, or forgets it if the fast path doesn't serve that
    /// port (its frames then go through the switch).
    pub(crate) fn set_mac(&self, mac: MacAddr, port: Option<PortId>) -> io::Result<()> {
        let ifindex = port.and_then(|p| self.served().get(&p).map(|s| s.ifindex));
        match ifindex {
            Some(ifindex) => {
                let key = mac_key(mac);
                // Keep the stamp of an entry that stays on its port.
                let seen = match self.fdb.lookup(&key)? {
                    Some(v) if v[..4] == ifindex.to_ne_bytes() => v[8..16].to_vec(),
                    _ => vec![0; 8],
                };
                let mut value = [0u8; 16];
                value[..4].copy_from_slice(&ifindex.to_ne_bytes());
                value[8..].copy_from_slice(&seen);
                self.fdb.update(&key, &value)
            }
            None => self.fdb.delete(&mac_key(mac)),
        }
    }

    /// Makes the MAC map equal to `entries` (each MAC and its port), dropping what isn't there.
    pub(crate) fn sync_fdb(&self, entries: &[(MacAddr, PortId)]) -> io::Result<()> {
        let mut wanted: HashMap<[u8; 8], u32> = HashMap::new();
        {
            let served = self.served();
            for (mac, port) in entries {
                if let Some(s) = served.get(port) {
                    wanted.insert(mac_key(*mac), s.ifindex);
                }
            }
        }
        for key in self.fdb.keys()? {
            let keep = key
                .as_slice()
                .try_into()
                .ok()
                .and_then(|k: [u8; 8]| wanted.get(&k).copied());
            match (keep, self.fdb.lookup(&key)?) {
                (Some(ifindex), Some(v)) if v[..4] == ifindex.to_ne_bytes() => {
                    if let Ok(k) = <[u8; 8]>::try_from(key.as_slice()) {
                        wanted.remove(&k);
                    }
                }
                _ => self.fdb.delete(&key)?,
            }
        }
        for (key, ifindex) in wanted {
            let mut value = [0u8; 16];
            value[..4].copy_from_slice(&ifindex.to_ne_bytes());
            self.fdb.update(&key, &value)?;
        }
        Ok(())
    }

    /// Every MAC the fast path saw as a source, with its port and when (`CLOCK_MONOTONIC` ns).
    pub(crate) fn seen(&self) -> io::Result<Vec<(MacAddr, PortId, u64)>> {
        let by_ifindex: HashMap<u32, PortId> =
            self.served().iter().map(|(p, s)| (s.ifindex, *p)).collect();
        let mut out = Vec::new();
        for key in self.fdb.keys()? {
            let Some(value) = self.fdb.lookup(&key)? else {
                continue;
            };
            let ifindex = u32::from_ne_bytes(value[..4].try_into().unwrap_or_default());
            let seen = u64::from_ne_bytes(value[8..16].try_into().unwrap_or_default());
            if let (Some(port), true) = (by_ifindex.get(&ifindex), seen > 0) {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&key[..6]);
                out.push((MacAddr(mac), *port, seen));
            }
        }
        Ok(out)
    }

    /// What the fast path moved for each port since the last call, summed over the CPUs.
    pub(crate) fn harvest(&self) -> Vec<(PortId, Moved)> {
        let mut served = self.served();
        let mut out = Vec::new();
        for (port, s) in served.iter_mut() {
            let Ok(Some(values)) = self.counters.lookup(&s.ifindex.to_ne_bytes()) else {
                continue;
            };
            let mut total = [0u64; 4];
            for cpu in values.chunks(32) {
                for (i, t) in total.iter_mut().enumerate() {
                    *t += u64::from_ne_bytes(cpu[i * 8..i * 8 + 8].try_into().unwrap_or_default());
                }
            }
            let d: Vec<u64> = (0..4)
                .map(|i| total[i].saturating_sub(s.harvested[i]))
                .collect();
            s.harvested = total;
            if d.iter().any(|&n| n > 0) {
                out.push((
                    *port,
                    Moved {
                        rx_packets: d[0],
                        rx_bytes: d[1],
                        tx_packets: d[2],
                        tx_bytes: d[3],
                    },
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verifier takes both programs (as root; elsewhere the privileged tests in
    /// `tests/fastpath.rs` say why they skip).
    #[test]
    fn the_kernel_accepts_both_programs() {
        let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
        });
        if !root {
            assert_ne!(
                std::env::var("VSWITCH_REQUIRE_PRIV").as_deref(),
                Ok("1"),
                "needs root to load BPF programs"
            );
            eprintln!("SKIPPED the_kernel_accepts_both_programs: needs root (CAP_BPF)");
            return;
        }
        for cls_bpf in [false, true] {
            if let Err(e) = FastPath::new(cls_bpf) {
                panic!("{e}");
            }
        }
    }

    /// Every jump of both programs lands inside the program, forward.
    #[test]
    fn jumps_stay_inside_the_programs() {
        for p in [filter_program(3, 4, 5), classifier_program(3, 4)] {
            for (at, &i) in p.iter().enumerate() {
                let code = i as u8;
                if code & 0x07 == 0x05 && code != 0x85 && code != 0x95 {
                    let off = (i >> 16) as u16 as i16;
                    let to = at as isize + 1 + off as isize;
                    assert!(to > at as isize && (to as usize) < p.len(), "jump at {at}");
                }
            }
            assert_eq!(*p.last().expect("insns") as u8, EXIT);
        }
    }
}
