//! Steering new connections among the sockets of each reuseport group with an eBPF program: the
//! bpf(2) layer (bpf.rs), one group's maps and program (group.rs) with its UDP flow table (flows.rs),
//! accept queue depth (queue.rs), the
//! groups of all the workers' listeners (router.rs) and listeners that are not the workers'
//! (strangers.rs). Invariant: the program never refuses a connection; when it cannot choose, the
//! kernel's own hash does.

pub mod bpf;
pub mod flows;
pub mod group;
pub mod queue;
pub mod router;
pub mod strangers;
