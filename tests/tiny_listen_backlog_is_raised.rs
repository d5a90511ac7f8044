//! A server that asks for a tiny listen backlog (python's socketserver asks for 5) would have the
//! kernel drop SYNs whenever a burst of connections arrives before it accepts, e.g. when a reload moves
//! all new connections to the just-started generation at once. With injection the launcher raises the
//! backlog of every listener it sees to 1024 (as its own `--listen` sockets have); `ss` shows it.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(20);
const RAISED: u32 = 1024;

const SERVER_PY: &str = r#"
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
while True:
    c, _ = s.accept()
    c.close()
"#;

/// The backlogs (ss's Send-Q column for listeners) of the TCP listeners on `port`.
fn backlogs(port: u16) -> Vec<u32> {
    let output = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("run ss (iproute2)");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2)?.parse().ok())
        .collect()
}

#[test]
fn tiny_listen_backlog_is_raised() {
    private_netns(true);
    let dir = TempDir::new("tiny_backlog");
    let script = dir.join("server.py");
    std::fs::write(&script, SERVER_PY).unwrap();
    let port = free_port();
    let _launcher = Launcher::spawn_serving(
        &dir,
        &[
            "--workers",
            "2",
            "--",
            "python3",
            script.to_str().unwrap(),
            &port.to_string(),
        ],
        DEADLINE,
    );
    assert!(
        wait_until(DEADLINE, || {
            let seen = backlogs(port);
            seen.len() == 2 && seen.iter().all(|&b| b == RAISED)
        }),
        "the workers' listeners should have a backlog of {RAISED}, not {:?}",
        backlogs(port)
    );
}
