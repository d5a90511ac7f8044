//! The top layer that talks to people and their tools: the command line (cli.rs), the control socket
//! server and client (control.rs, control_client.rs), `status` rendering, systemd's notify protocol and
//! logging, and the reference text of --help and the man page (help_text.rs, docs.rs). It reads the
//! decisions' vocabulary (launcher/) and never decides anything itself.

pub mod cli;
pub mod control;
pub mod control_client;
pub mod docs;
pub mod help_text;
pub mod logging;
pub mod status;
pub mod suggest;
pub mod systemd;
