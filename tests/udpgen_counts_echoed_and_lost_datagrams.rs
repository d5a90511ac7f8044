//! The fixtures of scripts/bench-udp: `udp-echo-server` (legacy: binds without SO_REUSEPORT, dies at
//! SIGTERM) answers every datagram `udpgen` sends, and `udpgen` counts each one once — answered while the
//! server runs; refused or lost, never answered, once it is gone — so that sent = answered + lost +
//! refused. The benchmark's "lost" figures rest on this rule.

mod support;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

const START_DEADLINE: Duration = Duration::from_secs(10);

/// One udpgen run against 127.0.0.1:port; its key=value report.
fn udpgen_run(port: u16, extra: &[&str]) -> HashMap<String, u64> {
    let output = Command::new(udpgen())
        .args(["--addr", &format!("127.0.0.1:{port}"), "--outstanding", "8"])
        .args(extra)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run udpgen");
    assert!(output.status.success(), "udpgen: {}", output.status);
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|line| line.split_once('='))
        .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k.to_string(), v as u64)))
        .collect()
}

fn echoes(port: u16) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buffer = [0u8; 16];
    socket.send_to(b"ping", ("127.0.0.1", port)).is_ok()
        && matches!(socket.recv(&mut buffer), Ok(4) if &buffer[..4] == b"ping")
}

#[test]
fn udpgen_counts_echoed_and_lost_datagrams() {
    private_netns(true);
    let port = free_port();
    let mut server = ChildGuard::spawn(
        Command::new(udp_echo_server())
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    assert!(
        wait_until(START_DEADLINE, || echoes(port)),
        "udp-echo-server did not answer within {START_DEADLINE:?}"
    );

    for per_socket in ["1", "0"] {
        let report = udpgen_run(
            port,
            &[
                "--duration-secs",
                "0.5",
                "--datagrams-per-socket",
                per_socket,
            ],
        );
        eprintln!("server up, --datagrams-per-socket {per_socket}: {report:?}");
        assert!(report["sent"] > 100, "{report:?}");
        assert_eq!(report["answered"], report["sent"], "{report:?}");
        assert_eq!(
            report["lost"] + report["refused"] + report["unexpected"],
            0,
            "{report:?}"
        );
        let sockets_expected = if per_socket == "1" { report["sent"] } else { 8 };
        assert_eq!(report["sockets"], sockets_expected, "{report:?}");
    }

    server.signal(Signal::SIGTERM);
    let status = server
        .wait_exit(START_DEADLINE)
        .expect("udp-echo-server exits at SIGTERM");
    assert_eq!(
        status.signal(),
        Some(Signal::SIGTERM as i32),
        "killed by SIGTERM, no handler: {status:?}"
    );

    let report = udpgen_run(port, &["--duration-secs", "0.3", "--timeout-ms", "200"]);
    eprintln!("server gone: {report:?}");
    assert!(report["sent"] > 0, "{report:?}");
    assert_eq!(report["answered"], 0, "{report:?}");
    assert_eq!(
        report["sent"],
        report["lost"] + report["refused"],
        "{report:?}"
    );
}
