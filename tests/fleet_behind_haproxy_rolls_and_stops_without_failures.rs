//! A fleet of three hosts behind a real HAProxy (Debian's) that checks each host's /healthz and never
//! retries, under keep-alive and connection-per-request load through HAProxy: a rolling
//! `reload --wait`, host by host, replaces every host's workers without a failed request; a deploy
//! that fails on the first host stops the rollout there, and that host keeps serving its old
//! generation; a host taken out with `stop` (with --lb-drain) loses nothing, and HAProxy marks it down.
//! The "hosts" are three launchers on their own loopback addresses (127.0.0.11-13) in the test's
//! private network namespace, each with its own admin endpoint, control socket and SO_REUSEPORT group.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::admin::try_admin_get;
use support::control::client;
use support::*;

const HOSTS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
const SERVICE_PORT: u16 = 8080;
const ADMIN_PORT: u16 = 9900;
const WORKERS: usize = 2;
/// HAProxy checks every 200 ms and marks a server down after 2 failures: it reacts within ~0.5 s, so
/// 2 s of --lb-drain leave room for a loaded machine.
const LB_DRAIN_SECS: &str = "2";
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// `reload --wait` of two example servers on a loaded 2-core machine.
const RELOAD_DEADLINE: Duration = Duration::from_secs(30);
/// `stop` returns once the launcher exited: --lb-drain, then the drain.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// HAProxy sees a change of health within a few checks.
const HAPROXY_DEADLINE: Duration = Duration::from_secs(10);

struct Host {
    dir: TempDir,
    launcher: Launcher,
    address: &'static str,
}

impl Host {
    fn start(index: usize, address: &'static str) -> Host {
        let dir = TempDir::new(&format!("fleet_host{index}"));
        deploy(&dir, address, "");
        let admin = format!("{address}:{ADMIN_PORT}");
        let name = format!("host{index}");
        let script = dir.join("server.sh");
        let launcher = Launcher::spawn(
            &dir,
            &[
                "--name".as_ref(),
                name.as_ref(),
                "--workers".as_ref(),
                "2".as_ref(),
                "--admin".as_ref(),
                admin.as_ref(),
                "--lb-drain".as_ref(),
                LB_DRAIN_SECS.as_ref(),
                "--stop-timeout".as_ref(),
                "5".as_ref(),
                "--".as_ref(),
                script.as_os_str(),
            ],
        );
        Host {
            dir,
            launcher,
            address,
        }
    }

    fn healthz(&self) -> Option<u16> {
        try_admin_get(&format!("{}:{ADMIN_PORT}", self.address), "/healthz", "")
            .ok()
            .map(|r| r.status)
    }
}

/// Puts a new server.sh in place the way a deploy replaces a binary (write, then rename over).
fn deploy(dir: &TempDir, address: &str, extra: &str) {
    dir.write_script(
        "server.sh",
        &format!(
            "exec {} --host {address} --port {SERVICE_PORT} {extra}",
            example_server()
        ),
    );
}

/// Debian's haproxy is in /usr/sbin, which a non-root PATH may lack.
fn haproxy_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    }
}

/// HAProxy's view of each server: (name, status) from its stats page's CSV.
fn haproxy_status(stats: &str) -> Vec<(String, String)> {
    let Ok(response) = try_admin_get(stats, "/stats;csv", "") else {
        return Vec::new();
    };
    response
        .body
        .lines()
        .filter(|l| l.starts_with("web,"))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            let (name, status) = (fields.get(1)?, fields.get(17)?);
            (*name != "BACKEND").then(|| (name.to_string(), status.to_string()))
        })
        .collect()
}

