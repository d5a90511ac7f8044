//! A legacy python HTTP server that listens long before it can serve, like many real ones (bind, then
//! load code, caches, models): from the moment it listens it answers every request with 503 for WARMUP
//! seconds, then 200. It never sets SO_REUSEPORT and never sends READY=1. Every answer names the pid and
//! generation that gave it, in the body (`pid=P gen=G`) and in X-Pid/X-Generation headers (loadgen reads
//! those), and closes the connection. With a sick directory, `/healthz` answers 500 (other paths still
//! 200) once a file `sick-PID` exists there: a worker that is alive but broken. A crashing server of a
//! generation above 1 stops accepting CRASH seconds after it listens, finishes the requests it has, and
//! exits with status 1: a deploy that gets ready, then dies.

use super::unchanged::python3;
use super::TempDir;

const SERVER: &str = r#"
import http.server, os, sys, threading, time
port, warmup = int(sys.argv[1]), float(sys.argv[2])
sick_dir = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
crash_after = float(sys.argv[4]) if len(sys.argv) > 4 else None
generation = os.environ.get("REUSEPORT_LAUNCH_GENERATION", "0")
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        warm = time.monotonic() - started >= warmup
        sick = sick_dir and os.path.exists(os.path.join(sick_dir, "sick-%d" % os.getpid()))
        if self.path == "/healthz" and sick:
            warm = False
        body = ("pid=%d gen=%s\n" % (os.getpid(), generation)).encode()
        self.send_response(200 if warm else (500 if sick else 503))
        self.send_header("X-Pid", str(os.getpid()))
        self.send_header("X-Generation", generation)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False
    request_queue_size = 1024
server = Server(("127.0.0.1", port), Handler)
started = time.monotonic()
def crash():
    time.sleep(crash_after)
    server.shutdown()
if crash_after is not None and generation != "1":
    threading.Thread(target=crash, daemon=True).start()
server.serve_forever()
# Only a crash ends serve_forever: finish the requests in hand, then die with status 1.
server.server_close()
os._exit(1)
"#;

/// PROGRAM and its arguments for the launcher: the server on 127.0.0.1:`port`, warming up for
/// `warmup_secs`.
pub fn warming_server(dir: &TempDir, port: u16, warmup_secs: f64) -> Vec<String> {
    server_args(dir, port, warmup_secs, None)
}

/// A server that, in generations above 1, exits with status 1 `crash_secs` after it listens.
pub fn crashing_server(dir: &TempDir, port: u16, crash_secs: f64) -> Vec<String> {
    let mut args = server_args(dir, port, 0.0, None);
    args.extend([String::new(), crash_secs.to_string()]);
    args
}

/// `warming_server` whose `/healthz` turns 500 for the worker whose `sick-PID` file is in `sick_dir`.
pub fn sickening_server(dir: &TempDir, port: u16, sick_dir: &std::path::Path) -> Vec<String> {
    server_args(dir, port, 0.0, Some(sick_dir))
}

fn server_args(
    dir: &TempDir,
    port: u16,
    warmup_secs: f64,
    sick_dir: Option<&std::path::Path>,
) -> Vec<String> {
    let script = dir.join("warming_server.py");
    std::fs::write(&script, SERVER).expect("write the warming server");
    let mut args = vec![
        python3(),
        script.to_string_lossy().into_owned(),
        port.to_string(),
        warmup_secs.to_string(),
    ];
    args.extend(sick_dir.map(|d| d.to_string_lossy().into_owned()));
    args
}
