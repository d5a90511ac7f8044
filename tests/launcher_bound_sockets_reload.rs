//! With `--listen`, the launcher binds the port for every worker and hands the socket over with systemd
//! socket activation: each worker finds its own socket at fd 3 with LISTEN_FDS=1 and LISTEN_PID equal to
//! its own pid, and six reloads under keep-alive and connection-per-request load lose no request. The
//! server (a python3 script written here) never binds and never sets SO_REUSEPORT; it refuses to start
//! when LISTEN_PID is not its pid. After each reload only the new generation's listeners remain.

mod support;

use std::time::Duration;

use support::launcher::reload_and_wait;
use support::procfs;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 6;
/// Start of 2 python3 workers plus the launcher's settle time, on a loaded machine.
const GENERATION_DEADLINE: Duration = Duration::from_secs(20);
/// Old workers get SIGTERM after their idle keep-alive connections outlast --stop-timeout (2 s), then
/// close idle connections within 200 ms.
const OLD_GONE_DEADLINE: Duration = Duration::from_secs(15);
/// Probes after each reload: enough to reach both workers with high probability.
const PROBES_PER_RELOAD: usize = 6;

/// An HTTP server that only uses the socket it was given (fd 3). It checks LISTEN_PID and LISTEN_FDS,
/// answers with X-Generation / X-Pid, and drains on SIGTERM: answers requests on open connections with
/// `Connection: close`, closes connections idle 200 ms after the signal, then exits 0. When the launcher
/// takes its listener out of the port's group (accept fails) it waits for SIGTERM.
pub const SOCKET_ACTIVATED_SERVER: &str = r#"
import os, signal, socket, sys, threading, time
pid = os.getpid()
if os.environ.get("LISTEN_PID") != str(pid) or os.environ.get("LISTEN_FDS") != "1":
    sys.stderr.write("bad socket activation: LISTEN_PID=%r LISTEN_FDS=%r, my pid %d\n"
                     % (os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS"), pid))
    sys.exit(3)
listener = socket.socket(fileno=3)
gen = os.environ.get("REUSEPORT_LAUNCH_GENERATION", "0")
body = ("generation=%s pid=%d uid=%d\n" % (gen, pid, os.getuid())).encode()
stopping = threading.Event()
stopped_at = [0.0]
def on_term(*_):
    stopped_at[0] = time.monotonic()
    stopping.set()
signal.signal(signal.SIGTERM, on_term)

def serve(conn):
    conn.settimeout(0.05)
    buf = b""
    try:
        while True:
            if b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                close = stopping.is_set() or b"connection: close" in head.lower()
                conn.sendall(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Generation: %s\r\nX-Pid: %d\r\n%s\r\n"
                              % (len(body), gen, pid, "Connection: close\r\n" if close else "")).encode() + body)
                if close:
                    return
                continue
            try:
                data = conn.recv(65536)
            except socket.timeout:
                if stopping.is_set() and not buf and time.monotonic() - stopped_at[0] > 0.2:
                    return
                continue
            if not data:
                return
            buf += data
    except OSError:
        pass
    finally:
        conn.close()

threads = []
listener.settimeout(0.05)
while not stopping.is_set():
    try:
        conn, _ = listener.accept()
    except socket.timeout:
        continue
    except OSError:
        stopping.wait()
        break
    t = threading.Thread(target=serve, args=(conn,), daemon=True)
    t.start()
    threads = [x for x in threads if x.is_alive()] + [t]
listener.close()
for t in threads:
    t.join()
"#;

/// python3 from the system, so that any user can run it (a pyenv shim under /root cannot be).
pub fn python3() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[test]
fn launcher_bound_sockets_reload() {
    private_netns(true);
    let dir = TempDir::new("launcher_bound_sockets_reload");
    let script = dir.join("server.py");
    std::fs::write(&script, SOCKET_ACTIVATED_SERVER).expect("write server.py");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let workers = WORKERS.to_string();
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            &workers,
            "--listen",
            &addr,
            "--stop-timeout",
            "2",
            "--",
            python3(),
            script.to_str().unwrap(),
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", GENERATION_DEADLINE),
        "generation 1 did not become ready"
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    for pid in launcher.workers_of(1) {
        assert_eq!(
            procfs::env_var(pid, "LISTEN_PID"),
            Some(pid.to_string()),
            "worker {pid} was not told its own pid"
        );
        assert_eq!(procfs::env_var(pid, "LISTEN_FDS").as_deref(), Some("1"));
        assert_eq!(
            procfs::env_var(pid, "LISTEN_FDNAMES").as_deref(),
            Some("listen0")
        );
        assert_eq!(procfs::env_var(pid, "PORT"), Some(port.to_string()));
        let fd3 = std::fs::read_link(format!("/proc/{pid}/fd/3")).expect("worker has fd 3");
        assert!(
            fd3.to_string_lossy().starts_with("socket:"),
            "worker {pid}'s fd 3 is {fd3:?}, not its socket"
        );
    }

    let load = MixedLoad::start(&dir, &addr);

    for generation in 2..=RELOADS + 1 {
        reload_and_wait(
            &launcher,
            WORKERS,
            generation,
            GENERATION_DEADLINE + OLD_GONE_DEADLINE,
            || {},
        );
        assert!(
            launcher
                .log_text()
                .contains(&format!("generation {generation} serving")),
            "generation {generation} is in place but the log never says it is serving"
        );
        let new = launcher.workers_of(generation);
        for &pid in &new {
            assert_eq!(procfs::env_var(pid, "LISTEN_PID"), Some(pid.to_string()));
        }
        // The old workers' listeners are closed everywhere: the launcher keeps none of them alive.
        assert!(
            wait_until(Duration::from_secs(5), || procfs::listening_inodes(
                launcher.pid(),
                port
            )
            .len()
                == WORKERS),
            "after reload {generation}, {} sockets listen on port {port}, not {WORKERS}",
            procfs::listening_inodes(launcher.pid(), port).len()
        );
        for _ in 0..PROBES_PER_RELOAD {
            let (answered, pid) = http_get(&addr);
            assert_eq!(
                answered, generation,
                "a probe after reload {generation} reached pid {pid}"
            );
            assert!(new.contains(&pid));
        }
    }

    let report = load.stop();
    let (keepalive, close) = (&report.keepalive, &report.close);
    eprintln!(
        "{RELOADS} reloads; keep-alive: {} requests, {} ok, {} failures, {} retries; connection-per-request: \
         {} requests, {} ok, {} failures, {} retries",
        keepalive.requests, keepalive.ok, keepalive.failures, keepalive.retries, close.requests, close.ok,
        close.failures, close.retries
    );
    report.assert_no_failures();
    assert!(keepalive.ok > 0 && close.ok > 0);
    for generation in 1..=RELOADS + 1 {
        let served = report.served_by(generation);
        assert!(served > 0, "no response named generation {generation}");
    }
}
