//! Steering covers every reuseport group the workers listen in, one per address and port: a dual-stack
//! `[::]` listener (reached over IPv4 and IPv6), an IPv6-only `[::1]` listener on a second port, and
//! sockets the launcher binds itself (`--listen`, two ports). For each group a stranger of the same user
//! joins with SO_REUSEPORT; under connection-per-request load on every address through reloads, not one
//! request fails and no stranger answers one.

mod support;

use std::process::Command;
use std::time::Duration;

use support::launcher::reload_and_wait;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 5;
const DEADLINE: Duration = Duration::from_secs(20);
/// The generation strangers claim in their answers.
const STRANGER_GENERATION: u32 = 999;

/// An unchanged server (no SO_REUSEPORT, no sd_notify, dies on SIGTERM): listens on the sockets the
/// launcher passed (LISTEN_FDS) or binds the `host:port` arguments itself (`[::]` dual-stack); answers
/// each request with X-Pid / X-Generation and closes the connection. As a stranger (`--stranger`) it
/// sets SO_REUSEPORT and claims generation 999.
const SERVER_PY: &str = r#"
import os, socket, sys, threading
stranger = sys.argv[1:2] == ["--stranger"]
args = sys.argv[2:] if stranger else sys.argv[1:]
gen = "999" if stranger else os.environ.get("REUSEPORT_LAUNCH_GENERATION", "0")
def listeners():
    if os.environ.get("LISTEN_PID") == str(os.getpid()):
        return [socket.socket(fileno=3 + i) for i in range(int(os.environ["LISTEN_FDS"]))]
    out = []
    for spec in args:
        host, port = spec.rsplit(":", 1)
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        if stranger:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, int(port)))
        s.listen(256)
        out.append(s)
    return out
def serve(listener):
    while True:
        c, _ = listener.accept()
        try:
            c.recv(4096)
            body = b"pid=%d gen=%s\n" % (os.getpid(), gen.encode())
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\nX-Pid: %d\r\nX-Generation: %s\r\n\r\n"
                      % (len(body), os.getpid(), gen.encode()) + body)
        except OSError:
            pass
        c.close()
threads = [threading.Thread(target=serve, args=(l,), daemon=True) for l in listeners()]
for t in threads:
    t.start()
if stranger:
    open(os.environ["STRANGER_READY"], "w").write("listening")
for t in threads:
    t.join()
"#;

/// Writes the server script and returns its path.
fn server_script(dir: &TempDir) -> String {
    let script = dir.join("server.py");
    std::fs::write(&script, SERVER_PY).expect("write server.py");
    script.display().to_string()
}

/// Starts a stranger listening on `addresses` (with SO_REUSEPORT) and waits until it listens.
fn stranger(dir: &TempDir, script: &str, addresses: &[String]) -> ChildGuard {
    let ready = dir.join("stranger.ready");
    let guard = ChildGuard::spawn(
        Command::new("python3")
            .arg(script)
            .arg("--stranger")
            .args(addresses)
            .env("STRANGER_READY", &ready),
    );
    assert!(
        wait_until(DEADLINE, || ready.exists()),
        "the stranger never listened on {addresses:?}"
    );
    guard
}

/// Runs the launcher with `launcher_args` and `server_args`, a stranger on every address of
/// `groups`, connection-per-request load on every address of `targets`, and RELOADS reloads;
/// then checks that nothing failed and no stranger answered.
fn reload_under_load_with_strangers(
    test: &str,
    launcher_args: &[String],
    server_args: &[String],
    groups: &[String],
    targets: &[String],
) {
    private_netns(true);
    let dir = TempDir::new(test);
    let script = server_script(&dir);
    let mut args: Vec<String> = vec!["--workers".into(), WORKERS.to_string()];
    args.extend(launcher_args.iter().cloned());
    args.extend(["--".into(), "python3".into(), script.clone()]);
    args.extend(server_args.iter().cloned());
    let launcher = Launcher::spawn(&dir, &args);
    assert!(
        launcher.wait_for_log("generation 1 serving", DEADLINE),
        "{}",
        launcher.log_tail(20)
    );
    assert!(launcher.wait_for_log("steering on", Duration::from_secs(1)));
    let _stranger = stranger(&dir, &script, groups);
    let loads: Vec<Loadgen> = targets
        .iter()
        .enumerate()
        .map(|(i, addr)| Loadgen::start(&dir, &format!("load{i}"), addr, Mode::Close, 2, &[]))
        .collect();
    for load in &loads {
        assert!(load.wait_for_traffic(Duration::from_secs(10)));
    }
    for generation in 2..=RELOADS + 1 {
        reload_and_wait(&launcher, WORKERS, generation, DEADLINE, || {});
    }
    for (load, addr) in loads.into_iter().zip(targets) {
        let report = load.stop();
        eprintln!(
            "{test}: {addr}: {} requests, {} failures, by generation {:?}",
            report.requests,
            report.failures,
            report.by_generation()
        );
        assert_eq!(report.failures, 0, "{addr}: {}", report.raw);
        let served = report.by_generation();
        assert!(
            !served.contains_key(&STRANGER_GENERATION),
            "{addr}: the stranger answered: {served:?}"
        );
        assert!(
            served.get(&(RELOADS + 1)).is_some_and(|&n| n > 0),
            "{addr}: the last generation served nothing: {served:?}"
        );
    }
}

#[test]
fn dual_stack_and_ipv6_listeners_on_two_ports_are_steered() {
    let (dual, v6) = (free_port(), free_port());
    let binds = vec![format!("[::]:{dual}"), format!("[::1]:{v6}")];
    reload_under_load_with_strangers(
        "steer_dual_stack_ipv6",
        &[],
        &binds,
        &binds,
        &[
            format!("127.0.0.1:{dual}"),
            format!("[::1]:{dual}"),
            format!("[::1]:{v6}"),
        ],
    );
}

#[test]
fn sockets_the_launcher_binds_are_steered() {
    let (dual, v4) = (free_port(), free_port());
    let binds = vec![format!("[::]:{dual}"), format!("127.0.0.1:{v4}")];
    let launcher_args: Vec<String> = binds
        .iter()
        .flat_map(|b| ["--listen".to_string(), b.clone()])
        .collect();
    reload_under_load_with_strangers(
        "steer_listen_sockets",
        &launcher_args,
        &[],
        &binds,
        &[format!("[::1]:{dual}"), format!("127.0.0.1:{v4}")],
    );
}
