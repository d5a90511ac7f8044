//! The raw bpf(2) layer: instruction encoding with a label-resolving assembler, maps, loading
//! an SK_REUSEPORT program, and attaching it to a reuseport group. Invariant: every kernel
//! object lives in an `OwnedFd` (closed on drop), and this file knows nothing of steering
//! policy — `group.rs` decides what the program says and what the maps hold.

use std::collections::HashMap;
use std::fmt;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::libc;

// ---------------------------------------------------------------------------------------------
// Kernel ABI numbers, from include/uapi/linux/bpf.h and include/uapi/asm-generic/socket.h.
// (Checked against /usr/include/linux/bpf.h with a C program printing the enum values.)
// ---------------------------------------------------------------------------------------------

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;
const BPF_PROG_LOAD: libc::c_int = 5;

const BPF_PROG_TYPE_SK_REUSEPORT: u32 = 21;
const BPF_PSEUDO_MAP_FD: u8 = 1; // ld_imm64 src_reg: "imm is a map fd, patch in the map"
const BPF_ANY: u64 = 0; // update flag: create or replace

const SO_ATTACH_REUSEPORT_EBPF: libc::c_int = 52; // not in libc for linux-gnu yet

/// Verifier log buffer used when a load fails; our program's log is a few KiB.
const VERIFIER_LOG_BYTES: usize = 64 * 1024;
/// Verbosity 1: the verifier's reasoning for every instruction it walked before it gave up.
const VERIFIER_LOG_LEVEL: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A bpf(2) or socket-option call that failed: what we tried, the errno, and for a refused
/// program the verifier's log.
#[derive(Debug)]
pub struct BpfError {
    /// What failed, phrased to follow "unable to", e.g. "load the reuseport steering program".
    pub action: String,
    /// The kernel's answer.
    pub errno: Errno,
    /// The verifier's explanation, present only when a program load was refused.
    pub verifier_log: Option<String>,
}

impl BpfError {
    fn new(action: impl Into<String>, errno: Errno) -> BpfError {
        BpfError {
            action: action.into(),
            errno,
            verifier_log: None,
        }
    }

    /// What the operator can do about this errno, if we know.
    fn hint(&self) -> Option<&'static str> {
        match self.errno {
            Errno::EPERM => {
                Some("reuseport eBPF steering needs CAP_BPF and CAP_NET_ADMIN (run as root)")
            }
            Errno::ENOSYS => Some("this kernel was built without CONFIG_BPF_SYSCALL"),
            _ => None,
        }
    }
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = std::io::Error::from_raw_os_error(self.errno as i32);
        write!(f, "unable to {}: {cause}", self.action)?;
        if let Some(hint) = self.hint() {
            write!(f, "; {hint}")?;
        }
        if self.verifier_log.is_some() {
            write!(
                f,
                " (the kernel's verifier refused the program; -v logs its reasons)"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for BpfError {}

/// A label used but never placed, or placed twice: a bug in the program's source.
#[derive(Debug, PartialEq, Eq)]
pub enum AsmError {
    /// A jump names a label that `label()` never placed.
    UnknownLabel(&'static str),
    /// `label()` was called twice with this name.
    DuplicateLabel(&'static str),
    /// A jump is farther than the 16-bit offset field can say.
    JumpTooFar(&'static str),
}

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsmError::UnknownLabel(l) => write!(f, "BPF program jumps to unknown label {l:?}"),
            AsmError::DuplicateLabel(l) => write!(f, "BPF program places label {l:?} twice"),
            AsmError::JumpTooFar(l) => write!(f, "BPF program jump to {l:?} is out of range"),
        }?;
        write!(f, "; this is a bug in reuseport-launch")
    }
}

impl std::error::Error for AsmError {}

// ---------------------------------------------------------------------------------------------
// Instructions
// ---------------------------------------------------------------------------------------------

/// An eBPF register. R0 = return value, R1..R5 = helper arguments (clobbered by calls),
/// R6..R9 = preserved across calls, R10 = read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    #[allow(dead_code)] // never used by this program, but part of the register file
    R5,
    R6,
    R7,
    R8,
    R9,
    /// Frame pointer: the stack is the 512 bytes below it.
    R10,
}

/// A kernel helper function, by its number in `__BPF_FUNC_MAPPER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Helper {
    /// `void *bpf_map_lookup_elem(map, key)`: pointer to the value, or NULL.
    MapLookupElem = 1,
    /// `long bpf_map_update_elem(map, key, value, flags)`: 0 on success.
    MapUpdateElem = 2,
    /// `u64 bpf_ktime_get_ns(void)`: CLOCK_MONOTONIC in nanoseconds.
    KtimeGetNs = 5,
    /// `long bpf_sk_select_reuseport(ctx, map, key, flags)`: 0 when the socket is selected.
    /// Not GPL-only.
    SkSelectReuseport = 82,
}

