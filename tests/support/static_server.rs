//! A statically linked C HTTP server, compiled in the test with `gcc -static` (no dynamic loader, so no
//! LD_PRELOAD trick could reach it): binds without SO_REUSEPORT, never sends READY=1, answers every request
//! with `Connection: close` and X-Pid / X-Generation, and dies at once on SIGTERM (default action).

use std::path::Path;
use std::process::Command;

use super::TempDir;

/// ELF program header type of the dynamic loader's path: a static executable has none.
const PT_INTERP: u32 = 3;

/// The server: SO_REUSEADDR only, one request per connection, X-Pid and X-Generation so loadgen can say
/// who answered. On an accept error other than an interrupted or aborted call it exits 1, as small servers do.
const SERVER_C: &str = r#"
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
    const char *gen = getenv("REUSEPORT_LAUNCH_GENERATION");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
    if (listen(fd, 128) < 0) { perror("listen"); return 1; }
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("accept");
            return 1;
        }
        char buf[4096];
        size_t got = 0;
        while (got < sizeof buf - 1) {
            ssize_t n = read(c, buf + got, sizeof buf - 1 - got);
            if (n <= 0) break;
            got += n;
            buf[got] = 0;
            if (strstr(buf, "\r\n\r\n")) break;
        }
        char body[64], resp[512];
        int blen = snprintf(body, sizeof body, "static pid=%d gen=%s\n", getpid(), gen ? gen : "0");
        int rlen = snprintf(resp, sizeof resp,
            "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\nX-Pid: %d\r\nX-Generation: %s\r\n\r\n%s",
            blen, getpid(), gen ? gen : "0", body);
        ssize_t off = 0;
        while (off < rlen) { ssize_t n = write(c, resp + off, rlen - off); if (n <= 0) break; off += n; }
        close(c);
    }
}
"#;

/// True when the ELF64 file has no PT_INTERP program header (no dynamic loader).
fn has_interpreter(path: &Path) -> bool {
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        elf.len() > 64 && elf.starts_with(b"\x7fELF") && elf[4] == 2,
        "{} is not an ELF64 file",
        path.display()
    );
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// Compiles SERVER_C with `gcc -static` into the test's dir and checks that the result is static.
pub fn build_static_server(dir: &TempDir) -> String {
    let source = dir.join("server.c");
    let binary = dir.join("static-server");
    std::fs::write(&source, SERVER_C).expect("write server.c");
    let output = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| {
            panic!("unable to run gcc (this test needs gcc and a static libc): {e}")
        });
    assert!(
        output.status.success(),
        "gcc -static failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !has_interpreter(&binary),
        "{} has a PT_INTERP header: it is not a static executable",
        binary.display()
    );
    let ldd = Command::new("ldd").arg(&binary).output();
    if let Ok(ldd) = ldd {
        let text = String::from_utf8_lossy(&ldd.stdout).into_owned()
            + &String::from_utf8_lossy(&ldd.stderr);
        assert!(
            text.contains("not a dynamic executable") || text.contains("statically linked"),
            "ldd does not call {} static: {text}",
            binary.display()
        );
    }
    binary.display().to_string()
}
