//! The TAP steering program for [`crate::Steering::Cpu`], assembled here and loaded with
//! `bpf(2)`: no BPF toolchain, no object files.
//!
//! For each frame the kernel sends into the TAP it returns the queue (modulo the number of
//! queues): the CPU that sent the frame, so the worker pinned to that CPU forwards it there,
//! except that a flow sticks to the queue it got while its frames keep coming less than 1 ms
//! apart. Without that, a TCP sender whose segments leave from two CPUs (its own, and the one
//! processing the ACKs that release more) would have them forwarded by two workers and
//! reordered. A flow that pauses for 1 ms has long left its old queue, so moving it to the
//! current CPU can't reorder it: pings and request/response traffic follow their sender, bulk
//! flows stay put, as the kernel's XPS does with its out-of-order check.
//!
//! ```text
//!     r6 = ctx; r7 = ctx->hash; if r7 == 0: return cpu()
//!     e = lookup(flows, r7); now = ktime_ns()
//!     if e && now - e.last < 1 ms: e.last = now; return e.queue
//!     q = cpu(); update(flows, r7, {now, q}); return q
//! ```
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys::check;

/// A flow keeps its queue while its frames come closer together than this.
const STICKY_NS: i32 = 1_000_000;
/// Flows remembered per TAP (least recently used ones are forgotten first).
const FLOWS: u32 = 4096;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
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
const LDX_W: u8 = 0x61;
const LDX_DW: u8 = 0x79;
const STX_W: u8 = 0x63;
const STX_DW: u8 = 0x7b;
const ST_W: u8 = 0x62;
const JEQ_IMM: u8 = 0x15;
const JGT_IMM: u8 = 0x25;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
/// `src_reg` of a 64-bit immediate load that names a map by fd.
const PSEUDO_MAP_FD: u8 = 1;

/// The program's instructions, with `map` the flow table's fd.
fn program(map: i32) -> Vec<u64> {
    let load_map = |dst: u8| [insn(LD_IMM64, dst, PSEUDO_MAP_FD, 0, map), 0];
    let mut p = vec![
        insn(MOV64_REG, 6, 1, 0, 0),    // 0: r6 = ctx
        insn(LDX_W, 7, 6, SKB_HASH, 0), // 1: r7 = ctx->hash
        insn(JEQ_IMM, 7, 0, 31, 0),     // 2: no hash: goto 34 (by CPU)
        insn(STX_W, 10, 7, -4, 0),      // 3: key on the stack
    ];
    p.extend(load_map(1)); // 4-5: r1 = map
    p.extend([
        insn(MOV64_REG, 2, 10, 0, 0),                   // 6: r2 = &key
        insn(ADD64_IMM, 2, 0, 0, -4),                   // 7
        insn(CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM),      // 8: r0 = entry or NULL
        insn(MOV64_REG, 8, 0, 0, 0),                    // 9: r8 = entry
        insn(CALL, 0, 0, 0, FUNC_KTIME_GET_NS),         // 10
        insn(MOV64_REG, 9, 0, 0, 0),                    // 11: r9 = now
        insn(JEQ_IMM, 8, 0, 7, 0),                      // 12: no entry: goto 20
        insn(LDX_DW, 1, 8, 0, 0),                       // 13: r1 = entry.last
        insn(MOV64_REG, 2, 9, 0, 0),                    // 14
        insn(SUB64_REG, 2, 1, 0, 0),                    // 15: r2 = now - last
        insn(JGT_IMM, 2, 0, 3, STICKY_NS),              // 16: paused: goto 20
        insn(STX_DW, 8, 9, 0, 0),                       // 17: entry.last = now
        insn(LDX_W, 0, 8, 8, 0),                        // 18: r0 = entry.queue
        insn(EXIT, 0, 0, 0, 0),                         // 19
        insn(CALL, 0, 0, 0, FUNC_GET_SMP_PROCESSOR_ID), // 20: r0 = cpu
        insn(STX_DW, 10, 9, -24, 0),                    // 21: value.last = now
        insn(STX_W, 10, 0, -16, 0),                     // 22: value.queue = cpu
        insn(ST_W, 10, 0, -12, 0),                      // 23: value padding = 0
    ]);
    p.extend(load_map(1)); // 24-25: r1 = map
    p.extend([
        insn(MOV64_REG, 2, 10, 0, 0),                   // 26: r2 = &key
        insn(ADD64_IMM, 2, 0, 0, -4),                   // 27
        insn(MOV64_REG, 3, 10, 0, 0),                   // 28: r3 = &value
        insn(ADD64_IMM, 3, 0, 0, -24),                  // 29
        insn(MOV64_IMM, 4, 0, 0, 0),                    // 30: BPF_ANY
        insn(CALL, 0, 0, 0, FUNC_MAP_UPDATE_ELEM),      // 31
        insn(LDX_W, 0, 10, -16, 0),                     // 32: r0 = cpu
        insn(EXIT, 0, 0, 0, 0),                         // 33
        insn(CALL, 0, 0, 0, FUNC_GET_SMP_PROCESSOR_ID), // 34: r0 = cpu
        insn(EXIT, 0, 0, 0, 0),                         // 35
    ]);
    p
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

/// Loads the steering program with a flow table of its own (the program keeps the table alive).
pub fn steering_program() -> io::Result<OwnedFd> {
    let map = bpf(
        BPF_MAP_CREATE,
        &MapCreate {
            map_type: BPF_MAP_TYPE_LRU_HASH,
            key_size: 4,
            value_size: 16,
            max_entries: FLOWS,
            map_flags: 0,
        },
    )?;
    let insns = program(map.as_raw_fd());
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"vswitch_steer");
    bpf(
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
    fn jumps_land_where_the_comments_say() {
        let p = program(3);
        assert_eq!(p.len(), 36);
        let target = |at: usize| at + 1 + usize::from((p[at] >> 16) as u16);
        assert_eq!(target(2), 34);
        assert_eq!(target(12), 20);
        assert_eq!(target(16), 20);
        for at in [20, 34] {
            assert_eq!(p[at] as u8, CALL);
        }
    }
}