// Opcode pieces (include/uapi/linux/bpf_common.h and bpf.h).
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const SIZE_W: u8 = 0x00; // 32-bit
const SIZE_H: u8 = 0x08; // 16-bit
const SIZE_DW: u8 = 0x18; // 64-bit
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00; // operand is the immediate
const SRC_X: u8 = 0x08; // operand is src_reg
const ALU_ADD: u8 = 0x00;
const ALU_SUB: u8 = 0x10;
const ALU_MUL: u8 = 0x20;
const ALU_RSH: u8 = 0x70;
const ALU_MOD: u8 = 0x90;
const ALU_MOV: u8 = 0xb0;
const JMP_JA: u8 = 0x00;
const JMP_JEQ: u8 = 0x10;
const JMP_JGT: u8 = 0x20;
const JMP_JLT: u8 = 0xa0;
const JMP_JNE: u8 = 0x50;
const JMP_CALL: u8 = 0x80;
const JMP_EXIT: u8 = 0x90;

/// One 8-byte eBPF instruction, laid out as `struct bpf_insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Insn {
    /// Class | size/op | mode/source.
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    pub regs: u8,
    /// Memory offset, or jump distance in instructions after the next one.
    pub off: i16,
    /// Immediate operand.
    pub imm: i32,
}

const _: () = assert!(size_of::<Insn>() == 8);

impl Insn {
    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (dst as u8) | ((src as u8) << 4),
            off,
            imm,
        }
    }
    /// `dst = imm`
    pub fn mov64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_MOV | SRC_K, dst, Reg::R0, 0, imm)
    }
    /// `dst = src`
    pub fn mov64_reg(dst: Reg, src: Reg) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_MOV | SRC_X, dst, src, 0, 0)
    }
    /// `dst += imm`
    pub fn add64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_ADD | SRC_K, dst, Reg::R0, 0, imm)
    }
    /// `dst += src`
    pub fn add64_reg(dst: Reg, src: Reg) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_ADD | SRC_X, dst, src, 0, 0)
    }
    /// `dst -= src`
    pub fn sub64_reg(dst: Reg, src: Reg) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_SUB | SRC_X, dst, src, 0, 0)
    }
    /// `dst >>= imm` (logical)
    pub fn rsh64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_RSH | SRC_K, dst, Reg::R0, 0, imm)
    }
    /// `dst *= imm`
    pub fn mul64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_MUL | SRC_K, dst, Reg::R0, 0, imm)
    }
    /// `dst %= src` (unsigned; the kernel defines `x % 0 == x`)
    pub fn mod64_reg(dst: Reg, src: Reg) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_MOD | SRC_X, dst, src, 0, 0)
    }
    /// `dst = *(u32 *)(src + off)`
    pub fn ldx_w(dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_LDX | SIZE_W | MODE_MEM, dst, src, off, 0)
    }
    /// `dst = *(u16 *)(src + off)`
    pub fn ldx_h(dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_LDX | SIZE_H | MODE_MEM, dst, src, off, 0)
    }
    /// `dst = *(u64 *)(src + off)`
    pub fn ldx_dw(dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_LDX | SIZE_DW | MODE_MEM, dst, src, off, 0)
    }
    /// `*(u32 *)(dst + off) = src`
    pub fn stx_w(dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::new(CLASS_STX | SIZE_W | MODE_MEM, dst, src, off, 0)
    }
    /// `*(u64 *)(dst + off) = src`
    pub fn stx_dw(dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::new(CLASS_STX | SIZE_DW | MODE_MEM, dst, src, off, 0)
    }
    /// `*(u32 *)(dst + off) = imm`
    pub fn st_w(dst: Reg, off: i16, imm: i32) -> Insn {
        Insn::new(CLASS_ST | SIZE_W | MODE_MEM, dst, Reg::R0, off, imm)
    }
    /// `call helper`; arguments in R1..R5, result in R0, R1..R5 clobbered.
    pub fn call(helper: Helper) -> Insn {
        Insn::new(CLASS_JMP | JMP_CALL, Reg::R0, Reg::R0, 0, helper as i32)
    }
    /// `return R0`
    pub fn exit() -> Insn {
        Insn::new(CLASS_JMP | JMP_EXIT, Reg::R0, Reg::R0, 0, 0)
    }
    /// `dst = map` — a 64-bit immediate the loader patches from a map fd. Two slots.
    pub fn ld_map_fd(dst: Reg, map: BorrowedFd<'_>) -> [Insn; 2] {
        let code = CLASS_LD | SIZE_DW | MODE_IMM;
        let mut first = Insn::new(code, dst, Reg::R0, 0, map.as_raw_fd());
        first.regs |= BPF_PSEUDO_MAP_FD << 4;
        [first, Insn::default()]
    }
}

