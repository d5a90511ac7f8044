//! A real QUIC stack, aioquic from PyPI (installed by scripts/test), with `--udp-flow-idle`: an
//! unchanged QUIC server (no SO_REUSEPORT, no sd_notify) and a client holding one QUIC connection that
//! opens a stream every 100 ms. Across a reload the connection keeps its worker — every answer comes
//! from the same generation-1 process, none fails — while a new connection is served by generation 2;
//! generation 1 is kept while the connection lives and stopped once it has been closed for the idle
//! time.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const WORKERS: usize = 2;
/// `--udp-flow-idle` in seconds: long against the connection's 100 ms beat, short for the test.
const IDLE_SECS: u64 = 1;
const DEADLINE: Duration = Duration::from_secs(20);
/// Answers the connection must get after generation 2 serves: over a second of streams.
const ANSWERS_ACROSS_RELOAD: usize = 10;

/// Writes a self-signed certificate and key for the server (with `cryptography`, an aioquic dependency).
const MAKE_CERT_PY: &str = r#"
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;

/// Answers every stream with `pid=P gen=G`.
const SERVER_PY: &str = r#"
import asyncio, os, sys
from aioquic.asyncio import serve, QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived
GEN = os.environ.get("REUSEPORT_LAUNCH_GENERATION", "0").encode()
class Answer(QuicConnectionProtocol):
    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived) and event.end_stream:
            self._quic.send_stream_data(event.stream_id, b"pid=%d gen=%s" % (os.getpid(), GEN), end_stream=True)
            self.transmit()
async def main():
    config = QuicConfiguration(is_client=False, alpn_protocols=["test"], idle_timeout=30)
    config.load_cert_chain(sys.argv[2], sys.argv[3])
    await serve("127.0.0.1", int(sys.argv[1]), configuration=config, create_protocol=Answer)
    await asyncio.Future()
asyncio.run(main())
"#;

/// One QUIC connection; a stream every 100 ms until the file argv[2] exists (or 60 s), or for argv[3]
/// streams. Prints `P G` per answer and `fail WHY` per stream that failed, as they happen.
const CLIENT_PY: &str = r#"
import asyncio, os, ssl, sys, time
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
async def main():
    port, stop, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    config = QuicConfiguration(is_client=True, alpn_protocols=["test"], verify_mode=ssl.CERT_NONE, idle_timeout=30)
    async with connect("127.0.0.1", port, configuration=config) as connection:
        end, sent = time.time() + 60, 0
        while time.time() < end and not os.path.exists(stop) and (count == 0 or sent < count):
            sent += 1
            try:
                reader, writer = await connection.create_stream()
                writer.write(b"hello")
                writer.write_eof()
                answer = (await asyncio.wait_for(reader.read(), 2)).decode()
                pid, gen = (kv.split("=")[1] for kv in answer.split())
                print(pid, gen, flush=True)
            except Exception as e:
                print("fail", repr(e), flush=True)
            await asyncio.sleep(0.1)
asyncio.run(main())
"#;

