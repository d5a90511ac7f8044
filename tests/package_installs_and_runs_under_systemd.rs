//! The Debian package `bash scripts/package` builds holds what an operator needs and nothing else
//! (/usr/bin/reuseport-launch, the units, the sysctl.d file, the man page, three completions; no test
//! fixture), and what it installs works: unpacked with `dpkg-deb -x` into a scratch root, its launcher
//! and its template unit (pointed at that root) run under a real private `systemd --user`: start, a
//! `systemctl reload` that reaches generation 2 through the packaged `reuseport-launch reload --wait`, and a
//! stop that leaves no process behind.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::control::run_bounded;
use support::procfs;
use support::user_manager::UserManager;
use support::*;

const UNIT: &str = "reuseport-launch@pkg.service";
/// Where the packaged unit expects the binary.
const PACKAGED_LAUNCHER: &str = "/usr/bin/reuseport-launch";
/// scripts/package: a release build (up to date after the test build, else a few minutes on 2 cores),
/// and the packaging itself (dpkg-deb, offline).
const PACKAGE_DEADLINE: Duration = Duration::from_secs(900);
/// dpkg-deb and the packaged binary's --version answer in milliseconds.
const QUICK_DEADLINE: Duration = Duration::from_secs(30);
/// Generation 1 and 2 (2 example-servers each) are serving in well under this.
const GENERATION_DEADLINE: Duration = Duration::from_secs(30);
const ENV_GENERATION: &str = "REUSEPORT_LAUNCH_GENERATION";

/// Files the package must install, relative to its root.
const EXPECTED: &[&str] = &[
    "usr/bin/reuseport-launch",
    "lib/systemd/system/reuseport-launch@.service",
    "lib/systemd/system/example-server.service",
    "usr/lib/sysctl.d/99-reuseport-launch.conf",
    "usr/share/man/man1/reuseport-launch.1.gz",
    "usr/share/bash-completion/completions/reuseport-launch",
    "usr/share/zsh/vendor-completions/_reuseport-launch",
    "usr/share/fish/vendor_completions.d/reuseport-launch.fish",
];

fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found
}

fn workers(main_pid: i32) -> Vec<(i32, u32)> {
    procfs::children(main_pid)
        .into_iter()
        .filter(|&pid| procfs::alive(pid))
        .filter_map(|pid| Some((pid, procfs::env_var(pid, ENV_GENERATION)?.parse().ok()?)))
        .collect()
}

#[test]
fn package_installs_and_runs_under_systemd() {
    private_netns(true);
    let dir = TempDir::new("package");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = run_bounded(
        Command::new("bash").arg(manifest.join("scripts/package")),
        PACKAGE_DEADLINE,
    );
    assert_eq!(built.code(), 0, "scripts/package failed: {}", built.show());
    let deb = PathBuf::from(built.stdout.lines().last().unwrap_or_default().trim());
    assert!(
        deb.is_file() && deb.starts_with(manifest.join("target/debian")),
        "no .deb: {}",
        built.show()
    );

    let root = dir.join("root");
    let unpacked = run_bounded(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        QUICK_DEADLINE,
    );
    assert_eq!(unpacked.code(), 0, "dpkg-deb -x: {}", unpacked.show());
    for file in EXPECTED {
        assert!(root.join(file).is_file(), "the package lacks /{file}");
    }
    for file in files_below(&root) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name != "example-server" && name != "loadgen",
            "the package ships a test fixture: {}",
            file.display()
        );
    }
    let launcher = root.join("usr/bin/reuseport-launch");
    let version = run_bounded(Command::new(&launcher).arg("--version"), QUICK_DEADLINE);
    assert_eq!(version.code(), 0, "{}", version.show());
    assert!(
        version.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        version.show()
    );

    // The packaged unit, pointed at the scratch root's binary, in a private user manager.
    let runtime_dir = dir.join("xdg");
    let config_dir = dir.join("config");
    let unit_dir = config_dir.join("systemd/user");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(unit_dir.join(format!("{UNIT}.d"))).unwrap();
    std::fs::create_dir_all(config_dir.join("reuseport-launch")).unwrap();
    let shipped =
        std::fs::read_to_string(root.join("lib/systemd/system/reuseport-launch@.service")).unwrap();
    assert!(
        shipped.contains(PACKAGED_LAUNCHER),
        "the packaged unit does not run {PACKAGED_LAUNCHER}"
    );
    let launcher_text = launcher.to_str().unwrap();
    std::fs::write(
        unit_dir.join("reuseport-launch@.service"),
        shipped.replace(PACKAGED_LAUNCHER, launcher_text),
    )
    .unwrap();
    let service_log = dir.join("service.log");
    std::fs::write(
        unit_dir.join(format!("{UNIT}.d/test-log.conf")),
        format!(
            "[Service]\nStandardOutput=append:{}\nStandardError=inherit\n",
            service_log.display()
        ),
    )
    .unwrap();
    std::fs::write(
        unit_dir.join("rpl-test-idle.target"),
        "[Unit]\nDescription=reuseport-launch test: start nothing else\n",
    )
    .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let script = dir.write_script("server.sh", &exec_server(port, ""));
    std::fs::write(
        config_dir.join("reuseport-launch/pkg.env"),
        format!(
            "REUSEPORT_LAUNCH_ARGS=--workers 2 --ready-timeout 5 --stop-timeout 10 -- {}\n",
            script.display()
        ),
    )
    .unwrap();

    let manager = UserManager::start(
        &dir,
        &runtime_dir,
        &config_dir,
        "rpl-test-idle.target",
        UNIT,
    );
    manager.systemctl(&["start", UNIT]);
    let main_pid: i32 = manager
        .property("MainPID")
        .parse()
        .expect("MainPID is a number");
    assert!(main_pid > 0, "no MainPID: {}", manager.diagnostics());
    assert_eq!(
        std::fs::read_link(format!("/proc/{main_pid}/exe")).ok(),
        Some(launcher.clone()),
        "MainPID {main_pid} should be the packaged launcher"
    );
    let serving = |generation: u32| {
        wait_until(GENERATION_DEADLINE, || {
            let now = workers(main_pid);
            now.len() == 2 && now.iter().all(|&(_, g)| g == generation)
        })
    };
    assert!(
        serving(1),
        "generation 1 not serving: {}",
        manager.diagnostics()
    );
    assert_eq!(http_get(&addr).0, 1);
    let everyone =
        procfs::processes_with_env(support::launcher::ENV_MARKER, dir.path().to_str().unwrap());

    manager.systemctl(&["reload", UNIT]);
    assert!(
        serving(2),
        "generation 2 not serving after reload: {}",
        manager.diagnostics()
    );
    assert_eq!(http_get(&addr).0, 2);
    assert_eq!(
        manager.property("MainPID"),
        main_pid.to_string(),
        "the launcher kept its pid"
    );

    manager.systemctl(&["stop", UNIT]);
    assert_eq!(
        manager.property("ActiveState"),
        "inactive",
        "{}",
        manager.diagnostics()
    );
    let left: Vec<i32> = everyone
        .into_iter()
        .chain([main_pid])
        .filter(|&pid| procfs::alive(pid) && pid != manager.pid())
        .collect();
    assert!(left.is_empty(), "processes outlived the stop: {left:?}");
}
