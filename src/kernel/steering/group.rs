//! A `SteeringGroup` decides which sockets of one reuseport group (one bind address and port)
//! receive new connections, by an SK_REUSEPORT program reading a table the launcher rewrites.
//! Invariant: the half of the table the program reads only names sockarray slots that hold a
//! wanted socket, and it is never edited in place — the other half is written, then `active`
//! flips, then slots named by neither half are emptied. The program never drops: whenever it cannot
//! choose, it returns SK_PASS and the kernel picks by its own hash.
//!
//! Maps:
//! - `sockets`: REUSEPORT_SOCKARRAY, slot -> listening socket. A socket sits in at most one
//!   sockarray slot of any map (a second insert is EBUSY), and leaves it by itself on close.
//! - `table`: ARRAY u32 -> u32 in two halves of `MAX_RECEIVERS + 1` keys. Half h starts at
//!   key `h * (MAX_RECEIVERS + 1)`, which holds `count`; the next `count` keys hold slots.
//! - `active`: ARRAY with one u32, the live half (0 or 1).
//! - `probes`: HASH, the TCP source port of one of the launcher's own probe connections (as the
//!   packet carries it) -> the sockarray slot of the worker it is meant for. An entry lives for
//!   one probe; the slot it names is kept filled meanwhile, receiving or not.
//!
//! - `flows` (UDP groups with `--udp-flow-idle` only): LRU_HASH, a datagram's 4-tuple hash ->
//!   the slot its flow was placed on and when it was last seen (flows.rs). While flows may
//!   name them, the sockets of steered-out workers stay in `sockets` ("kept"), receiving
//!   nothing new but their flows' datagrams.
//!
//! The program is attached to the group, not to a socket: the kernel keeps it while any
//! socket of the group lives, and a group re-created after all its sockets closed has none.
//! So the launcher re-attaches on every new listener; re-attaching is cheap and harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::libc;

use super::bpf::{
    attach_reuseport_program, Asm, AsmError, BpfError, Helper, Insn, Map, MapType, Program, Reg,
    ReuseportAttach,
};
use super::flows::Flows;

/// Receivers one group can steer to: the launcher's --workers limit (MAX_WORKERS in cli.rs).
pub const MAX_RECEIVERS: u32 = 4096;

/// Name shown by `bpftool prog`.
const PROGRAM_NAME: &str = "reuseport_steer";

/// `offsetof(struct sk_reuseport_md, hash)`: data(8) data_end(8) len eth_protocol
/// ip_protocol bind_inany (4 each), then the 4-tuple hash.
const CTX_HASH: i16 = 32;
/// `SK_PASS` in `enum sk_action`: use the selected socket, or the kernel's choice if none.
/// (SK_DROP would refuse the connection — the program never returns it.)
const SK_PASS: i32 = 1;
/// Probe connections under way at once in one group: one per worker being probed.
pub const MAX_PROBES: u32 = 4096;
/// `offsetof(struct sk_reuseport_md, data)` and `data_end`: the packet from the transport
/// header on (empty for a queued connection being migrated).
const CTX_DATA: i16 = 0;
const CTX_DATA_END: i16 = 8;
/// Stack slot for map keys handed to bpf_map_lookup_elem.
const STACK_KEY: i16 = -4;
/// Stack slot for the sockarray slot handed to bpf_sk_select_reuseport.
const STACK_SLOT: i16 = -8;

/// SO_COOKIE (include/uapi/asm-generic/socket.h): the socket's 64-bit id, which a sockarray
/// lookup returns; not in libc for linux-gnu yet.
const SO_COOKIE: libc::c_int = 57;

/// The kernel-internal ENOTSUPP (include/linux/errno.h) a sockarray answers for a socket of
/// the wrong kind; user space sees it as "Unknown error 524".
const KERNEL_ENOTSUPP: i32 = 524;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why steering could not be set up or changed.
#[derive(Debug)]
pub enum SteerError {
    /// A map, the program, or attaching it failed in the kernel.
    Bpf(BpfError),
    /// The program's source is inconsistent.
    Program(AsmError),
    /// The kernel would not put this socket (by the caller's id) into the sockets map.
    SocketRefused {
        /// The caller's id for the socket (e.g. its inode).
        id: u64,
        /// The kernel's answer.
        errno: Errno,
    },
    /// More receivers were asked for than the table holds.
    TooManyReceivers {
        /// How many distinct sockets were asked for.
        wanted: usize,
    },
}

