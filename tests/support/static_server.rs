//! A statically linked C HTTP server, compiled in the test with `gcc -static` (no dynamic loader, so no
//! LD_PRELOAD trick could reach it): binds without SO_REUSEPORT, never sends READY=1, answers every request
//! with `Connection: close` and X-Pid / X-Generation, and dies at once on SIGTERM (default action).

use std::path::Path;
use std::process::Command;

use super::TempDir;

/// ELF program header type of the dynamic loader's path: a static executable has none.
const PT_INTERP: u32 = 3;

/// The server's C source, shared with scripts/bench-handover.
const SERVER_C: &str = include_str!("../fixtures/static-server.c");

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
