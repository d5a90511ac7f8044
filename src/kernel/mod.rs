//! The bottom layer: every mechanism that touches the kernel — spawning and signalling workers, seccomp
//! bind injection, listening sockets, the notify socket, /proc and sock_diag, signals, sysctls and
//! netstat counters. It
//! implements the trait the decisions own (`launcher::Processes`) and imports nothing from the
//! operator layer. Invariant: only supervisor.rs spawns, signals or reaps processes.

pub mod adopt;
pub mod connections;
pub mod http_probe;
pub mod inject;
pub mod listen;
pub mod memory;
pub mod netstat;
pub mod node_ipc;
pub mod notify_socket;
pub mod orphans;
pub mod pidfd;
pub mod probes;
pub mod process_tree;
pub mod signals;
pub mod sock_diag;
pub mod socket_fds;
pub mod socket_state;
pub mod steering;
pub mod supervisor;
pub mod sysctl;
pub mod worker_spec;