impl SteerError {
    fn socket_refusal_reason(errno: Errno) -> &'static str {
        match errno {
            Errno::EBUSY => "it is already in a steering map (a socket can be in only one)",
            Errno::EINVAL => {
                "it is not a listening TCP or bound UDP socket with SO_REUSEPORT in a group"
            }
            Errno::EOPNOTSUPP => "it is not a TCP or UDP socket over IPv4/IPv6",
            Errno::EBADF | Errno::ENOTSOCK => "its file descriptor is not an open socket",
            _ if errno as i32 == KERNEL_ENOTSUPP => "it is not a TCP or UDP socket over IPv4/IPv6",
            _ => "the kernel refused it",
        }
    }
}

impl SteerError {
    /// The verifier's explanation, when the kernel refused the program.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            SteerError::Bpf(e) => e.verifier_log.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for SteerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SteerError::Bpf(e) => e.fmt(f),
            SteerError::Program(e) => e.fmt(f),
            SteerError::SocketRefused { id, errno } => {
                let cause = std::io::Error::from_raw_os_error(*errno as i32);
                let reason = SteerError::socket_refusal_reason(*errno);
                write!(
                    f,
                    "unable to steer connections to socket {id}: {reason} ({cause})"
                )
            }
            SteerError::TooManyReceivers { wanted } => write!(
                f,
                "unable to steer connections to {wanted} sockets: at most {MAX_RECEIVERS} per port"
            ),
        }
    }
}

impl std::error::Error for SteerError {}

impl From<BpfError> for SteerError {
    fn from(e: BpfError) -> SteerError {
        SteerError::Bpf(e)
    }
}

impl From<AsmError> for SteerError {
    fn from(e: AsmError) -> SteerError {
        SteerError::Program(e)
    }
}

// ---------------------------------------------------------------------------------------------
// Table layout
// ---------------------------------------------------------------------------------------------

/// Where things live in the maps, for a given number of receivers.
#[derive(Clone, Copy, Debug)]
struct Layout {
    max_receivers: u32,
}

impl Layout {
    /// Keys in one half of `table`: the count, then one per receiver.
    fn half_len(self) -> u32 {
        self.max_receivers + 1
    }
    fn count_key(self, half: u32) -> u32 {
        half * self.half_len()
    }
    fn entry_key(self, half: u32, index: u32) -> u32 {
        self.count_key(half) + 1 + index
    }
    fn table_len(self) -> u32 {
        2 * self.half_len()
    }
    /// Sockarray slots: a switch from one full generation to the next holds both sets while
    /// the new half is written.
    /// `MAX_PROBES` more hold probed sockets that do not receive.
    fn socket_slots(self) -> u32 {
        2 * self.max_receivers + MAX_PROBES
    }
}

// ---------------------------------------------------------------------------------------------
// The program
// ---------------------------------------------------------------------------------------------

