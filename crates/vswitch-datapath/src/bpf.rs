//! The steering program for [`crate::Steering::Cpu`], assembled here and loaded with `bpf(2)`:
//! no BPF toolchain, no object files. A TAP runs it to pick a queue (`TUNSETSTEERINGEBPF`), a
//! `dev:` port's fanout group to pick a socket (`PACKET_FANOUT_EBPF`).
//!
//! For each frame it returns the queue of the CPU that sent it, so the worker pinned to that
//! CPU forwards it there, except that a busy flow (frames less than 1 ms apart) stays on its
//! queue, and a flow moves only once its old queue has been drained of it. A TCP sender's
//! segments leave from two CPUs (its own, and the one processing the ACKs that release more);
//! forwarded by two workers, they would be reordered, and every reordering costs a spurious
//! fast retransmit. A pause alone doesn't prove the old worker has caught up (a loaded worker
//! can be descheduled for milliseconds), so the workers tell the program, through an array map
//! both share by `mmap` (a [`DrainClock`]), when each queue was last found empty, and a flow
//! moves only if its old queue was found empty after the flow's last frame entered it: nothing
//! of the flow is left behind to be overtaken, the check the kernel's RFS makes with its queue
//! counters. Pings and request/response traffic follow their sender, bulk flows stay put. A
//! flow silent for 10 ms moves regardless (its old worker would have to be that far behind for
//! it to matter).
//!
//! ```text
//!     hash = ctx->hash; if hash == 0: return cpu()
//!     e = lookup(flows, hash); now = ktime_ns(); q = cpu() % queues
//!     if e:
//!         if e.queue == q or now - e.last <= STICKY: goto stay
//!         d = lookup(drained, e.queue)
//!         if now - e.last <= PAUSE and !(d && *d > e.last + MARGIN): goto stay
//!     update(flows, hash, {now, q}); return q
//!  stay:
//!     e.last = now; return e.queue
//! ```
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::check;

/// How long after a frame was steered it may still be on its way into the queue (the
/// program runs before the qdisc and the driver): a queue found empty sooner than this after
/// the flow's last frame doesn't prove that frame was read.
const MARGIN_NS: i32 = 2_000;
/// A flow whose frames come closer together than this stays on its queue: moving bulk flows
/// between workers costs batching for nothing.
const STICKY_NS: i32 = 1_000_000;
/// A flow silent this long moves to its sender's CPU even without a drain seen.
const PAUSE_NS: i32 = 10_000_000;
/// Flows remembered per port (least recently used ones are forgotten first).
const FLOWS: u32 = 4096;

/// Registers: r0 (return value), r1-r5 (arguments, clobbered by calls), r6-r9 (kept across
/// calls), r10 (the frame pointer, read-only).
pub(crate) const R0: u8 = 0;
pub(crate) const R1: u8 = 1;
pub(crate) const R2: u8 = 2;
pub(crate) const R3: u8 = 3;
pub(crate) const R4: u8 = 4;
pub(crate) const R6: u8 = 6;
pub(crate) const R7: u8 = 7;
pub(crate) const R8: u8 = 8;
pub(crate) const R9: u8 = 9;
pub(crate) const R10: u8 = 10;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
pub(crate) const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub(crate) const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
pub(crate) const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_F_MMAPABLE: u32 = 1 << 10;
pub(crate) const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
pub(crate) const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `enum bpf_attach_type`: tc ingress through a tcx link (Linux 6.6+).
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
/// `offsetof(struct __sk_buff, hash)`.
const SKB_HASH: i16 = 68;

const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const FUNC_MAP_UPDATE_ELEM: i32 = 2;
pub(crate) const FUNC_KTIME_GET_NS: i32 = 5;
const FUNC_GET_SMP_PROCESSOR_ID: i32 = 8;
pub(crate) const FUNC_REDIRECT: i32 = 23;
const FUNC_SKB_LOAD_BYTES: i32 = 26;

/// One `struct bpf_insn`: opcode, destination and source registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

