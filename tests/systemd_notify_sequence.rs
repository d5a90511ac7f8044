//! The launcher tells its service manager exactly what systemd's Type=notify expects, and nothing else:
//! READY=1 once generation 1 serves; for each reload RELOADING=1 with a current MONOTONIC_USEC, then READY=1
//! when it ends (also when it rolled back); STATUS= lines naming the serving generation (and "failed" after a
//! rollback); STOPPING=1 at the end. A fake systemd (a datagram socket in the test's temp dir, passed as the
//! launcher's NOTIFY_SOCKET) records every message with its sender's pid: all come from the launcher, and no
//! worker ever sees the fake socket in its environment.

mod support;

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};
use nix::time::{clock_gettime, ClockId};
use support::procfs;
use support::scenarios::GENERATION_DEADLINE;
use support::*;

const WORKERS: usize = 2;
/// Successful reloads before the failing one.
const RELOADS: u32 = 3;
/// --stop-timeout of the launcher: the stop must ask systemd for at least this much time.
const STOP_TIMEOUT_SECS: u64 = 5;
/// Every expected message arrives well within this on a loaded 2-core machine.
const MESSAGE_DEADLINE: Duration = Duration::from_secs(20);
/// A datagram larger than this is not a notify message (systemd's own limit is similar).
const MAX_DATAGRAM_BYTES: usize = 4096;

/// One datagram the fake systemd received.
#[derive(Debug, Clone)]
struct Message {
    /// SCM_CREDENTIALS pid of the sender.
    sender: i32,
    /// KEY=VALUE assignments in the order sent.
    fields: Vec<(String, String)>,
    /// CLOCK_MONOTONIC (µs) when the test read it.
    received_usec: u64,
}

impl Message {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The assignments other than STATUS=, joined: "READY=1", "RELOADING=1", "STOPPING=1".
    fn state(&self) -> String {
        self.fields
            .iter()
            .filter(|(k, _)| k == "READY" || k == "RELOADING" || k == "STOPPING")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The fake service manager: a datagram socket with SO_PASSCRED, like systemd's notify socket.
struct FakeSystemd {
    socket: UnixDatagram,
    path: PathBuf,
    received: Vec<Message>,
}

impl FakeSystemd {
    fn bind(dir: &TempDir) -> FakeSystemd {
        let path = dir.join("sd.sock");
        let socket = UnixDatagram::bind(&path).unwrap_or_else(|e| {
            panic!(
                "unable to bind the fake notify socket {}: {e}",
                path.display()
            )
        });
        setsockopt(&socket, sockopt::PassCred, &true)
            .expect("SO_PASSCRED on the fake notify socket");
        socket
            .set_nonblocking(true)
            .expect("non-blocking fake notify socket");
        FakeSystemd {
            socket,
            path,
            received: Vec::new(),
        }
    }

    /// Reads every datagram waiting on the socket.
    fn drain(&mut self) {
        loop {
            let mut buffer = [0u8; MAX_DATAGRAM_BYTES];
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let (bytes, sender) = match recvmsg::<UnixAddr>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(msg) => {
                    let sender = msg
                        .cmsgs()
                        .expect("control messages of a notify datagram")
                        .find_map(|c| match c {
                            ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
                            _ => None,
                        })
                        .unwrap_or(-1);
                    (msg.bytes, sender)
                }
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("recvmsg on the fake notify socket failed: {e}"),
            };
            let text = String::from_utf8_lossy(&buffer[..bytes]).into_owned();
            let fields = text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => panic!("notify message line {l:?} is not KEY=VALUE (message {text:?})"),
                })
                .collect();
            self.received.push(Message {
                sender,
                fields,
                received_usec: monotonic_usec(),
            });
        }
    }

    /// Waits until some message from index `from` on satisfies `wanted`; returns its index.
    fn wait_for(&mut self, from: usize, what: &str, wanted: impl Fn(&Message) -> bool) -> usize {
        let mut found = None;
        wait_until(MESSAGE_DEADLINE, || {
            self.drain();
            found = self.received.iter().skip(from).position(&wanted);
            found.is_some()
        });
        match found {
            Some(offset) => from + offset,
            None => panic!(
                "the fake systemd never received {what} (after message {from}); received so far:\n{}",
                self.show()
            ),
        }
    }

    fn show(&self) -> String {
        self.received
            .iter()
            .enumerate()
            .map(|(i, m)| format!("  {i}: pid {} {:?}", m.sender, m.fields))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn monotonic_usec() -> u64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("clock_gettime(CLOCK_MONOTONIC)");
    now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000
}