/// The kernel runs this for every new connection (TCP SYN), every datagram (UDP), and, with
/// SELECT_OR_MIGRATE, for each queued connection of a closing listener (then with an empty
/// skb; `hash` is still the connection's). In words:
///
/// 0a. (With flows, UDP only) a datagram of a live flow goes to its socket (flows.rs), SK_PASS.
/// 0. A probe of the launcher's: when the packet holds a TCP source port (not while migrating:
///    the skb is empty then) and `probes` names a slot for it, choose that socket and, when it
///    is there, SK_PASS — whether or not that socket receives. Otherwise go on with 1.
/// 1. half = active[0]; count = table[half base].
/// 2. No receivers → SK_PASS without choosing: the kernel hashes over the whole group.
/// 3. idx = hash % count; choose sockets[table[half base + 1 + idx]].
/// 4. If that slot is empty (its socket just closed), choose the next entry, once.
/// 5. (With flows, UDP only) a socket chosen in 3 or 4 is recorded as the flow's.
/// 6. SK_PASS: the kernel uses the chosen socket, or its own hash if none was chosen.
///
/// Registers: r6 = ctx, r7 = key of the live half's count, r8 = count, r9 = idx
/// (r6..r9 survive helper calls).
fn steering_program(
    layout: Layout,
    maps: &Maps,
    flows: Option<&Flows>,
) -> Result<Vec<Insn>, AsmError> {
    use Reg::*;
    let half_len = layout.half_len() as i32;
    let chosen = if flows.is_some() { "chosen" } else { "pass" };
    let mut a = Asm::new();
    a.op(Insn::mov64_reg(R6, R1)); //                   r6 = ctx
    if let Some(flows) = flows {
        flows.emit_follow(&mut a, maps.sockets.as_fd(), "pass"); // 0a.
    }
    a
        // 0. a probe: the source port (first 2 bytes of the TCP header) names the slot
        .op(Insn::ldx_dw(R2, R6, CTX_DATA)) //          r2 = data
        .op(Insn::ldx_dw(R3, R6, CTX_DATA_END)) //      r3 = data_end
        .op(Insn::mov64_reg(R4, R2)) //                 r4 = data
        .op(Insn::add64_imm(R4, 2)) //                  r4 = data + 2
        .jump_if_gt_reg(R4, R3, "by_table") //          no source port (migrating): skip
        .op(Insn::ldx_h(R4, R2, 0)) //                  r4 = source port, network order
        .op(Insn::stx_w(R10, STACK_KEY, R4)) //         key = r4
        .op(Insn::mov64_reg(R2, R10)) //                r2 = frame pointer
        .op(Insn::add64_imm(R2, STACK_KEY.into())) //   r2 = &key
        .op2(Insn::ld_map_fd(R1, maps.probes.as_fd())) // r1 = probes
        .op(Insn::call(Helper::MapLookupElem)) //       r0 = &probes[port] or NULL
        .jump_if_eq_imm(R0, 0, "by_table") //           not a probe
        .op(Insn::ldx_w(R1, R0, 0)) //                  r1 = slot
        .op(Insn::stx_w(R10, STACK_SLOT, R1)) //        stack slot = r1
        .op(Insn::mov64_reg(R1, R6)) //                 r1 = ctx
        .op2(Insn::ld_map_fd(R2, maps.sockets.as_fd())) // r2 = sockets
        .op(Insn::mov64_reg(R3, R10)) //                r3 = frame pointer
        .op(Insn::add64_imm(R3, STACK_SLOT.into())) //  r3 = &slot
        .op(Insn::mov64_imm(R4, 0)) //                  r4 = flags
        .op(Insn::call(Helper::SkSelectReuseport)) //   r0 = 0 or -ENOENT (slot empty)
        .jump_if_eq_imm(R0, 0, "pass") //               chosen: the probed worker
        .label("by_table")
        // 1. which half is live, and how many receivers it names
        .op(Insn::st_w(R10, STACK_KEY, 0)) //           key = 0
        .op(Insn::mov64_reg(R2, R10)) //                r2 = frame pointer
        .op(Insn::add64_imm(R2, STACK_KEY.into())) //   r2 = &key
        .op2(Insn::ld_map_fd(R1, maps.active.as_fd())) // r1 = active
        .op(Insn::call(Helper::MapLookupElem)) //       r0 = &active[0]
        .jump_if_eq_imm(R0, 0, "pass") //               (never NULL; the verifier insists)
        .op(Insn::ldx_w(R7, R0, 0)) //                  r7 = half
        .op(Insn::mul64_imm(R7, half_len)) //           r7 = key of the half's count
        .op(Insn::stx_w(R10, STACK_KEY, R7)) //         key = r7
        .op(Insn::mov64_reg(R2, R10)) //                r2 = frame pointer
        .op(Insn::add64_imm(R2, STACK_KEY.into())) //   r2 = &key
        .op2(Insn::ld_map_fd(R1, maps.table.as_fd())) // r1 = table
        .op(Insn::call(Helper::MapLookupElem)) //       r0 = &table[r7]
        .jump_if_eq_imm(R0, 0, "pass") //               half out of range: kernel hash
        .op(Insn::ldx_w(R8, R0, 0)) //                  r8 = count
        // 2. nobody to steer to
        .jump_if_eq_imm(R8, 0, "pass") //               count == 0: kernel hash
        // 3. pick by the connection's hash
        .op(Insn::ldx_w(R9, R6, CTX_HASH)) //           r9 = ctx->hash
        .op(Insn::mod64_reg(R9, R8)) //                 r9 = idx = hash % count
        .label("first_try");
    select_entry(&mut a, maps); //                      r0 = 0 if chosen
    a.jump_if_eq_imm(R0, 0, chosen) //                  chosen
        // 4. slot empty: try the next entry, wrapping
        .op(Insn::add64_imm(R9, 1)) //                  idx += 1
        .jump_if_lt_reg(R9, R8, "second_try") //        idx < count: keep
        .op(Insn::mov64_imm(R9, 0)) //                  else idx = 0
        .label("second_try");
    select_entry(&mut a, maps); //                      r0 = 0 if chosen
    if let Some(flows) = flows {
        a.jump_if_ne_imm(R0, 0, "pass") //              none chosen: nothing to record
            .label("chosen");
        flows.emit_record(&mut a, STACK_SLOT); //       5.
    }
    a.label("pass") // 6.
        .op(Insn::mov64_imm(R0, SK_PASS)) //            r0 = SK_PASS
        .op(Insn::exit()); //                           return
    a.finish()
}

