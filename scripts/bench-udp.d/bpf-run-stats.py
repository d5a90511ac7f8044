#!/usr/bin/env python3
"""scripts/bench-udp.d/bpf-run-stats.py — turns on the kernel's run-time statistics of BPF programs
(bpf(2) BPF_ENABLE_STATS, Linux 5.8+) for as long as it runs, then prints the run_time_ns and run_cnt
of one process's reuseport programs.

    python3 bpf-run-stats.py PID

The statistics stay on while this process holds the fd BPF_ENABLE_STATS returned (no sysctl is
changed: kernel.bpf_stats_enabled keeps its value); it prints `enabled` once they are on, and at SIGINT
or SIGTERM prints `run_time_ns=N` and `run_cnt=N`, summed over the BPF_PROG_TYPE_SK_REUSEPORT programs
whose fds PID holds (read from /proc/PID/fdinfo), since the statistics were turned on, and exits.
"""
import ctypes
import os
import signal
import sys

SYS_BPF = 321                       # x86_64
BPF_ENABLE_STATS = 32               # enum bpf_cmd
BPF_STATS_RUN_TIME = 0              # enum bpf_stats_type
BPF_PROG_TYPE_SK_REUSEPORT = 21     # enum bpf_prog_type
BPF_ATTR_SIZE = 8                   # union bpf_attr's enable_stats: one __u32 type, zero-padded


def enable_stats():
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(BPF_ATTR_SIZE)
    ctypes.memmove(attr, ctypes.byref(ctypes.c_uint32(BPF_STATS_RUN_TIME)), 4)
    fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, attr, BPF_ATTR_SIZE)
    if fd < 0:
        sys.exit(f"bpf-run-stats: bpf(BPF_ENABLE_STATS) failed: {os.strerror(ctypes.get_errno())} "
                 "(needs root and Linux 5.8+)")
    return fd


def reuseport_program_stats(pid):
    run_time_ns = run_cnt = 0
    fdinfo = f"/proc/{pid}/fdinfo"
    for name in os.listdir(fdinfo):
        try:
            with open(os.path.join(fdinfo, name)) as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue   # an fd closed meanwhile
        if fields.get("prog_type", "").strip() == str(BPF_PROG_TYPE_SK_REUSEPORT):
            run_time_ns += int(fields.get("run_time_ns", "0"))
            run_cnt += int(fields.get("run_cnt", "0"))
    return run_time_ns, run_cnt


def main():
    pid = int(sys.argv[1])
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
    enable_stats()
    time_before, runs_before = reuseport_program_stats(pid)
    print("enabled", flush=True)
    signal.sigwait([signal.SIGINT, signal.SIGTERM])
    time_after, runs_after = reuseport_program_stats(pid)
    print(f"run_time_ns={time_after - time_before}\nrun_cnt={runs_after - runs_before}", flush=True)


if __name__ == "__main__":
    main()
