//! The UDP flow table of one steering group (`--udp-flow-idle`): an LRU hash the program reads and
//! writes, from a datagram's 4-tuple hash (`ctx->hash`: the program's context carries no addresses,
//! and the hash stands in for the client's address and port) to the sockarray slot the program chose
//! for that flow and when it last routed a datagram of it (CLOCK_MONOTONIC ns). In words, for UDP
//! only (`ctx->ip_protocol`):
//!
//! - follow: a flow seen within the idle time whose slot still holds a socket goes to that socket,
//!   receiving or not, and its time is renewed;
//! - record: a datagram the table placed starts (or restarts) its flow on the chosen slot.
//!
//! Invariant: the table only ever sends a datagram to a socket the launcher put in the sockarray;
//! a flow whose socket closed, or that was idle too long, is placed by the table like a new one.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use super::bpf::{Asm, BpfError, Helper, Insn, Map, MapType, Reg};

/// Flows one group remembers; the least recently seen make room beyond it (16 bytes each).
pub const MAX_FLOWS: u32 = 65_536;
/// `offsetof(struct sk_reuseport_md, ip_protocol)` and `hash` (see group.rs's CTX_HASH).
const CTX_IP_PROTOCOL: i16 = 24;
const CTX_HASH: i16 = 32;
const IPPROTO_UDP: i32 = 17;
/// Ages are compared in units of 2^20 ns (about 1 ms), so that any idle time fits an immediate.
const AGE_SHIFT: i32 = 20;
/// Stack slots: the flow key, and the 16-byte value {slot: u32, pad: u32, last_seen_ns: u64}.
const STACK_FLOW_KEY: i16 = -12;
const STACK_VALUE: i16 = -32;
const VALUE_BYTES: usize = 16;
const VALUE_SLOT: i16 = 0;
const VALUE_SEEN: i16 = 8;

#[derive(Debug)]
pub struct Flows {
    map: Map,
    /// A flow is live while its age in 2^20 ns units is at most this: the idle time rounded down
    /// (less one unit), so the program lets a flow go no later than the launcher stops waiting for it.
    live_units: i32,
}

impl Flows {
    pub fn create(idle: Duration) -> Result<Flows, BpfError> {
        let map = Map::create("flows", MapType::LruHash, VALUE_BYTES as u32, MAX_FLOWS)?;
        let units = (idle.as_nanos() >> AGE_SHIFT).clamp(1, i32::MAX as u128) as i32;
        Ok(Flows {
            map,
            live_units: units - 1,
        })
    }

    /// Emits "follow": jumps to `chosen` when the datagram's live flow took its socket, else falls
    /// through. Clobbers r1-r5, r7, r8; keeps r6 (ctx).
    pub fn emit_follow(&self, a: &mut Asm, sockets: BorrowedFd<'_>, chosen: &'static str) {
        use Reg::*;
        a.op(Insn::ldx_w(R1, R6, CTX_IP_PROTOCOL)) //      r1 = ctx->ip_protocol
            .jump_if_ne_imm(R1, IPPROTO_UDP, "no_flow") // not UDP: no flows
            .op(Insn::ldx_w(R1, R6, CTX_HASH)) //          r1 = ctx->hash
            .op(Insn::stx_w(R10, STACK_FLOW_KEY, R1)) //   flow key = r1
            .op(Insn::mov64_reg(R2, R10)) //               r2 = frame pointer
            .op(Insn::add64_imm(R2, STACK_FLOW_KEY.into())) // r2 = &flow key
            .op2(Insn::ld_map_fd(R1, self.map.as_fd())) // r1 = flows
            .op(Insn::call(Helper::MapLookupElem)) //      r0 = &flows[hash] or NULL
            .jump_if_eq_imm(R0, 0, "no_flow") //           a new flow
            .op(Insn::mov64_reg(R7, R0)) //                r7 = &flow
            .op(Insn::call(Helper::KtimeGetNs)) //         r0 = now
            .op(Insn::mov64_reg(R8, R0)) //                r8 = now
            .op(Insn::ldx_dw(R1, R7, VALUE_SEEN)) //       r1 = last seen
            .op(Insn::mov64_reg(R2, R8)) //                r2 = now
            .op(Insn::sub64_reg(R2, R1)) //                r2 = age
            .op(Insn::rsh64_imm(R2, AGE_SHIFT)) //         r2 = age in units
            .jump_if_gt_imm(R2, self.live_units, "no_flow") // idle too long: a new flow
            .op(Insn::ldx_w(R1, R7, VALUE_SLOT)) //        r1 = its slot
            .op(Insn::stx_w(R10, STACK_VALUE, R1)) //      stack = r1
            .op(Insn::mov64_reg(R1, R6)) //                r1 = ctx
            .op2(Insn::ld_map_fd(R2, sockets)) //          r2 = sockets
            .op(Insn::mov64_reg(R3, R10)) //               r3 = frame pointer
            .op(Insn::add64_imm(R3, STACK_VALUE.into())) // r3 = &slot
            .op(Insn::mov64_imm(R4, 0)) //                 r4 = flags
            .op(Insn::call(Helper::SkSelectReuseport)) //  r0 = 0 or -ENOENT (socket closed)
            .jump_if_ne_imm(R0, 0, "no_flow") //           gone: a new flow
            .op(Insn::stx_dw(R7, VALUE_SEEN, R8)) //       flow last seen = now
            .goto(chosen)
            .label("no_flow");
    }