/// Emit `r0 = bpf_sk_select_reuseport(ctx, sockets, &table[r7 + 1 + r9], 0)`;
/// jumps to "pass" if the table entry does not exist.
fn select_entry(a: &mut Asm, maps: &Maps) {
    use Reg::*;
    a.op(Insn::mov64_reg(R1, R7)) //                   r1 = key of the count
        .op(Insn::add64_imm(R1, 1)) //                  r1 = key of entry 0
        .op(Insn::add64_reg(R1, R9)) //                 r1 = key of entry idx
        .op(Insn::stx_w(R10, STACK_KEY, R1)) //         key = r1
        .op(Insn::mov64_reg(R2, R10)) //                r2 = frame pointer
        .op(Insn::add64_imm(R2, STACK_KEY.into())) //   r2 = &key
        .op2(Insn::ld_map_fd(R1, maps.table.as_fd())) // r1 = table
        .op(Insn::call(Helper::MapLookupElem)) //       r0 = &table[key]
        .jump_if_eq_imm(R0, 0, "pass") //               count was corrupt: kernel hash
        .op(Insn::ldx_w(R1, R0, 0)) //                  r1 = slot
        .op(Insn::stx_w(R10, STACK_SLOT, R1)) //        stack slot = r1
        .op(Insn::mov64_reg(R1, R6)) //                 r1 = ctx
        .op2(Insn::ld_map_fd(R2, maps.sockets.as_fd())) // r2 = sockets
        .op(Insn::mov64_reg(R3, R10)) //                r3 = frame pointer
        .op(Insn::add64_imm(R3, STACK_SLOT.into())) //  r3 = &slot
        .op(Insn::mov64_imm(R4, 0)) //                  r4 = flags
        .op(Insn::call(Helper::SkSelectReuseport)); //  r0 = 0 or -ENOENT (slot empty)
}

// ---------------------------------------------------------------------------------------------
// The group
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Maps {
    sockets: Map,
    table: Map,
    active: Map,
    probes: Map,
}

impl Maps {
    fn create(layout: Layout) -> Result<Maps, BpfError> {
        let u32_size = size_of::<u32>() as u32;
        // 8-byte values so that a user-space lookup can return the socket cookie.
        let sockets = Map::create(
            "sockets",
            MapType::ReuseportSockarray,
            size_of::<u64>() as u32,
            layout.socket_slots(),
        )?;
        let table = Map::create("table", MapType::Array, u32_size, layout.table_len())?;
        let active = Map::create("active", MapType::Array, u32_size, 1)?;
        let probes = Map::create("probes", MapType::Hash, u32_size, MAX_PROBES)?;
        Ok(Maps {
            sockets,
            table,
            active,
            probes,
        })
    }
}