// Opcodes (class | operation | source).
pub(crate) const MOV64_REG: u8 = 0xbf;
pub(crate) const MOV64_IMM: u8 = 0xb7;
pub(crate) const ADD64_IMM: u8 = 0x07;
pub(crate) const ADD64_REG: u8 = 0x0f;
const SUB64_REG: u8 = 0x1f;
const MOD64_IMM: u8 = 0x97;
pub(crate) const LDX_W: u8 = 0x61;
pub(crate) const LDX_DW: u8 = 0x79;
pub(crate) const STX_W: u8 = 0x63;
pub(crate) const STX_DW: u8 = 0x7b;
pub(crate) const ST_W: u8 = 0x62;
pub(crate) const ST_DW: u8 = 0x7a;
pub(crate) const JEQ_IMM: u8 = 0x15;
pub(crate) const JEQ_REG: u8 = 0x1d;
pub(crate) const JNE_IMM: u8 = 0x55;
pub(crate) const JNE_REG: u8 = 0x5d;
pub(crate) const JLT_REG: u8 = 0xad;
const JGT_IMM: u8 = 0x25;
const JGT_REG: u8 = 0x2d;
const JLE_IMM: u8 = 0xb5;
const CALL: u8 = 0x85;
pub(crate) const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
/// `src_reg` of a 64-bit immediate load that names a map by fd.
const PSEUDO_MAP_FD: u8 = 1;

/// A tiny assembler: instructions plus jumps to named labels, resolved by [`Asm::finish`].
#[derive(Default)]
pub(crate) struct Asm {
    insns: Vec<u64>,
    labels: HashMap<&'static str, usize>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    pub(crate) fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        self.insns.push(insn(code, dst, src, off, imm));
        self
    }
    /// A conditional jump to `label`.
    pub(crate) fn jump(
        &mut self,
        code: u8,
        dst: u8,
        src: u8,
        imm: i32,
        label: &'static str,
    ) -> &mut Self {
        self.jumps.push((self.insns.len(), label));
        self.op(code, dst, src, 0, imm)
    }
    /// `dst = map` (a two-slot instruction).
    pub(crate) fn load_map(&mut self, dst: u8, map: i32) -> &mut Self {
        self.op(LD_IMM64, dst, PSEUDO_MAP_FD, 0, map);
        self.insns.push(0);
        self
    }
    /// `r0 = lookup(map, fp + key)`, jumping to `miss` when there is no such key.
    pub(crate) fn lookup(&mut self, map: i32, key: i16, miss: &'static str) -> &mut Self {
        self.load_map(R1, map)
            .op(MOV64_REG, R2, R10, 0, 0)
            .op(ADD64_IMM, R2, 0, 0, i32::from(key))
            .call(FUNC_MAP_LOOKUP_ELEM)
            .jump(JEQ_IMM, R0, 0, 0, miss)
    }
    /// `bpf_skb_load_bytes(r6, offset, fp + to, len)`, jumping to `fail` if it fails.
    pub(crate) fn load_bytes(
        &mut self,
        offset: i32,
        to: i16,
        len: i32,
        fail: &'static str,
    ) -> &mut Self {
        self.op(MOV64_REG, R1, R6, 0, 0)
            .op(MOV64_IMM, R2, 0, 0, offset)
            .op(MOV64_REG, R3, R10, 0, 0)
            .op(ADD64_IMM, R3, 0, 0, i32::from(to))
            .op(MOV64_IMM, R4, 0, 0, len)
            .call(FUNC_SKB_LOAD_BYTES)
            .jump(JNE_IMM, R0, 0, 0, fail)
    }
    pub(crate) fn call(&mut self, func: i32) -> &mut Self {
        self.op(CALL, 0, 0, 0, func)
    }
    pub(crate) fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.insert(name, self.insns.len());
        self
    }
    pub(crate) fn finish(mut self) -> Vec<u64> {
        for (at, label) in std::mem::take(&mut self.jumps) {
            let target = self.labels[label];
            let off = i16::try_from(target as isize - at as isize - 1).expect("short jump");
            self.insns[at] |= u64::from(off as u16) << 16;
        }
        self.insns
    }
}

