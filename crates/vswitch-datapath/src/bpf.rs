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

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `offsetof(struct __sk_buff, hash)`.
const SKB_HASH: i16 = 68;

const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const FUNC_MAP_UPDATE_ELEM: i32 = 2;
const FUNC_KTIME_GET_NS: i32 = 5;
const FUNC_GET_SMP_PROCESSOR_ID: i32 = 8;

/// One `struct bpf_insn`: opcode, destination and source registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

// Opcodes (class | operation | source).
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const ADD64_IMM: u8 = 0x07;
const SUB64_REG: u8 = 0x1f;
const MOD64_IMM: u8 = 0x97;
const LDX_W: u8 = 0x61;
const LDX_DW: u8 = 0x79;
const STX_W: u8 = 0x63;
const STX_DW: u8 = 0x7b;
const ST_W: u8 = 0x62;
const JEQ_IMM: u8 = 0x15;
const JEQ_REG: u8 = 0x1d;
const JGT_IMM: u8 = 0x25;
const JGT_REG: u8 = 0x2d;
const JLE_IMM: u8 = 0xb5;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
/// `src_reg` of a 64-bit immediate load that names a map by fd.
const PSEUDO_MAP_FD: u8 = 1;

/// A tiny assembler: instructions plus jumps to named labels, resolved by [`Asm::finish`].
#[derive(Default)]
struct Asm {
    insns: Vec<u64>,
    labels: HashMap<&'static str, usize>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        self.insns.push(insn(code, dst, src, off, imm));
        self
    }
    /// A conditional jump to `label`.
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, label: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), label));
        self.op(code, dst, src, 0, imm)
    }
    /// `dst = map` (a two-slot instruction).
    fn load_map(&mut self, dst: u8, map: i32) -> &mut Self {
        self.op(LD_IMM64, dst, PSEUDO_MAP_FD, 0, map);
        self.insns.push(0);
        self
    }
    fn call(&mut self, func: i32) -> &mut Self {
        self.op(CALL, 0, 0, 0, func)
    }
    fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.insert(name, self.insns.len());
        self
    }
    fn finish(mut self) -> Vec<u64> {
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
    a.op(MOV64_REG, 6, 1, 0, 0) // r6 = ctx
        .op(LDX_W, 7, 6, SKB_HASH, 0) // r7 = ctx->hash
        .jump(JEQ_IMM, 7, 0, 0, "by_cpu")
        .op(STX_W, 10, 7, -4, 0) // key
        .load_map(1, flows)
        .op(MOV64_REG, 2, 10, 0, 0)
        .op(ADD64_IMM, 2, 0, 0, -4)
        .call(FUNC_MAP_LOOKUP_ELEM)
        .op(MOV64_REG, 8, 0, 0, 0) // r8 = entry or NULL
        .call(FUNC_KTIME_GET_NS)
        .op(MOV64_REG, 9, 0, 0, 0) // r9 = now
        .call(FUNC_GET_SMP_PROCESSOR_ID)
        .op(MOD64_IMM, 0, 0, 0, queues as i32) // r0 = this CPU's queue
        .op(STX_W, 10, 0, -8, 0)
        .jump(JEQ_IMM, 8, 0, 0, "new")
        .op(LDX_W, 1, 8, 8, 0) // r1 = entry.queue
        .jump(JEQ_REG, 1, 0, 0, "stay")
        // Another CPU: may the flow leave its queue?
        .op(LDX_DW, 2, 8, 0, 0) // r2 = entry.last
        .op(MOV64_REG, 3, 9, 0, 0)
        .op(SUB64_REG, 3, 2, 0, 0) // r3 = now - entry.last
        .jump(JLE_IMM, 3, 0, STICKY_NS, "stay") // busy: stays
        .jump(JGT_IMM, 3, 0, PAUSE_NS, "new") // long silent: moves
        .op(STX_W, 10, 1, -12, 0)
        .load_map(1, drained)
        .op(MOV64_REG, 2, 10, 0, 0)
        .op(ADD64_IMM, 2, 0, 0, -12)
        .call(FUNC_MAP_LOOKUP_ELEM)
        .jump(JEQ_IMM, 0, 0, 0, "stay")
        .op(LDX_DW, 1, 0, 0, 0) // r1 = when the queue was found empty
        .op(LDX_DW, 2, 8, 0, 0)
        .op(ADD64_IMM, 2, 0, 0, MARGIN_NS)
        .jump(JGT_REG, 1, 2, 0, "new") // drained after the flow's last frame: moves
        .label("stay")
        .op(STX_DW, 8, 9, 0, 0) // entry.last = now
        .op(LDX_W, 0, 8, 8, 0) // return entry.queue
        .op(EXIT, 0, 0, 0, 0)
        .label("new")
        .op(STX_DW, 10, 9, -24, 0) // value.last = now
        .op(LDX_W, 1, 10, -8, 0)
        .op(STX_W, 10, 1, -16, 0) // value.queue = this CPU's queue
        .op(ST_W, 10, 0, -12, 0) // value.pad = 0
        .load_map(1, flows)
        .op(MOV64_REG, 2, 10, 0, 0)
        .op(ADD64_IMM, 2, 0, 0, -4)
        .op(MOV64_REG, 3, 10, 0, 0)
        .op(ADD64_IMM, 3, 0, 0, -24)
        .op(MOV64_IMM, 4, 0, 0, 0) // BPF_ANY
        .call(FUNC_MAP_UPDATE_ELEM)
        .op(LDX_W, 0, 10, -8, 0) // return this CPU's queue
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
/// as [`crate::PortDevice::queue_drained`] takes it.
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
        a.jump(JEQ_IMM, 1, 0, 0, "end")
            .load_map(1, 3)
            .jump(JEQ_IMM, 1, 0, 0, "end")
            .op(MOV64_IMM, 0, 0, 0, 1)
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