// ---------------------------------------------------------------------------------------------
// Assembler: jumps name labels; offsets are worked out in finish().
// ---------------------------------------------------------------------------------------------

/// Builds a program one instruction a line; jumps target named labels.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<&'static str, usize>,
    duplicate_label: Option<&'static str>,
    /// (index of a jump instruction, label it goes to)
    pending_jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    /// Append a plain instruction.
    pub fn op(&mut self, insn: Insn) -> &mut Asm {
        self.insns.push(insn);
        self
    }

    /// Append a two-slot instruction (ld_imm64).
    pub fn op2(&mut self, pair: [Insn; 2]) -> &mut Asm {
        self.insns.extend(pair);
        self
    }

    /// Name the position of the next instruction.
    pub fn label(&mut self, name: &'static str) -> &mut Asm {
        if self.labels.insert(name, self.insns.len()).is_some() {
            self.duplicate_label.get_or_insert(name);
        }
        self
    }

    fn jump(&mut self, code: u8, dst: Reg, src: Reg, imm: i32, to: &'static str) -> &mut Asm {
        self.pending_jumps.push((self.insns.len(), to));
        self.op(Insn::new(code, dst, src, 0, imm))
    }
    /// `goto to`
    pub fn goto(&mut self, to: &'static str) -> &mut Asm {
        self.jump(CLASS_JMP | JMP_JA, Reg::R0, Reg::R0, 0, to)
    }
    /// `if reg == imm goto to`
    pub fn jump_if_eq_imm(&mut self, reg: Reg, imm: i32, to: &'static str) -> &mut Asm {
        self.jump(CLASS_JMP | JMP_JEQ | SRC_K, reg, Reg::R0, imm, to)
    }
    /// `if reg != imm goto to`
    pub fn jump_if_ne_imm(&mut self, reg: Reg, imm: i32, to: &'static str) -> &mut Asm {
        self.jump(CLASS_JMP | JMP_JNE | SRC_K, reg, Reg::R0, imm, to)
    }
    /// `if reg > imm goto to` (unsigned)
    pub fn jump_if_gt_imm(&mut self, reg: Reg, imm: i32, to: &'static str) -> &mut Asm {
        self.jump(CLASS_JMP | JMP_JGT | SRC_K, reg, Reg::R0, imm, to)
    }
    /// `if reg > other goto to` (unsigned)
    pub fn jump_if_gt_reg(&mut self, reg: Reg, other: Reg, to: &'static str) -> &mut Asm {
        self.jump(CLASS_JMP | JMP_JGT | SRC_X, reg, other, 0, to)
    }
    /// `if reg < other goto to` (unsigned)
    pub fn jump_if_lt_reg(&mut self, reg: Reg, other: Reg, to: &'static str) -> &mut Asm {
        self.jump(CLASS_JMP | JMP_JLT | SRC_X, reg, other, 0, to)
    }

    /// Resolve every jump to its label. A jump's offset counts instructions after the jump
    /// itself, and ld_imm64 counts as two because it occupies two slots.
    pub fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        if let Some(name) = self.duplicate_label {
            return Err(AsmError::DuplicateLabel(name));
        }
        for &(at, name) in &self.pending_jumps {
            let target = *self.labels.get(name).ok_or(AsmError::UnknownLabel(name))?;
            let distance = target as i64 - (at as i64 + 1);
            self.insns[at].off = i16::try_from(distance).map_err(|_| AsmError::JumpTooFar(name))?;
        }
        Ok(self.insns)
    }
}

// ---------------------------------------------------------------------------------------------
// bpf(2)
// ---------------------------------------------------------------------------------------------

