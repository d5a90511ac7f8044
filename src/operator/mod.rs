//! The top layer that talks to people and their tools: the command line (cli.rs), the control socket
//! server and client (control.rs, control_client.rs), `status` rendering, systemd's notify protocol and
//! logging, and the admin endpoint (admin.rs: /healthz, /metrics from metrics.rs, /status). It reads
//! the decisions' vocabulary (launcher/) and never decides anything itself.

pub mod admin;
pub mod cli;
pub mod control;
pub mod control_client;
pub mod logging;
pub mod metrics;
pub mod status;
pub mod systemd;