#[test]
fn fleet_behind_haproxy_rolls_and_stops_without_failures() {
    private_netns(true);
    let dir = TempDir::new("fleet_haproxy");
    let hosts: Vec<Host> = HOSTS
        .iter()
        .enumerate()
        .map(|(i, &address)| Host::start(i + 1, address))
        .collect();
    for host in &hosts {
        assert!(
            host.launcher
                .wait_for_log("generation 1 serving", READY_DEADLINE),
            "host {} did not start",
            host.address
        );
    }

    let frontend = format!("127.0.0.1:{}", free_port());
    let stats = format!("127.0.0.1:{}", free_port());
    let servers: String = HOSTS
        .iter()
        .enumerate()
        .map(|(i, a)| format!("    server host{} {a}:{SERVICE_PORT}\n", i + 1))
        .collect();
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n    maxconn 2000\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
             \x20   retries 0\n    option http-server-close\n\
             frontend fe\n    bind {frontend}\n    default_backend web\n\
             backend web\n    balance roundrobin\n    option httpchk GET /healthz\n    http-check expect status 200\n\
             \x20   default-server check port {ADMIN_PORT} inter 200ms fall 2 rise 1\n{servers}\
             listen stats\n    bind {stats}\n    stats enable\n    stats uri /stats\n"
        ),
    )
    .expect("write haproxy.cfg");
    let mut haproxy = ChildGuard::spawn(
        Command::new(haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).expect("create haproxy.log")),
    );
    assert!(
        wait_until(HAPROXY_DEADLINE, || {
            let servers = haproxy_status(&stats);
            servers.len() == HOSTS.len() && servers.iter().all(|(_, s)| s == "UP")
        }),
        "HAProxy never saw every host up: {:?}",
        haproxy_status(&stats)
    );

    let load = MixedLoad::start(&dir, &frontend);

    // A rolling deploy, host by host: every host ends on generation 2, and no request fails.
    for host in &hosts {
        deploy(&host.dir, host.address, "");
        let reload = client(&host.dir, &["reload", "--wait"], RELOAD_DEADLINE);
        assert_eq!(
            reload.code(),
            0,
            "reload of {}: {}",
            host.address,
            reload.show()
        );
        assert!(
            host.launcher.wait_for_workers(WORKERS, 2, READY_DEADLINE),
            "host {} still runs old workers: {:?}",
            host.address,
            host.launcher.workers()
        );
        assert_eq!(host.healthz(), Some(200));
    }

    // A deploy that fails on the first host: the rollout stops there; that host keeps generation 2.
    let before: Vec<Vec<i32>> = hosts.iter().map(|h| h.launcher.workers_of(2)).collect();
    let mut rolled = 0;
    for host in &hosts {
        deploy(&host.dir, host.address, "--exit-before-ready 3");
        let reload = client(&host.dir, &["reload", "--wait"], RELOAD_DEADLINE);
        if reload.code() != 0 {
            assert!(
                reload.stderr.contains("failed") || reload.stdout.contains("failed"),
                "{}",
                reload.show()
            );
            deploy(&host.dir, host.address, ""); // put the previous version back
            break;
        }
        rolled += 1;
    }
    assert_eq!(rolled, 0, "the failing deploy went past the first host");
    for (host, pids) in hosts.iter().zip(&before) {
        assert_eq!(
            &host.launcher.workers_of(2),
            pids,
            "host {} changed workers after the failed rollout",
            host.address
        );
        assert_eq!(
            host.healthz(),
            Some(200),
            "host {} is not healthy",
            host.address
        );
    }

    // Host 3 taken out: stop, with --lb-drain; HAProxy marks it down; nothing is lost.
    let leaving = &hosts[2];
    let stop = client(&leaving.dir, &["stop"], STOP_DEADLINE);
    assert_eq!(
        stop.code(),
        0,
        "stop of {}: {}",
        leaving.address,
        stop.show()
    );
    assert!(
        wait_until(HAPROXY_DEADLINE, || {
            haproxy_status(&stats)
                .iter()
                .any(|(name, status)| name == "host3" && status.starts_with("DOWN"))
        }),
        "HAProxy never marked host3 down: {:?}",
        haproxy_status(&stats)
    );

    let report = load.stop();
    let (keepalive, close) = (&report.keepalive, &report.close);
    eprintln!(
        "through HAProxy: keep-alive {} requests, {} failures; connection-per-request {} requests, {} failures",
        keepalive.requests, keepalive.failures, close.requests, close.failures
    );
    haproxy.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        haproxy.wait_exit(HAPROXY_DEADLINE).is_some(),
        "HAProxy did not exit on SIGTERM"
    );
    report.assert_no_failures();
    assert!(
        report.served_by(2) > 0,
        "no request was served by a generation 2"
    );
}