/// The program's instructions, with `flows` the flow table's fd and `drained` the drain
/// clock's, for a port with `queues` queues.
///
/// Stack: key (flow hash) at -4, this CPU's queue at -8, the new entry `{last: u64, queue:
/// u32, pad: u32}` at -24, the drain map's key at -12 (the entry's padding, rewritten).
fn program(flows: i32, drained: i32, queues: u32) -> Vec<u64> {
    let mut a = Asm::default();
    a.op(MOV64_REG, R6, R1, 0, 0) // r6 = ctx
        .op(LDX_W, R7, R6, SKB_HASH, 0) // r7 = ctx->hash
        .jump(JEQ_IMM, R7, 0, 0, "by_cpu")
        .op(STX_W, R10, R7, -4, 0) // key
        .load_map(R1, flows)
        .op(MOV64_REG, R2, R10, 0, 0)
        .op(ADD64_IMM, R2, 0, 0, -4)
        .call(FUNC_MAP_LOOKUP_ELEM)
        .op(MOV64_REG, R8, R0, 0, 0) // r8 = entry or NULL
        .call(FUNC_KTIME_GET_NS)
        .op(MOV64_REG, R9, R0, 0, 0) // r9 = now
        .call(FUNC_GET_SMP_PROCESSOR_ID)
        .op(MOD64_IMM, R0, 0, 0, queues as i32) // r0 = this CPU's queue
        .op(STX_W, R10, R0, -8, 0)
        .jump(JEQ_IMM, R8, 0, 0, "new")
        .op(LDX_W, R1, R8, 8, 0) // r1 = entry.queue
        .jump(JEQ_REG, R1, R0, 0, "stay")
        // Another CPU: may the flow leave its queue?
        .op(LDX_DW, R2, R8, 0, 0) // r2 = entry.last
        .op(MOV64_REG, R3, R9, 0, 0)
        .op(SUB64_REG, R3, R2, 0, 0) // r3 = now - entry.last
        .jump(JLE_IMM, R3, 0, STICKY_NS, "stay") // busy: stays
        .jump(JGT_IMM, R3, 0, PAUSE_NS, "new") // long silent: moves
        .op(STX_W, R10, R1, -12, 0)
        .load_map(R1, drained)
        .op(MOV64_REG, R2, R10, 0, 0)
        .op(ADD64_IMM, R2, 0, 0, -12)
        .call(FUNC_MAP_LOOKUP_ELEM)
        .jump(JEQ_IMM, R0, 0, 0, "stay")
        .op(LDX_DW, R1, R0, 0, 0) // r1 = when the queue was found empty
        .op(LDX_DW, R2, R8, 0, 0)
        .op(ADD64_IMM, R2, 0, 0, MARGIN_NS)
        .jump(JGT_REG, R1, R2, 0, "new") // drained after the flow's last frame: moves
        .label("stay")
        .op(STX_DW, R8, R9, 0, 0) // entry.last = now
        .op(LDX_W, R0, R8, 8, 0) // return entry.queue
        .op(EXIT, 0, 0, 0, 0)
        .label("new")
        .op(STX_DW, R10, R9, -24, 0) // value.last = now
        .op(LDX_W, R1, R10, -8, 0)
        .op(STX_W, R10, R1, -16, 0) // value.queue = this CPU's queue
        .op(ST_W, R10, 0, -12, 0) // value.pad = 0
        .load_map(R1, flows)
        .op(MOV64_REG, R2, R10, 0, 0)
        .op(ADD64_IMM, R2, 0, 0, -4)
        .op(MOV64_REG, R3, R10, 0, 0)
        .op(ADD64_IMM, R3, 0, 0, -24)
        .op(MOV64_IMM, R4, 0, 0, 0) // BPF_ANY
        .call(FUNC_MAP_UPDATE_ELEM)
        .op(LDX_W, R0, R10, -8, 0) // return this CPU's queue
        .op(EXIT, 0, 0, 0, 0)
        .label("by_cpu")
        .call(FUNC_GET_SMP_PROCESSOR_ID)
        .op(EXIT, 0, 0, 0, 0);
    a.finish()
}