/// `bpf(cmd, attr, size)`; returns the non-negative result or the errno.
fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> Result<libc::c_long, Errno> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of `union bpf_attr` for `cmd`,
    // and we pass its true size, so the kernel reads (and for lookups writes) only inside it.
    // Pointers stored inside `attr` point at buffers that outlive this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    Errno::result(rc)
}

/// `bpf()` for a command that returns a new file descriptor.
fn sys_bpf_fd<T>(cmd: libc::c_int, attr: &mut T) -> Result<OwnedFd, Errno> {
    let fd = sys_bpf(cmd, attr)?;
    // SAFETY: on success these commands return a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// The map kinds the steering program uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapType {
    /// BPF_MAP_TYPE_HASH: entries come and go; a lookup of a missing key answers NULL.
    Hash = 1,
    /// BPF_MAP_TYPE_ARRAY: fixed entries, zero-filled, cannot be deleted.
    Array = 2,
    /// BPF_MAP_TYPE_REUSEPORT_SOCKARRAY: slot -> listening socket. Update with a socket fd;
    /// lookup from user space returns the socket cookie; a socket closes out of it by itself.
    ReuseportSockarray = 20,
    /// BPF_MAP_TYPE_LRU_HASH: a hash whose least recently used entry makes room when it is full.
    LruHash = 9,
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const _: () = assert!(offset_of!(MapElemAttr, key) == 8 && offset_of!(MapElemAttr, flags) == 24);

/// A BPF map with `u32` keys.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    name: &'static str,
}

impl Map {
    /// Create a map; `name` is only used in error messages.
    pub fn create(
        name: &'static str,
        map_type: MapType,
        value_size: u32,
        max_entries: u32,
    ) -> Result<Map, BpfError> {
        let mut attr = MapCreateAttr {
            map_type: map_type as u32,
            key_size: size_of::<u32>() as u32,
            value_size,
            max_entries,
            ..Default::default()
        };
        let fd = sys_bpf_fd(BPF_MAP_CREATE, &mut attr)
            .map_err(|e| BpfError::new(format!("create the BPF map {name:?}"), e))?;
        Ok(Map { fd, name })
    }

    fn elem_call(&self, cmd: libc::c_int, key: u32, value: u64) -> Result<(), Errno> {
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value,
            flags: BPF_ANY,
            ..Default::default()
        };
        sys_bpf(cmd, &mut attr).map(drop)
    }

    /// `map[key] = value` for a map with 4-byte values.
    pub fn update_u32(&self, key: u32, value: u32) -> Result<(), BpfError> {
        self.elem_call(BPF_MAP_UPDATE_ELEM, key, &value as *const u32 as u64)
            .map_err(|e| self.error(format!("set entry {key} to {value}"), e))
    }

    /// `map[key] = value` for a map with 8-byte values. The raw errno is returned so the
    /// caller can say which socket a REUSEPORT_SOCKARRAY refused.
    pub fn update_u64(&self, key: u32, value: u64) -> Result<(), Errno> {
        self.elem_call(BPF_MAP_UPDATE_ELEM, key, &value as *const u64 as u64)
    }

    /// Remove `key`; `Ok(false)` if it was already empty.
    pub fn delete(&self, key: u32) -> Result<bool, BpfError> {
        match self.elem_call(BPF_MAP_DELETE_ELEM, key, 0) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.error(format!("delete entry {key}"), e)),
        }
    }

    /// `map[key]` for a map with 8-byte values (a sockarray answers with the socket cookie).
    pub fn lookup_u64(&self, key: u32) -> Result<Option<u64>, BpfError> {
        let mut value = 0u64;
        self.lookup_into(key, &mut value as *mut u64 as u64)
            .map(|found| found.then_some(value))
    }

    fn lookup_into(&self, key: u32, value_ptr: u64) -> Result<bool, BpfError> {
        match self.elem_call(BPF_MAP_LOOKUP_ELEM, key, value_ptr) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.error(format!("read entry {key}"), e)),
        }
    }

    /// `map[key]` into `value` (exactly the map's value size); false when there is no entry.
    pub fn lookup_bytes(&self, key: u32, value: &mut [u8]) -> Result<bool, BpfError> {
        self.lookup_into(key, value.as_mut_ptr() as u64)
    }

    /// The key after `key` (the first key for None); None at the end. An entry deleted meanwhile
    /// makes the kernel start over from the first key, so a walk reads at most one map's worth of
    /// keys more than once.
    pub fn next_key(&self, key: Option<u32>) -> Result<Option<u32>, BpfError> {
        let mut next = 0u32;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ref().map_or(0, |k| k as *const u32 as u64),
            value: &mut next as *mut u32 as u64,
            ..Default::default()
        };
        match sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => Ok(Some(next)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.error("walk the keys".into(), e)),
        }
    }

    fn error(&self, what: String, errno: Errno) -> BpfError {
        BpfError::new(format!("{what} of the BPF map {:?}", self.name), errno)
    }
}