    /// Emits "record": the datagram's flow now belongs to the slot at `slot_at` on the stack (the
    /// one just chosen). Clobbers r0-r5; keeps r6.
    pub fn emit_record(&self, a: &mut Asm, slot_at: i16) {
        use Reg::*;
        a.op(Insn::ldx_w(R1, R6, CTX_IP_PROTOCOL)) //      r1 = ctx->ip_protocol
            .jump_if_ne_imm(R1, IPPROTO_UDP, "recorded") // not UDP: no flows
            .op(Insn::ldx_w(R1, R6, CTX_HASH)) //          r1 = ctx->hash
            .op(Insn::stx_w(R10, STACK_FLOW_KEY, R1)) //   flow key = r1
            .op(Insn::ldx_w(R1, R10, slot_at)) //          r1 = chosen slot
            .op(Insn::stx_w(R10, STACK_VALUE + VALUE_SLOT, R1)) // value.slot = r1
            .op(Insn::st_w(R10, STACK_VALUE + 4, 0)) //    value.pad = 0
            .op(Insn::call(Helper::KtimeGetNs)) //         r0 = now
            .op(Insn::stx_dw(R10, STACK_VALUE + VALUE_SEEN, R0)) // value.last_seen = now
            .op2(Insn::ld_map_fd(R1, self.map.as_fd())) // r1 = flows
            .op(Insn::mov64_reg(R2, R10)) //               r2 = frame pointer
            .op(Insn::add64_imm(R2, STACK_FLOW_KEY.into())) // r2 = &flow key
            .op(Insn::mov64_reg(R3, R10)) //               r3 = frame pointer
            .op(Insn::add64_imm(R3, STACK_VALUE.into())) // r3 = &value
            .op(Insn::mov64_imm(R4, 0)) //                 r4 = BPF_ANY
            .op(Insn::call(Helper::MapUpdateElem)) //      flows[hash] = value (full: LRU evicts)
            .label("recorded");
    }

    /// Deletes the flows on `slots` (slots being freed: a new socket there must not inherit them).
    pub fn forget_slots(&self, slots: &BTreeSet<u32>) -> Result<(), BpfError> {
        let mut doomed = Vec::new();
        self.walk(|key, slot, _| {
            if slots.contains(&slot) {
                doomed.push(key);
            }
        })?;
        for key in doomed {
            self.map.delete(key)?;
        }
        Ok(())
    }

    /// The latest time (CLOCK_MONOTONIC ns) a flow on one of `slots` was routed; None when none is
    /// remembered. One walk of the table: two bpf(2) calls per flow.
    pub fn last_seen(&self, slots: &BTreeSet<u32>) -> Result<Option<u64>, BpfError> {
        let mut latest = None;
        self.walk(|_, slot, seen| {
            if slots.contains(&slot) {
                latest = latest.max(Some(seen));
            }
        })?;
        Ok(latest)
    }

    /// Flows on `slots` seen within the idle time before `now_ns` (CLOCK_MONOTONIC).
    pub fn live(&self, slots: &BTreeSet<u32>, now_ns: u64) -> Result<u32, BpfError> {
        let live_ns = (u64::try_from(self.live_units).unwrap_or(0) + 1) << AGE_SHIFT;
        let mut count = 0;
        self.walk(|_, slot, seen| {
            if slots.contains(&slot) && now_ns.saturating_sub(seen) < live_ns {
                count += 1;
            }
        })?;
        Ok(count)
    }

    /// Calls `each(key, slot, last_seen_ns)` for every flow remembered.
    fn walk(&self, mut each: impl FnMut(u32, u32, u64)) -> Result<(), BpfError> {
        let mut key = None;
        let mut value = [0u8; VALUE_BYTES];
        // The walk restarts from the first key when its key was evicted meanwhile: bounded anyway.
        for _ in 0..2 * MAX_FLOWS {
            let Some(next) = self.map.next_key(key)? else {
                break;
            };
            key = Some(next);
            if !self.map.lookup_bytes(next, &mut value)? {
                continue;
            }
            let slot = u32::from_ne_bytes(value[0..4].try_into().unwrap());
            let seen = u64::from_ne_bytes(value[8..16].try_into().unwrap());
            each(next, slot, seen);
        }
        Ok(())
    }
}