/// `union bpf_attr` for `BPF_MAP_CREATE`, up to the fields we set.
#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to the fields we set; the kernel reads a shorter
/// attribute as zero-extended.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for `cmd`, and any pointers in it
    // point at memory that outlives the call; we pass its exact size.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>()) };
    let fd = check(libc::c_int::try_from(fd).unwrap_or(-1))?;
    // SAFETY: a fresh fd returned by the kernel that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// When each queue of a port was last found empty by its worker (`CLOCK_MONOTONIC`
/// nanoseconds, the steering program's clock), in a BPF array map mapped into our memory.
#[derive(Debug)]
pub(crate) struct DrainClock {
    slots: NonNull<AtomicU64>,
    queues: usize,
    mapped: usize,
    map: OwnedFd,
}

// SAFETY: the mapping is shared memory owned by the DrainClock and only accessed through
// atomics, from any thread.
unsafe impl Send for DrainClock {}
// SAFETY: as above: `&DrainClock` only ever does atomic stores.
unsafe impl Sync for DrainClock {}

impl DrainClock {
    fn new(queues: usize) -> io::Result<DrainClock> {
        let entries = u32::try_from(queues.max(1)).map_err(|_| io::ErrorKind::InvalidInput)?;
        let map = bpf(
            BPF_MAP_CREATE,
            &MapCreate {
                map_type: BPF_MAP_TYPE_ARRAY,
                key_size: 4,
                value_size: 8,
                max_entries: entries,
                map_flags: BPF_F_MMAPABLE,
            },
        )?;
        let mapped = (8 * entries as usize).next_multiple_of(4096);
        // SAFETY: maps `mapped` bytes of the array map's values (page-aligned, 8 bytes per
        // entry) shared with the kernel; the result is checked before use and unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(DrainClock {
            slots: NonNull::new(ptr.cast()).ok_or(io::ErrorKind::InvalidData)?,
            queues: entries as usize,
            mapped,
            map,
        })
    }

    /// Records that `queue` was found empty with every frame read before `at_ns` forwarded.
    pub(crate) fn mark(&self, queue: usize, at_ns: u64) {
        if queue < self.queues {
            // SAFETY: `queue` is within the mapping, which lives as long as `self`.
            let slot = unsafe { &*self.slots.as_ptr().add(queue) };
            slot.store(at_ns, Ordering::Release);
        }
    }
}

impl Drop for DrainClock {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference into it outlives self.
        unsafe { libc::munmap(self.slots.as_ptr().cast(), self.mapped) };
    }
}

/// Now on the steering program's clock (`bpf_ktime_get_ns`, `CLOCK_MONOTONIC` nanoseconds),
/// as [`crate::port::CpuSteering::queue_drained`] takes it.
pub fn steering_clock_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own; CLOCK_MONOTONIC can't fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A loaded steering program for a port with `queues` queues, with the drain clock its
/// workers must keep.
#[derive(Debug)]
pub(crate) struct SteeringProgram {
    pub(crate) program: OwnedFd,
    pub(crate) drained: DrainClock,
}

/// Loads the steering program with a flow table and a drain clock of its own (the program
/// keeps the table alive).
pub(crate) fn steering_program(queues: usize) -> io::Result<SteeringProgram> {
    let flows = bpf(
        BPF_MAP_CREATE,
        &MapCreate {
            map_type: BPF_MAP_TYPE_LRU_HASH,
            key_size: 4,
            value_size: 16,
            max_entries: FLOWS,
            map_flags: 0,
        },
    )?;
    let drained = DrainClock::new(queues)?;
    let insns = program(
        flows.as_raw_fd(),
        drained.map.as_raw_fd(),
        drained.queues as u32,
    );
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"vswitch_steer");
    let program = bpf(
        BPF_PROG_LOAD,
        &ProgLoad {
            prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
        },
    )?;
    Ok(SteeringProgram { program, drained })
}