impl AsFd for Map {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Which SK_REUSEPORT hook the program is verified for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReuseportAttach {
    #[cfg(test)]
    /// BPF_SK_REUSEPORT_SELECT: runs only to pick a socket for a new connection/datagram.
    Select = 39,
    /// BPF_SK_REUSEPORT_SELECT_OR_MIGRATE: also runs when a listener closes, to move its
    /// queued connections to another listener (whatever net.ipv4.tcp_migrate_req says).
    SelectOrMigrate = 40,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
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
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const _: () = assert!(offset_of!(ProgLoadAttr, prog_name) == 48);
const _: () = assert!(offset_of!(ProgLoadAttr, expected_attach_type) == 68);

/// Licence string the kernel records; the helpers we call are not GPL-only.
const LICENSE: &[u8] = b"MIT\0";

/// A loaded BPF program.
#[derive(Debug)]
pub struct Program {
    fd: OwnedFd,
}

impl Program {
    /// Load an SK_REUSEPORT program. `name` (up to 15 of [A-Za-z0-9_.]) shows in `bpftool`.
    /// On refusal the error carries the verifier's log.
    pub fn load_sk_reuseport(
        name: &str,
        insns: &[Insn],
        attach: ReuseportAttach,
    ) -> Result<Program, BpfError> {
        let action = || {
            format!(
                "load the BPF program {name:?} ({} instructions)",
                insns.len()
            )
        };
        // First without a log: logging costs the kernel time, and a valid program whose log
        // overflows the buffer would be refused with ENOSPC.
        match Program::load(name, insns, attach, None) {
            Ok(fd) => return Ok(Program { fd }),
            Err(Errno::EPERM) => return Err(BpfError::new(action(), Errno::EPERM)),
            Err(_) => {}
        }
        let mut log = vec![0u8; VERIFIER_LOG_BYTES];
        match Program::load(name, insns, attach, Some(&mut log)) {
            Ok(fd) => Ok(Program { fd }),
            Err(errno) => Err(BpfError {
                action: action(),
                errno,
                verifier_log: Some(log_text(&log)),
            }),
        }
    }

    fn load(
        name: &str,
        insns: &[Insn],
        attach: ReuseportAttach,
        log: Option<&mut [u8]>,
    ) -> Result<OwnedFd, Errno> {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SK_REUSEPORT,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            prog_name: prog_name(name),
            expected_attach_type: attach as u32,
            ..Default::default()
        };
        if let Some(log) = log {
            attr.log_level = VERIFIER_LOG_LEVEL;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
        }
        sys_bpf_fd(BPF_PROG_LOAD, &mut attr)
    }
}

impl AsFd for Program {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The kernel's 16-byte, NUL-terminated program name.
fn prog_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (slot, byte) in out.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte;
    }
    out
}

fn log_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `setsockopt(SOL_SOCKET, name, value: i32)`
fn set_socket_option(socket: BorrowedFd<'_>, name: libc::c_int, value: i32) -> Result<(), Errno> {
    // SAFETY: we pass a pointer to a live i32 and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            &value as *const i32 as *const libc::c_void,
            size_of::<i32>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

/// Make `program` choose sockets for the whole reuseport group `socket` belongs to,
/// replacing any program the group had. `socket` must already be bound (and, for TCP,
/// listening) in the group: on an unbound socket the kernel attaches to a private group of
/// that socket alone, and its later bind() to a port that has a group fails (EADDRINUSE).
pub fn attach_reuseport_program(socket: BorrowedFd<'_>, program: &Program) -> Result<(), BpfError> {
    set_socket_option(socket, SO_ATTACH_REUSEPORT_EBPF, program.fd.as_raw_fd()).map_err(|e| {
        let action = format!(
            "attach the steering program to socket fd {} (SO_ATTACH_REUSEPORT_EBPF)",
            socket.as_raw_fd()
        );
        BpfError::new(action, e)
    })
}

#[cfg(test)]
mod tests;