/// Steering for one reuseport group. See the module comment for the maps' layout.
#[derive(Debug)]
pub struct SteeringGroup {
    layout: Layout,
    maps: Maps,
    program: Program,
    /// The half of `table` the program reads.
    live_half: u32,
    /// Ids in the live half, in table order.
    receiving: Vec<u64>,
    /// Ids of the half that was live before the last flip. Their slots are emptied only at the next
    /// change: a program that read `active` just before the flip may still pick from that half, and an
    /// emptied slot there would make it fall back to the kernel's hash (which includes strangers).
    previous: Vec<u64>,
    /// Every socket we put in `sockets`, by the caller's id.
    slots: BTreeMap<u64, u32>,
    /// Sockarray slots no id holds.
    free_slots: BTreeSet<u32>,
    /// Probes under way: `probes` key -> the id of the socket it is routed to.
    probing: BTreeMap<u32, u64>,
    /// UDP flows (`--udp-flow-idle`); None: the program has no flow rules.
    flows: Option<Flows>,
    /// Ids of sockets kept in `sockets` for their flows, not receiving.
    kept: Vec<u64>,
}

impl SteeringGroup {
    /// Create the maps and load the program; nothing is attached yet and no socket is chosen.
    pub fn new() -> Result<SteeringGroup, SteerError> {
        SteeringGroup::with(
            Layout {
                max_receivers: MAX_RECEIVERS,
            },
            ReuseportAttach::SelectOrMigrate,
            None,
        )
    }

    /// Like `new`, with UDP flows that stay with their socket while a datagram of theirs came
    /// within `idle`.
    pub fn with_flows(idle: std::time::Duration) -> Result<SteeringGroup, SteerError> {
        let layout = Layout {
            max_receivers: MAX_RECEIVERS,
        };
        SteeringGroup::with(layout, ReuseportAttach::SelectOrMigrate, Some(idle))
    }

    /// Whether this kernel and these privileges allow steering, for `--steer auto`: creates
    /// one-entry maps and loads the program once.
    pub fn probe_support() -> Result<(), SteerError> {
        let tiny = Layout { max_receivers: 1 };
        SteeringGroup::with(tiny, ReuseportAttach::SelectOrMigrate, None).map(drop)
    }

    fn with(
        layout: Layout,
        attach: ReuseportAttach,
        flow_idle: Option<std::time::Duration>,
    ) -> Result<SteeringGroup, SteerError> {
        let maps = Maps::create(layout)?;
        let flows = flow_idle.map(Flows::create).transpose()?;
        let insns = steering_program(layout, &maps, flows.as_ref())?;
        let program = Program::load_sk_reuseport(PROGRAM_NAME, &insns, attach)?;
        Ok(SteeringGroup {
            layout,
            maps,
            program,
            live_half: 0,
            receiving: Vec::new(),
            previous: Vec::new(),
            slots: BTreeMap::new(),
            free_slots: (0..layout.socket_slots()).collect(),
            probing: BTreeMap::new(),
            flows,
            kept: Vec::new(),
        })
    }

    /// Attach the program to the group `listener` is in. `listener` must already be bound
    /// and (for TCP) listening. On an unbound SO_REUSEPORT socket the kernel accepts the call
    /// but gives the socket a private group of its own: bind() to a port that already has a
    /// group then fails with EADDRINUSE (Linux 6.18; on a fresh port the private group simply
    /// becomes the port's group). Re-attaching through another socket of the same group just
    /// replaces the program with itself; the launcher does it for every new listener, which
    /// also covers a group re-created after all its sockets had closed.
    pub fn attach(&self, listener: BorrowedFd<'_>) -> Result<(), SteerError> {
        Ok(attach_reuseport_program(listener, &self.program)?)
    }