/// A BPF map, with the sizes its syscalls need.
#[derive(Debug)]
pub(crate) struct Map {
    fd: OwnedFd,
    key_size: usize,
    /// Per CPU, rounded up to 8 bytes, as the kernel lays out per-CPU values.
    value_size: usize,
    /// CPUs a per-CPU map holds a value for (1 otherwise).
    copies: usize,
}

/// `union bpf_attr` for the element commands.
#[repr(C)]
struct MapElem {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

impl Map {
    /// Creates a map of `map_type` with `max_entries` entries of `key_size` and `value_size`
    /// bytes.
    pub(crate) fn create(
        map_type: u32,
        key_size: usize,
        value_size: usize,
        max_entries: u32,
    ) -> io::Result<Map> {
        let fd = bpf(
            BPF_MAP_CREATE,
            &MapCreate {
                map_type,
                key_size: key_size as u32,
                value_size: value_size as u32,
                max_entries,
                map_flags: 0,
            },
        )?;
        let percpu = matches!(
            map_type,
            BPF_MAP_TYPE_PERCPU_HASH | BPF_MAP_TYPE_PERCPU_ARRAY
        );
        Ok(Map {
            fd,
            key_size,
            value_size: if percpu {
                value_size.next_multiple_of(8)
            } else {
                value_size
            },
            copies: if percpu { possible_cpus()? } else { 1 },
        })
    }

    /// The map's fd, for a program to name it.
    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn elem(&self, cmd: libc::c_long, key: &[u8], value: *mut u8, flags: u64) -> io::Result<()> {
        assert_eq!(key.len(), self.key_size, "key size");
        let attr = MapElem {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key.as_ptr() as u64,
            value: value as u64,
            flags,
        };
        // SAFETY: `attr` is a valid `union bpf_attr` prefix for the element commands; `key`
        // holds `key_size` bytes and `value` (where the command reads or writes one) points at
        // a buffer of `value_size * copies` bytes, both alive for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &attr as *const MapElem,
                size_of::<MapElem>(),
            )
        };
        check(libc::c_int::try_from(ret).unwrap_or(-1)).map(drop)
    }

    /// Sets `key` to `value` (one value; for a per-CPU map, the same on every CPU).
    pub(crate) fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert!(value.len() <= self.value_size, "value size");
        let mut all = vec![0u8; self.value_size * self.copies];
        for copy in all.chunks_mut(self.value_size) {
            copy[..value.len()].copy_from_slice(value);
        }
        self.elem(BPF_MAP_UPDATE_ELEM, key, all.as_mut_ptr(), 0)
    }

    /// The value of `key` (for a per-CPU map, every CPU's, one after another), or `None`.
    pub(crate) fn lookup(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut all = vec![0u8; self.value_size * self.copies];
        match self.elem(BPF_MAP_LOOKUP_ELEM, key, all.as_mut_ptr(), 0) {
            Ok(()) => Ok(Some(all)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes `key`; fine if it wasn't there.
    pub(crate) fn delete(&self, key: &[u8]) -> io::Result<()> {
        match self.elem(BPF_MAP_DELETE_ELEM, key, std::ptr::null_mut(), 0) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Every key in the map now.
    pub(crate) fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut next = vec![0u8; self.key_size];
            let attr = MapElem {
                map_fd: self.fd.as_raw_fd() as u32,
                pad: 0,
                // A null key asks for the first one.
                key: keys.last().map_or(0, |k| k.as_ptr() as u64),
                value: next.as_mut_ptr() as u64,
                flags: 0,
            };
            // SAFETY: as in `elem`: the previous key (if any) and the output buffer hold
            // `key_size` bytes and outlive the call.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_GET_NEXT_KEY,
                    &attr as *const MapElem,
                    size_of::<MapElem>(),
                )
            };
            match check(libc::c_int::try_from(ret).unwrap_or(-1)) {
                Ok(_) => keys.push(next),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
                Err(e) => return Err(e),
            }
        }
    }
}

