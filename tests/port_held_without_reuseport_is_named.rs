//! A port held by a process that did not set SO_REUSEPORT (a plain `python3 -c` listener) stops the
//! launcher at start, before any worker runs, with exit code 1 and an error naming the address, the
//! holder's pid and its command — for `--listen 127.0.0.1:P` and for `--listen P` ([::]:P, dual-stack).

mod support;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const EXIT_DEADLINE: Duration = Duration::from_secs(10);
/// python3 starts and listens well within this on a loaded machine.
const HOLDER_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn port_held_without_reuseport_is_named() {
    private_netns(true);
    let dir = TempDir::new("port_held_without_reuseport");
    let port = free_port();
    let holder_code = format!(
        "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', {port}))\ns.listen()\ntime.sleep(600)"
    );
    let holder = ChildGuard::spawn(
        Command::new(if std::path::Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        })
        .args(["-c", &holder_code])
        .stdin(Stdio::null()),
    );
    assert!(
        wait_until(HOLDER_DEADLINE, || TcpStream::connect(("127.0.0.1", port))
            .is_ok()),
        "the python3 holder never listened on port {port}"
    );

    let marker = dir.join("worker-started");
    let worker = format!("touch {}", marker.display());
    for address in [format!("127.0.0.1:{port}"), port.to_string()] {
        let (status, output) = run_launcher_to_exit(
            &dir,
            &[
                "--workers".as_ref(),
                "2".as_ref(),
                "--listen".as_ref(),
                address.as_ref(),
                "--".as_ref(),
                "/bin/sh".as_ref(),
                "-c".as_ref(),
                worker.as_ref(),
            ],
            EXIT_DEADLINE,
        );
        assert_eq!(status.code(), Some(1), "--listen {address}: {output}");
        let shown = if address.contains(':') {
            address.clone()
        } else {
            format!("[::]:{port}")
        };
        assert!(
            output.contains("reuseport-launch: error: unable to listen on")
                && output.contains(&shown),
            "the error does not name {shown}: {output}"
        );
        assert!(
            output.contains(&format!("pid {}", holder.pid())),
            "the error does not name the holder's pid {}: {output}",
            holder.pid()
        );
        assert!(
            output.contains("python3") && output.contains("SO_REUSEPORT"),
            "the error does not name the holder's command or the cause: {output}"
        );
        assert!(!marker.exists(), "a worker ran although the port was held");
    }
}