    /// Make exactly `sockets` (caller's id, fd) the receivers of new connections, spread by
    /// the connection hash. An empty list means "no choice": the kernel hashes over every
    /// socket in the group — the launcher only does this when no worker is ready, when that
    /// is the best there is. Duplicate ids count once. An error in steps 1-3 leaves the live table as it was.
    ///
    /// Order, so the live half never names an empty or stale slot:
    /// 1. each socket gets its slot filled (a new socket gets a slot the live half does not use);
    /// 2. the other half's entries, then its count, are written;
    /// 3. `active` flips to that half;
    /// 4. slots of sockets named by neither the new live half nor the one it replaced are emptied
    ///    and forgotten.
    ///
    /// A program run that read `active` just before a flip finishes on the old half, whose
    /// sockets stay in their slots until the next call: it picks one of them (a worker being
    /// steered out, which still accepts), never an empty slot, where it would fall back to the
    /// kernel's hash over the whole group, strangers included.
    pub fn set_receiving(&mut self, sockets: &[(u64, BorrowedFd<'_>)]) -> Result<(), SteerError> {
        let wanted = distinct_by_id(sockets);
        if wanted.len() > self.layout.max_receivers as usize {
            return Err(SteerError::TooManyReceivers {
                wanted: wanted.len(),
            });
        }
        let slots = wanted
            .iter()
            .map(|&(id, fd)| self.fill_slot(id, fd))
            .collect::<Result<Vec<u32>, SteerError>>()?;
        let next_half = 1 - self.live_half;
        self.write_half(next_half, &slots)?;
        self.maps.active.update_u32(0, next_half)?;
        self.live_half = next_half;
        self.previous = std::mem::replace(
            &mut self.receiving,
            wanted.iter().map(|&(id, _)| id).collect(),
        );
        self.forget_unwanted()
    }

    /// Routes the TCP connection whose source port is `source_port` to the socket `fd` (the
    /// caller's `id`), receiving or not, until `end_probe`. The caller binds the probe socket to
    /// that port before, and connects after.
    pub fn start_probe(
        &mut self,
        source_port: u16,
        id: u64,
        fd: BorrowedFd<'_>,
    ) -> Result<(), SteerError> {
        if self.probing.len() >= MAX_PROBES as usize {
            return Err(SteerError::TooManyReceivers {
                wanted: self.probing.len() + 1,
            });
        }
        let slot = self.fill_slot(id, fd)?;
        let key = probe_key(source_port);
        self.probing.insert(key, id);
        self.maps.probes.update_u32(key, slot)?;
        Ok(())
    }

    /// Forgets the probe from `source_port`; its socket's slot is emptied unless it receives.
    pub fn end_probe(&mut self, source_port: u16) -> Result<(), SteerError> {
        let key = probe_key(source_port);
        if self.probing.remove(&key).is_some() {
            self.maps.probes.delete(key)?;
        }
        self.forget_unwanted()
    }

    /// Whether the program keeps UDP flows with their socket.
    pub fn has_flows(&self) -> bool {
        self.flows.is_some()
    }

    /// With flows: keeps exactly `sockets` in the sockarray, besides the receivers, for the flows
    /// that may name them (call before `set_receiving`, which forgets what is neither).
    pub fn keep(&mut self, sockets: &[(u64, BorrowedFd<'_>)]) -> Result<(), SteerError> {
        self.kept.clear();
        for &(id, fd) in &distinct_by_id(sockets) {
            self.fill_slot(id, fd)?;
            self.kept.push(id);
        }
        Ok(())
    }

    /// With flows: when a datagram of a flow on one of the sockets `ids` was last routed
    /// (CLOCK_MONOTONIC ns); None when no flow of theirs is remembered.
    pub fn flow_last_seen(&self, ids: &[u64]) -> Result<Option<u64>, SteerError> {
        let Some(flows) = &self.flows else {
            return Ok(None);
        };
        let slots = self.slots_of(ids);
        if slots.is_empty() {
            return Ok(None);
        }
        Ok(flows.last_seen(&slots)?)
    }

    /// With flows: how many flows on the sockets `ids` are live at `now_ns` (CLOCK_MONOTONIC);
    /// None for a group without flows.
    pub fn live_flows(&self, ids: &[u64], now_ns: u64) -> Result<Option<u32>, SteerError> {
        let Some(flows) = &self.flows else {
            return Ok(None);
        };
        let slots = self.slots_of(ids);
        if slots.is_empty() {
            return Ok(Some(0));
        }
        Ok(Some(flows.live(&slots, now_ns)?))
    }

    /// The sockarray slots of the sockets `ids` (those this group holds).
    fn slots_of(&self, ids: &[u64]) -> BTreeSet<u32> {
        ids.iter()
            .filter_map(|id| self.slots.get(id))
            .copied()
            .collect()
    }

    #[cfg(test)]
    /// Ids of the sockets currently receiving, in table order.
    pub fn receiving(&self) -> Vec<u64> {
        self.receiving.clone()
    }

    /// Step 1 for one socket: make sure its slot holds it, and return the slot. A known id
    /// whose slot emptied (the socket closed) or holds another socket is refilled from `fd`.
    fn fill_slot(&mut self, id: u64, fd: BorrowedFd<'_>) -> Result<u32, SteerError> {
        let refused = |errno| SteerError::SocketRefused { id, errno };
        let cookie = socket_cookie(fd).map_err(refused)?;
        if let Some(&slot) = self.slots.get(&id) {
            if self.maps.sockets.lookup_u64(slot)? != Some(cookie) {
                self.put_socket(slot, fd).map_err(refused)?;
            }
            return Ok(slot);
        }
        let slot = self
            .free_slots
            .pop_first()
            .ok_or(SteerError::TooManyReceivers {
                wanted: self.slots.len() + 1,
            })?;
        if let Err(errno) = self.put_socket(slot, fd) {
            self.free_slots.insert(slot);
            return Err(refused(errno));
        }
        self.slots.insert(id, slot);
        Ok(slot)
    }

    fn put_socket(&self, slot: u32, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        self.maps.sockets.update_u64(slot, fd.as_raw_fd() as u64)
    }

    /// Step 2: the half's entries first, its count last.
    fn write_half(&self, half: u32, slots: &[u32]) -> Result<(), BpfError> {
        for (index, &slot) in (0u32..).zip(slots) {
            self.maps
                .table
                .update_u32(self.layout.entry_key(half, index), slot)?;
        }
        let count = slots.len() as u32; // <= MAX_RECEIVERS, checked by the caller
        self.maps
            .table
            .update_u32(self.layout.count_key(half), count)
    }

    /// Step 4: empty and free the slots of ids in neither half. An already-empty slot
    /// (its socket closed) is fine.
    fn forget_unwanted(&mut self) -> Result<(), SteerError> {
        let unwanted: Vec<(u64, u32)> = self
            .slots
            .iter()
            .filter(|(id, _)| {
                !self.receiving.contains(id)
                    && !self.previous.contains(id)
                    && !self.kept.contains(id)
            })
            .filter(|(id, _)| !self.probing.values().any(|p| p == *id))
            .map(|(&id, &slot)| (id, slot))
            .collect();
        if let Some(flows) = self.flows.as_ref().filter(|_| !unwanted.is_empty()) {
            flows.forget_slots(&unwanted.iter().map(|&(_, slot)| slot).collect())?;
        }
        for (id, slot) in unwanted {
            self.maps.sockets.delete(slot)?;
            self.slots.remove(&id);
            self.free_slots.insert(slot);
        }
        Ok(())
    }
}

impl Drop for SteeringGroup {
    /// Let go of every socket. The kernel keeps an attached program (and so these maps) while
    /// the group lives; without this its sockets would stay pinned in our sockarray, and any
    /// other `SteeringGroup` would get EBUSY for them until the program is replaced and freed.
    /// The program left behind finds count 0 and passes everything to the kernel's hash.
    fn drop(&mut self) {
        self.kept.clear();
        let released = self.set_receiving(&[]).and_then(|()| {
            self.previous.clear();
            self.forget_unwanted()
        });
        if let Err(e) = released {
            eprintln!("reuseport-launch: error: unable to release steered sockets: {e}");
        }
    }
}

/// The `probes` key for a source port: the port's two bytes as the packet carries them (network
/// order), read by the program as a u16 in host order.
fn probe_key(source_port: u16) -> u32 {
    u16::from_ne_bytes(source_port.to_be_bytes()).into()
}

/// `sockets` without repeated ids, first occurrence kept, order kept.
fn distinct_by_id<'a>(sockets: &[(u64, BorrowedFd<'a>)]) -> Vec<(u64, BorrowedFd<'a>)> {
    let mut seen = BTreeSet::new();
    sockets
        .iter()
        .copied()
        .filter(|(id, _)| seen.insert(*id))
        .collect()
}

/// The kernel's 64-bit id for the socket behind `fd` (what a sockarray lookup returns).
fn socket_cookie(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` is a live u64 and `len` its size; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    Errno::result(rc).map(|_| cookie)
}

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod probe_tests;
#[cfg(test)]
mod tests;
