# shellcheck shell=bash
# scripts/lib.sh — what scripts/test, scripts/demo and the bench scripts share: messages, the toolchain,
# missing Debian tools, the private network namespace, waits with deadlines, stopping one process, a pass's
# port, and the cleanup of every process a script started (by pid, TERM then KILL).
#
# Sourced, never run. Before sourcing, a script sets LOG_TAG (the prefix of its messages); scripts that
# start processes also set CLIENT_PORT_RANGE, NETNS_MARK and KEEP_VAR (the name of the environment variable
# that keeps WORKDIR, e.g. DEMO_KEEP), and append every background pid to STARTED_PIDS.

STARTED_PIDS=()                     # every background process the script started, killed on exit
WORKDIR=""
RUN_DEADLINE_MS=0                   # when set, no wait_until outlasts it (a whole run's budget)
# After SIGTERM, how long cleanup gives the script's processes before SIGKILL.
readonly CLEANUP_GRACE_S=0.5
# How often the waits re-check their condition.
readonly POLL_S=0.02

log() { printf '%s: %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

# Milliseconds since the epoch, from bash's own clock (no fork).
now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
}

# cargo installed by rustup lives in ~/.cargo/bin, which a non-login shell may not have on PATH.
find_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        local dir
        for dir in "${CARGO_HOME:-$HOME/.cargo}/bin" "$HOME/.cargo/bin"; do
            if [[ -x $dir/cargo ]]; then
                export PATH="$dir:$PATH"
                break
            fi
        done
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found on PATH nor in ~/.cargo/bin; install a Rust toolchain (https://rustup.rs) first"
}

# build BIN...: cargo build --release of the launcher and the fixtures in ROOT, then checks that each BIN was
# built: reuseport-launch in target/release, the fixtures (example-server, loadgen; cargo examples, so that
# `cargo install` installs only the launcher) in target/release/examples.
build() {
    log "building (cargo build --release --bins --examples)"
    (cd "$ROOT" && cargo build --release --quiet --bins --examples)
    local bin path
    for bin in "$@"; do
        path=$ROOT/target/release/$bin
        [[ $bin == reuseport-launch ]] || path=$ROOT/target/release/examples/$bin
        [[ -x $path ]] || die "$path was not built"
    done
}

# install_missing CMD...: installs, with apt-get, the Debian packages of the commands not on PATH.
install_missing() {
    local -A package_of=([wrk]=wrk [ip]=iproute2 [ss]=iproute2 [sysctl]=procps [unshare]=util-linux
        [nsenter]=util-linux [nstat]=iproute2 [go]=golang-go [gcc]=gcc [file]=file [haproxy]=haproxy
        [dnsmasq]=dnsmasq-base [dig]=bind9-dnsutils [strace]=strace)
    local -a missing=()
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${package_of[$cmd]}")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    # Deduplicate (ip and ss both come from iproute2, unshare and nsenter from util-linux).
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing[*]} and no apt-get to install them; install them by hand"
    log "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# True in the second half of a run, inside the private network namespace made by reexec_in_netns.
in_private_netns() { [[ ${!NETNS_MARK:-} == 1 ]]; }

# reexec_in_netns SCRIPT ARGS...: re-runs SCRIPT in a new network namespace (root only; it does not return).
reexec_in_netns() {
    export "$NETNS_MARK=1"
    exec unshare --net -- bash "$@"
}

# Runs in the new namespace: a fresh netns has lo down and its own tcp_migrate_req (default 0).
setup_netns() {
    ip link set lo up
    sysctl -q -w net.ipv4.tcp_migrate_req=1
    sysctl -q -w net.ipv4.ip_local_port_range="$CLIENT_PORT_RANGE"
    log "private network namespace: lo up, net.ipv4.tcp_migrate_req=$(sysctl -n net.ipv4.tcp_migrate_req)," \
        "client ports $(sysctl -n net.ipv4.ip_local_port_range | tr '\t' '-')"
}

# start_run PREFIX: a private WORKDIR under /tmp, and the traps that clean up on any exit.
start_run() {
    WORKDIR=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 0700 "$WORKDIR"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
}

# Kills every pid of STARTED_PIDS still alive (TERM, then KILL after CLEANUP_GRACE_S, saying so) and removes
# WORKDIR unless ${KEEP_VAR}=1.
cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
    done
    sleep "$CLEANUP_GRACE_S"
    for pid in "${STARTED_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "cleanup: pid $pid still alive after SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n $WORKDIR && ${!KEEP_VAR:-0} != 1 ]]; then
        rm -rf "$WORKDIR"
    fi
    return 0
}

not_alive() { ! kill -0 "$1" 2>/dev/null; }

# log_has FILE TEXT: FILE contains TEXT (false while FILE does not exist yet: a process just forked).
log_has() { grep -qF -- "$2" "$1" 2>/dev/null; }

# stop_pid PID WHAT: SIGTERM, then SIGKILL if PID is still alive after the script's STEP_TIMEOUT_S; reaps it.
stop_pid() {
    local pid=$1 what=$2
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_quiet "$STEP_TIMEOUT_S" not_alive "$pid"; then
        log "$what (pid $pid) did not exit within ${STEP_TIMEOUT_S}s of SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# next_port: the next pass's port, BASE_PORT + the passes started so far, in PORT (the script sets
# BASE_PORT and PASSES_STARTED=0); a pass on a port of its own never meets the last pass's TIME-WAIT.
next_port() {
    PORT=$((BASE_PORT + PASSES_STARTED))
    PASSES_STARTED=$((PASSES_STARTED + 1))
}

# wait_quiet TIMEOUT_S COMMAND...: polls COMMAND until it succeeds (0) or TIMEOUT_S or the run's budget
# passes (1).
wait_quiet() {
    local timeout_s=$1
    shift
    local deadline=$(($(now_ms) + timeout_s * 1000))
    ((RUN_DEADLINE_MS > 0 && deadline > RUN_DEADLINE_MS)) && deadline=$RUN_DEADLINE_MS
    until "$@"; do
        (($(now_ms) > deadline)) && return 1
        sleep "$POLL_S"
    done
    return 0
}

# wait_until TIMEOUT_S DESCRIPTION COMMAND...: like wait_quiet, but dies naming DESCRIPTION at the deadline,
# after calling on_wait_timeout if the script defines it (e.g. to show a log's tail).
wait_until() {
    local timeout_s=$1 what=$2
    shift 2
    if ! wait_quiet "$timeout_s" "$@"; then
        if declare -F on_wait_timeout >/dev/null; then
            on_wait_timeout
        fi
        die "timed out waiting for $what (limit ${timeout_s}s)"
    fi
}