/// How many CPUs a per-CPU map keeps a value for: `/sys/devices/system/cpu/possible`.
fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut count = 0;
    for range in text.trim().split(',') {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (usize, usize) = (
            a.parse().map_err(|_| io::ErrorKind::InvalidData)?,
            b.parse().map_err(|_| io::ErrorKind::InvalidData)?,
        );
        count = count.max(b + 1).max(a + 1);
    }
    Ok(count)
}

/// Loads `insns` as a program of `prog_type`. When the verifier refuses it, loads it again
/// asking for the verifier's log, and returns that log's end with the error.
pub(crate) fn load_program(prog_type: u32, insns: &[u64], name: &str) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let attr = |log: &mut Vec<u8>| ProgLoad {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        kern_version: 0,
        prog_flags: 0,
        prog_name,
    };
    match bpf(BPF_PROG_LOAD, &attr(&mut Vec::new())) {
        Ok(fd) => Ok(fd),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EINVAL)) => {
            let mut log = vec![0u8; 256 * 1024];
            let again = bpf(BPF_PROG_LOAD, &attr(&mut log));
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(12).collect();
            match again {
                Ok(fd) => Ok(fd),
                Err(_) => Err(io::Error::new(
                    e.kind(),
                    format!(
                        "the kernel refused BPF program {name} ({e}); verifier log ends:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ),
                )),
            }
        }
        Err(e) => Err(e),
    }
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with a tcx target.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    pad: u32,
    expected_revision: u64,
}

/// Attaches a `SCHED_CLS` program at the tc ingress of interface `ifindex` through a tcx link;
/// closing the returned link detaches it.
pub(crate) fn attach_tcx_ingress(program: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    attach_tcx(program, ifindex, BPF_TCX_INGRESS)
}

/// Like [`attach_tcx_ingress`], at the interface's egress: it runs on every frame the stack
/// sends there, before any qdisc.
pub(crate) fn attach_tcx_egress(program: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    attach_tcx(program, ifindex, BPF_TCX_EGRESS)
}

fn attach_tcx(program: &OwnedFd, ifindex: u32, attach_type: u32) -> io::Result<OwnedFd> {
    bpf(
        BPF_LINK_CREATE,
        &LinkCreate {
            prog_fd: program.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type,
            flags: 0,
            relative_fd: 0,
            pad: 0,
            expected_revision: 0,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_like_struct_bpf_insn() {
        // r2 += -4: BPF_ALU64 | BPF_ADD | BPF_K, dst 2, imm -4.
        assert_eq!(
            insn(ADD64_IMM, 2, 0, 0, -4).to_le_bytes(),
            [0x07, 0x02, 0, 0, 0xfc, 0xff, 0xff, 0xff]
        );
        // *(u32 *)(r10 - 4) = r7.
        assert_eq!(
            insn(STX_W, 10, 7, -4, 0).to_le_bytes(),
            [0x63, 0x7a, 0xfc, 0xff, 0, 0, 0, 0]
        );
    }

    #[test]
    fn jumps_land_on_their_labels() {
        let mut a = Asm::default();
        a.jump(JEQ_IMM, R1, 0, 0, "end")
            .load_map(R1, 3)
            .jump(JEQ_IMM, R1, 0, 0, "end")
            .op(MOV64_IMM, R0, 0, 0, 1)
            .label("end")
            .op(EXIT, 0, 0, 0, 0);
        let p = a.finish();
        let target = |at: usize| at + 1 + usize::from((p[at] >> 16) as u16);
        assert_eq!(target(0), 5);
        assert_eq!(target(3), 5);
        assert_eq!(p[5] as u8, EXIT);
        // Every jump of the steering program lands inside it.
        let p = program(3, 4, 2);
        for (at, &i) in p.iter().enumerate() {
            if (i as u8) & 0x07 == 0x05 && !matches!(i as u8, CALL | EXIT) {
                let off = (i >> 16) as u16 as i16;
                let to = at as isize + 1 + off as isize;
                assert!(to > at as isize && (to as usize) < p.len(), "jump at {at}");
            }
        }
    }
}