/// The STATUS= of the first message at or after `from` that has one.
fn status_after(systemd: &mut FakeSystemd, from: usize) -> String {
    let at = systemd.wait_for(from, "a STATUS= line", |m| m.get("STATUS").is_some());
    systemd.received[at]
        .get("STATUS")
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn systemd_notify_sequence() {
    private_netns(true);
    let dir = TempDir::new("sdnotify");
    let mut systemd = FakeSystemd::bind(&dir);
    let fake_path = systemd.path.display().to_string();

    // scenarios::ScriptedLauncher spawns through Launcher::spawn, which clears NOTIFY_SOCKET; this test sets it.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let script = dir.write_script("server.sh", &exec_server(port, ""));
    let stop_timeout = STOP_TIMEOUT_SECS.to_string();
    let mut launcher = Launcher::spawn_with(
        &dir,
        &[
            "--workers",
            &WORKERS.to_string(),
            "--ready-timeout",
            "5",
            "--stop-timeout",
            &stop_timeout,
            "--name",
            "sdnotify",
            "--",
            &script.display().to_string(),
        ],
        |command| {
            command.env("NOTIFY_SOCKET", &systemd.path);
        },
    );

    let mut seen_workers: BTreeMap<i32, u32> = BTreeMap::new();
    let check_workers = |launcher: &Launcher, seen: &mut BTreeMap<i32, u32>| {
        for (pid, generation) in launcher.workers() {
            if seen.insert(pid, generation).is_some() {
                continue;
            }
            let notify = procfs::env_var(pid, "NOTIFY_SOCKET");
            assert_ne!(
                notify.as_deref(),
                Some(fake_path.as_str()),
                "worker pid {pid} (gen {generation}) got the launcher's own NOTIFY_SOCKET"
            );
            assert!(
                notify.is_some() || !procfs::alive(pid),
                "worker pid {pid} (gen {generation}) has no NOTIFY_SOCKET of the launcher's"
            );
        }
    };

    let ready = systemd.wait_for(0, "READY=1 after start", |m| m.get("READY") == Some("1"));
    assert!(
        launcher.wait_for_workers(WORKERS, 1, GENERATION_DEADLINE),
        "generation 1 should have {WORKERS} workers: {:?}",
        launcher.workers()
    );
    check_workers(&launcher, &mut seen_workers);
    let status = status_after(&mut systemd, ready);
    assert!(
        status.starts_with("gen 1:") && status.contains(&format!("{WORKERS}/{WORKERS} ready")),
        "STATUS after READY=1 should name generation 1 and {WORKERS}/{WORKERS} ready, not {status:?}"
    );
    let (generation, _) = http_get(&addr);
    assert_eq!(generation, 1);

    let mut next = ready + 1;
    for generation in 2..=RELOADS + 1 {
        let before_usec = monotonic_usec();
        launcher.signal(Signal::SIGHUP);
        let reloading = systemd.wait_for(next, "RELOADING=1", |m| m.get("RELOADING").is_some());
        let message = systemd.received[reloading].clone();
        let monotonic: u64 = message
            .get("MONOTONIC_USEC")
            .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {:?}", message.fields))
            .parse()
            .unwrap_or_else(|e| {
                panic!("MONOTONIC_USEC is not a number ({e}): {:?}", message.fields)
            });
        assert!(
            before_usec <= monotonic && monotonic <= message.received_usec,
            "MONOTONIC_USEC={monotonic} of reload {generation} is not between the SIGHUP ({before_usec}) and \
             its arrival ({}) on CLOCK_MONOTONIC",
            message.received_usec
        );
        let done = systemd.wait_for(reloading + 1, "READY=1 after RELOADING=1", |m| {
            m.get("READY") == Some("1")
        });
        let status = status_after(&mut systemd, done);
        assert!(
            status.starts_with(&format!("gen {generation}:")) && status.contains("last reload ok"),
            "STATUS after reload {} should name generation {generation} and an ok reload, not {status:?}",
            generation - 1
        );
        assert!(
            launcher.wait_for_workers(WORKERS, generation, GENERATION_DEADLINE),
            "after reload to generation {generation} the workers are {:?}",
            launcher.workers()
        );
        check_workers(&launcher, &mut seen_workers);
        next = done + 1;
    }

    // A deploy whose workers exit before they are ready: the reload rolls back, and systemd still hears
    // RELOADING=1 ... READY=1 (the reload ended), with a STATUS= that says it failed.
    let serving = RELOADS + 1;
    dir.write_script("server.sh", &exec_server(port, "--exit-before-ready 3"));
    let before_usec = monotonic_usec();
    launcher.signal(Signal::SIGHUP);
    let reloading = systemd.wait_for(next, "RELOADING=1 of the failing reload", |m| {
        m.get("RELOADING").is_some()
    });
    let monotonic: u64 = systemd.received[reloading]
        .get("MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without a MONOTONIC_USEC:\n{}", systemd.show()));
    assert!(before_usec <= monotonic && monotonic <= systemd.received[reloading].received_usec);
    let done = systemd.wait_for(reloading + 1, "READY=1 after the failed reload", |m| {
        m.get("READY") == Some("1")
    });
    let status = status_after(&mut systemd, done);
    assert!(
        status.starts_with(&format!("gen {serving}:"))
            && status.contains("failed")
            && status.contains(&format!("gen {}", serving + 1))
            && status.contains("status 3"),
        "STATUS after the failed reload should name generation {serving} serving and say the reload to \
         generation {} failed with status 3, not {status:?}",
        serving + 1
    );
    assert!(
        launcher.wait_for_workers(WORKERS, serving, GENERATION_DEADLINE),
        "generation {serving} should keep serving alone after the failed reload: {:?}",
        launcher.workers()
    );
    let (generation, _) = http_get(&addr);
    assert_eq!(
        generation, serving,
        "the old generation should still answer"
    );
    check_workers(&launcher, &mut seen_workers);
    let next = done + 1;

    launcher.signal(Signal::SIGTERM);
    let stopping = systemd.wait_for(next, "STOPPING=1", |m| m.get("STOPPING") == Some("1"));
    let extend: u64 = systemd.received[stopping]
        .get("EXTEND_TIMEOUT_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "STOPPING=1 without EXTEND_TIMEOUT_USEC:\n{}",
                systemd.show()
            )
        });
    assert!(
        extend > STOP_TIMEOUT_SECS * 1_000_000,
        "EXTEND_TIMEOUT_USEC={extend} should exceed --stop-timeout ({STOP_TIMEOUT_SECS}s)"
    );
    let status = launcher
        .wait_exit(Duration::from_secs(STOP_TIMEOUT_SECS + 10))
        .expect("the launcher should exit after SIGTERM");
    assert!(
        status.success(),
        "the launcher exited with {status} after SIGTERM"
    );
    systemd.drain();

    eprintln!("messages received by the fake systemd:\n{}", systemd.show());
    // The exact order of state changes systemd saw, from start to stop.
    let mut expected = vec!["READY=1".to_string()];
    for _ in 0..=RELOADS {
        expected.push("RELOADING=1".into());
        expected.push("READY=1".into());
    }
    expected.push("STOPPING=1".into());
    let states: Vec<String> = systemd
        .received
        .iter()
        .map(Message::state)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        states,
        expected,
        "state changes sent to systemd; every message:\n{}",
        systemd.show()
    );
    // Nothing after STOPPING=1 but STATUS= lines about stopping.
    for message in &systemd.received[stopping + 1..] {
        assert!(
            message
                .get("STATUS")
                .is_some_and(|s| s.starts_with("stopping"))
                && message.fields.len() == 1,
            "unexpected message after STOPPING=1: {:?}",
            message.fields
        );
    }
    // NotifyAccess=main: every message comes from the launcher itself, none from a worker.
    let launcher_pid = launcher.pid();
    for (i, message) in systemd.received.iter().enumerate() {
        assert_eq!(
            message.sender, launcher_pid,
            "message {i} {:?} was sent by pid {}, not by the launcher",
            message.fields, message.sender
        );
    }
    assert!(
        seen_workers.len() >= WORKERS * (RELOADS as usize + 1),
        "expected to have checked the workers of every generation, saw {seen_workers:?}"
    );
    // Every status line names a generation (or the stop).
    for message in &systemd.received {
        if let Some(status) = message.get("STATUS") {
            assert!(
                status.starts_with("gen ") || status.starts_with("stopping"),
                "STATUS={status:?} names no generation"
            );
        }
    }
}
