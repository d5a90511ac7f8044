//! The commonest static binary: a Go net/http service built here with CGO_ENABLED=0, unchanged —
//! `log.Fatal(http.ListenAndServe(...))`, no SO_REUSEPORT, no sd_notify, no signal handling (SIGTERM
//! kills it mid-request), and it exits as soon as accept(2) fails. Shutting its listener down, as the
//! unsteered drain does, makes it exit with its in-flight requests. With steering the old worker is only
//! steered out: it finishes what it accepted, and gets SIGTERM once its connections are gone. 2 workers,
//! 20 reloads under connection-per-request load, 5 ms per request: not one failed request.

mod support;

use std::process::Command;
use std::time::Duration;

use support::launcher::reload_and_wait;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 20;
/// Start of two Go servers plus the drain of the old ones.
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
/// `go build` of net/http with a cold build cache on 2 cores.
const BUILD_DEADLINE: Duration = Duration::from_secs(300);

const SERVER_GO: &str = r#"package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	gen := os.Getenv("REUSEPORT_LAUNCH_GENERATION")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond)
		w.Header().Set("X-Pid", fmt.Sprint(os.Getpid()))
		w.Header().Set("X-Generation", gen)
		fmt.Fprintf(w, "go pid=%d gen=%s\n", os.Getpid(), gen)
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:"+os.Args[1], nil))
}
"#;

/// Builds SERVER_GO statically (CGO_ENABLED=0) into the test's dir.
fn build_go_server(dir: &TempDir) -> String {
    let source = dir.join("main.go");
    let binary = dir.join("go-server");
    std::fs::write(&source, SERVER_GO).expect("write main.go");
    let mut build = Command::new("go");
    build
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .current_dir(dir.path())
        .env("CGO_ENABLED", "0")
        .env("GO111MODULE", "off");
    let output = support::control::run_bounded(&mut build, BUILD_DEADLINE);
    assert_eq!(
        output.code(),
        0,
        "go build failed (this test needs Go: `apt-get install golang-go`, which scripts/test does): {}",
        output.show()
    );
    let file = Command::new("file").arg(&binary).output();
    if let Ok(file) = file {
        let text = String::from_utf8_lossy(&file.stdout);
        assert!(
            text.contains("statically linked"),
            "the Go server is not static: {text}"
        );
    }
    binary.display().to_string()
}

#[test]
fn unchanged_go_server_reloads_without_failures() {
    private_netns(false);
    let dir = TempDir::new("go_server");
    let server = build_go_server(&dir);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            &WORKERS.to_string(),
            "--stop-timeout",
            "10",
            "--",
            &server,
            &port.to_string(),
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", RELOAD_DEADLINE),
        "generation 1 of the Go server did not become ready: {}",
        launcher.log_tail(20)
    );
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, 8, &[]);
    assert!(
        load.wait_for_traffic(Duration::from_secs(10)),
        "loadgen got no response from the Go server"
    );
    for generation in 2..=RELOADS + 1 {
        reload_and_wait(&launcher, WORKERS, generation, RELOAD_DEADLINE, || {});
    }
    let load = load.stop();
    eprintln!(
        "go server: {} requests, {} failures {:?} over {RELOADS} reloads; by generation {:?}",
        load.requests,
        load.failures,
        load.failure_kinds,
        load.by_generation()
    );
    assert_eq!(
        load.failures, 0,
        "the Go server lost requests over {RELOADS} reloads: {}",
        load.raw
    );
    let served = load.by_generation();
    assert!(
        (1..=RELOADS + 1).all(|g| served.get(&g).is_some_and(|&n| n > 0)),
        "some generation served nothing: {served:?}"
    );
    let accept_failures = launcher.log_lines("accept");
    assert!(
        accept_failures.is_empty(),
        "a Go worker's accept failed (its listener was shut under it): {accept_failures:?}"
    );
}
