//! The top layer that talks to people and their tools: the command line (cli.rs), the control socket
//! server and client (control.rs, control_client.rs), `status` rendering, systemd's notify protocol and
//! logging, the reference text of --help and the man page (help_text.rs, docs.rs), and the admin
//! endpoint (admin.rs: /healthz, /metrics from metrics.rs, /status). It reads the decisions'
//! vocabulary (launcher/) and never decides anything itself.

pub mod addresses;
pub mod admin;
pub mod cli;
pub mod control;
pub mod control_client;
pub mod docs;
pub mod help_text;
pub mod logging;
pub mod memory_flags;
pub mod metrics;
pub mod probe_flags;
pub mod rollout_flags;
pub mod run_as;
pub mod status;
pub mod steer_flags;
pub mod suggest;
pub mod systemd;
