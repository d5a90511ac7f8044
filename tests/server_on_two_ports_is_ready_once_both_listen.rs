//! A server with two listening sockets (two ports here; IPv4 plus IPv6 sockets, as Python's asyncio
//! makes them, are the same case) counts as ready only once both listen, and both are steered: under
//! connection-per-request load on each port through reloads not one request fails, and every worker of
//! the last generation answers on the second port. The server binds both and listens on the second
//! 400 ms after the first — with injection (an unchanged server) and with `--no-inject` (the server
//! sets SO_REUSEPORT) — or binds and listens on one port, then 5 ms later on the other (both ways);
//! and a server that binds and listens on its second port 400 ms after the first, then sends
//! READY=1 (`--ready notify`), is steered on both.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use support::launcher::reload_and_wait;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 3;
const DEADLINE: Duration = Duration::from_secs(20);

/// The cases share 2 cores with their python workers and load: one at a time, so that the server's
/// 5 ms between its two ports stays well inside the launcher's 25 ms settle time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `[--reuseport] [ORDER] PORT_A PORT_B`: binds both ports on 127.0.0.1 (with SO_REUSEPORT under
/// `--reuseport`), listens on the first, sleeps 400 ms, listens on the second. ORDER `--one-by-one`:
/// binds and listens on the first, sleeps 5 ms, binds and listens on the second; `--notify`: the same
/// 400 ms apart, then sends READY=1. Answers each request with X-Pid / X-Generation and closes the
/// connection; dies on SIGTERM.
const SERVER_PY: &str = r#"
import os, socket, sys, threading, time
flags = [a for a in sys.argv[1:] if a.startswith("--")]
ports = [int(a) for a in sys.argv[1:] if not a.startswith("--")]
reuseport, one_by_one, notify = ("--reuseport" in flags, "--one-by-one" in flags, "--notify" in flags)
gen = os.environ.get("REUSEPORT_LAUNCH_GENERATION", "0").encode()
def bound(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    return s
def serve(listener):
    while True:
        c, _ = listener.accept()
        try:
            c.recv(4096)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\nX-Pid: %d\r\nX-Generation: %s\r\n\r\nok\n"
                      % (os.getpid(), gen))
        except OSError:
            pass
        c.close()
bind_late = one_by_one or notify
sockets = [] if bind_late else [bound(p) for p in ports]
threads = []
for i, port in enumerate(ports):
    if i:
        time.sleep(0.005 if one_by_one else 0.4)
    if bind_late:
        sockets.append(bound(port))
    s = sockets[i]
    s.listen(128)
    threads.append(threading.Thread(target=serve, args=(s,), daemon=True))
    threads[-1].start()
if notify:
    address = os.environ["NOTIFY_SOCKET"]
    address = "\0" + address[1:] if address.startswith("@") else address
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", address)
for t in threads:
    t.join()
"#;

/// How the server comes up: the ORDER flag of SERVER_PY, and whether the launcher waits for READY=1.
#[derive(Clone, Copy)]
enum Order {
    BindBothListen400msApart,
    OneByOne5msApart,
    OneByOne400msApartThenReady,
}

fn reloads_with_a_late_second_port(test: &str, no_inject: bool, order: Order) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    private_netns(true);
    let dir = TempDir::new(test);
    let script = dir.join("server.py");
    std::fs::write(&script, SERVER_PY).expect("write server.py");
    let (port_a, port_b) = (free_port(), free_port());
    let mut args: Vec<String> = vec!["--workers".into(), WORKERS.to_string()];
    if no_inject {
        args.push("--no-inject".into());
    }
    if let Order::OneByOne400msApartThenReady = order {
        args.extend(["--ready".into(), "notify".into()]);
    }
    args.extend(["--".into(), "python3".into(), script.display().to_string()]);
    if no_inject {
        args.push("--reuseport".into());
    }
    match order {
        Order::BindBothListen400msApart => {}
        Order::OneByOne5msApart => args.push("--one-by-one".into()),
        Order::OneByOne400msApartThenReady => args.push("--notify".into()),
    }
    args.extend([port_a.to_string(), port_b.to_string()]);
    let launcher = Launcher::spawn_serving(&dir, &args, DEADLINE);
    let loads = [
        Loadgen::start(
            &dir,
            "a",
            &format!("127.0.0.1:{port_a}"),
            Mode::Close,
            2,
            &[],
        ),
        Loadgen::start(
            &dir,
            "b",
            &format!("127.0.0.1:{port_b}"),
            Mode::Close,
            2,
            &[],
        ),
    ];
    for load in &loads {
        assert!(load.wait_for_traffic(Duration::from_secs(10)));
    }
    for generation in 2..=RELOADS + 1 {
        reload_and_wait(&launcher, WORKERS, generation, DEADLINE, || {});
    }
    let last = launcher.workers_of(RELOADS + 1);
    let [load_a, load_b] = loads;
    let (first, second) = (load_a.stop(), load_b.stop());
    for (name, report) in [("first", &first), ("second", &second)] {
        eprintln!(
            "{test}: {name} port: {} requests, {} failures, by generation {:?}",
            report.requests,
            report.failures,
            report.by_generation()
        );
        assert_eq!(report.failures, 0, "{name} port: {}", report.raw);
    }
    let answered: Vec<i32> = last
        .iter()
        .copied()
        .filter(|pid| second.by_pid.get(pid).is_some_and(|&(_, n)| n > 0))
        .collect();
    assert_eq!(
        answered,
        last,
        "every worker of generation {} should answer on the second port: {}",
        RELOADS + 1,
        second.raw
    );
}

#[test]
fn unchanged_server_is_ready_once_its_second_port_listens() {
    reloads_with_a_late_second_port("two_ports_injected", false, Order::BindBothListen400msApart);
}

#[test]
fn unchanged_server_binding_its_ports_one_by_one_is_ready_once_both_listen() {
    reloads_with_a_late_second_port("two_ports_one_by_one", false, Order::OneByOne5msApart);
}

#[test]
fn no_inject_server_is_ready_once_its_second_port_listens() {
    reloads_with_a_late_second_port("two_ports_no_inject", true, Order::BindBothListen400msApart);
}

#[test]
fn no_inject_server_listening_on_its_ports_one_by_one_is_ready_once_both_listen() {
    reloads_with_a_late_second_port(
        "two_ports_no_inject_one_by_one",
        true,
        Order::OneByOne5msApart,
    );
}

#[test]
fn unchanged_server_sending_ready_after_its_second_port_is_steered_on_both() {
    reloads_with_a_late_second_port(
        "two_ports_notify",
        false,
        Order::OneByOne400msApartThenReady,
    );
}