/// The Python with aioquic that scripts/test installs.
fn quic_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/quic-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/test`, which installs aioquic from PyPI into that venv",
        python.display()
    );
    python
}

/// (pid, generation) of every answer in a client's output so far, and its failure lines.
fn answers(output: &Path) -> (Vec<(i32, u32)>, Vec<String>) {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    let mut answers = Vec::new();
    let mut failures = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        match (fields.next().map(str::parse), fields.next().map(str::parse)) {
            (Some(Ok(pid)), Some(Ok(generation))) => answers.push((pid, generation)),
            _ => failures.push(line.to_owned()),
        }
    }
    (answers, failures)
}

/// Starts a client writing to `name`.out: streams until `stop` exists, or `count` streams.
fn start_client(dir: &TempDir, python: &Path, port: u16, name: &str, count: u32) -> ChildGuard {
    let output = std::fs::File::create(dir.join(format!("{name}.out"))).expect("client output");
    let errors = std::fs::File::create(dir.join(format!("{name}.err"))).expect("client errors");
    ChildGuard::spawn(
        Command::new(python)
            .arg(dir.join("client.py"))
            .arg(port.to_string())
            .arg(dir.join(format!("{name}.stop")))
            .arg(count.to_string())
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors),
    )
}

#[test]
fn quic_connection_keeps_its_worker_across_a_reload() {
    let python = quic_python();
    private_netns(true);
    let dir = TempDir::new("quic_session");
    for (name, body) in [
        ("server.py", SERVER_PY),
        ("client.py", CLIENT_PY),
        ("cert.py", MAKE_CERT_PY),
    ] {
        std::fs::write(dir.join(name), body).expect("write the python scripts");
    }
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new(&python)
        .arg(dir.join("cert.py"))
        .args([&cert, &key])
        .status()
        .expect("run cert.py");
    assert!(made.success(), "cert.py failed: {made}");

    let port = free_port();
    let launcher = Launcher::spawn_serving(
        &dir,
        &[
            "--workers".to_string(),
            WORKERS.to_string(),
            "--udp-flow-idle".to_string(),
            IDLE_SECS.to_string(),
            "--stop-timeout".to_string(),
            "20".to_string(),
            "--".to_string(),
            python.display().to_string(),
            dir.join("server.py").display().to_string(),
            port.to_string(),
            cert.display().to_string(),
            key.display().to_string(),
        ],
        DEADLINE,
    );
    let session_out = dir.join("session.out");
    let mut session = start_client(&dir, &python, port, "session", 0);
    assert!(
        wait_until(DEADLINE, || answers(&session_out).0.len() >= 3),
        "the QUIC connection got no answers: {:?}",
        answers(&session_out)
    );

    launcher.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(launcher.wait_for_log("generation 2 serving", DEADLINE));
    let before = answers(&session_out).0.len();
    let newcomer_out = dir.join("newcomer.out");
    let mut newcomer = start_client(&dir, &python, port, "newcomer", 5);
    assert!(
        newcomer.wait_exit(DEADLINE).is_some(),
        "the new connection's client did not finish"
    );
    let (new_answers, new_failures) = answers(&newcomer_out);
    assert!(
        new_failures.is_empty() && new_answers.len() == 5,
        "new connection: {new_answers:?}, failures {new_failures:?}"
    );
    assert!(
        new_answers.iter().all(|&(_, generation)| generation == 2),
        "a new connection after the reload is served by generation 2: {new_answers:?}"
    );
    assert!(
        wait_until(DEADLINE, || answers(&session_out).0.len()
            >= before + ANSWERS_ACROSS_RELOAD),
        "the QUIC connection stalled after the reload: {:?}",
        answers(&session_out)
    );
    assert!(
        !launcher.workers_of(1).is_empty(),
        "generation 1 must be kept while its QUIC connection is active"
    );

    std::fs::write(dir.join("session.stop"), "stop").expect("write session.stop");
    assert!(
        session.wait_exit(DEADLINE).is_some(),
        "the session client did not close"
    );
    let (session_answers, session_failures) = answers(&session_out);
    assert!(
        session_failures.is_empty(),
        "streams of the QUIC connection failed: {session_failures:?}"
    );
    let first = session_answers[0];
    assert_eq!(first.1, 1, "the connection began on generation 1");
    assert!(
        session_answers.iter().all(|&answer| answer == first),
        "every stream of the connection is answered by its first worker {first:?}: {session_answers:?}"
    );
    assert!(
        launcher.wait_for_log("reload to generation 2 done", DEADLINE),
        "generation 1 was not stopped once its connection had closed: {}",
        launcher.log_tail(10)
    );
    eprintln!(
        "quic: {} answers from pid {} (generation 1) across the reload, 5 new-connection answers from generation 2",
        session_answers.len(),
        first.0
    );
}
