#!/usr/bin/env python3
"""scripts/bench-compare.d/report.py — the Markdown summary of scripts/bench-compare (standard library only).

    python3 report.py WORKDIR OUT.md HEADER_LINE...

WORKDIR/passes.tsv has one line per pass: name, setup, load, tool (wrk or loadgen), server delay in ms, run,
net.ipv4.tcp_migrate_req, label. Per pass NAME it reads NAME.wrk (wrk --latency output) or NAME.json
(loadgen's report line), NAME.log (the manager's log), NAME.reloads (one SIGHUP a line), NAME.windows
("opened closed" ms of each reload window) and NAME.rss (the manager's VmRSS in kB). Prints the tables and
writes them to OUT.md.
"""
import json
import os
import re
import statistics
import sys

# The launcher logs `generation G serving: W workers ready in MS ms` (G >= 2: a reload); the cluster primary
# and the PM2 reloader log `reload to generation G done in MS ms` once every new worker is ready and the old
# ones were told to stop.
LAUNCHER_READY = re.compile(r"generation (\d+) serving: \d+ workers ready in (\d+) ms")
MANAGER_DONE = re.compile(r"reload to generation \d+ done in (\d+) ms")
FAILED = re.compile(r"reload to generation \d+ failed")
WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


class Pass:
    def __init__(self, workdir, fields):
        (self.name, self.setup, self.load, self.tool, delay, run, migrate, self.label) = fields
        self.delay, self.run, self.migrate = int(delay), int(run), migrate
        path = lambda ext: os.path.join(workdir, f"{self.name}.{ext}")
        log = read(path("log"))
        self.sent = len(read(path("reloads")).split())
        self.windows = [int(b) - int(a) for a, b in (line.split() for line in read(path("windows")).splitlines())]
        self.done = len(MANAGER_DONE.findall(log))
        self.failed_reloads = len(FAILED.findall(log))
        if "launcher" in self.setup:
            self.ready_ms = [int(ms) for g, ms in LAUNCHER_READY.findall(log) if int(g) >= 2]
        else:
            self.ready_ms = [int(ms) for ms in MANAGER_DONE.findall(log)]
        rss = read(path("rss")).strip()
        self.rss_kb = int(rss) if rss else None
        cpu = read(path("cpu")).split()
        self.cpu_ms = int(cpu[0]) * 1000 / int(cpu[1]) if cpu else None
        self.own_cpu_ms = int(cpu[2]) * 1000 / int(cpu[1]) if len(cpu) > 2 else None
        if self.tool == "wrk":
            self.read_wrk(read(path("wrk")))
        else:
            self.report = json.loads(read(path("json")).strip().splitlines()[-1])
            self.requests = self.report["requests"]
            self.failures = self.report["failures"]
            self.rps = self.report["rps"]

    def read_wrk(self, text):
        m = re.search(r"(\d+) requests in", text)
        self.requests = int(m.group(1)) if m else 0
        m = re.search(r"Requests/sec:\s+([\d.]+)", text)
        self.rps = float(m.group(1)) if m else 0.0
        m = WRK_ERRORS.search(text)
        self.errors = [int(x) for x in m.groups()] if m else [0, 0, 0, 0]
        m = WRK_NON2XX.search(text)
        self.errors.append(int(m.group(1)) if m else 0)
        self.failures = sum(self.errors)
        self.p50 = wrk_percentile(text, "50%")
        self.p99 = wrk_percentile(text, "99%")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wrk_percentile(text, label):
    m = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    return float(m.group(1)) * UNIT_MS[m.group(2)] if m else float("nan")


def spread(values, fmt="{:.0f}"):
    """'median (min–max)' of values; one value alone; 'n/a' when empty."""
    values = sorted(v for v in values if v == v)
    if not values:
        return "n/a"
    mid = fmt.format(statistics.median(values))
    if len(values) == 1:
        return mid
    return f"{mid} ({fmt.format(values[0])}–{fmt.format(values[-1])})"


def per(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def main():
    workdir, out, header = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(os.path.join(workdir, "passes.tsv")) as f:
        passes = [Pass(workdir, line.rstrip("\n").split("\t")) for line in f if line.strip()]
    setups = list(dict.fromkeys(p.setup for p in passes))
    label = {p.setup: p.label for p in passes}
    delays = sorted({p.delay for p in passes})
    loads = list(dict.fromkeys(p.load for p in passes))
    wrk = [p for p in passes if p.tool == "wrk" and p.migrate != "0"]
    lines = ["", "==================== bench-compare: summary ====================", *header, ""]
    emit = lines.append

    def group(pool, **keys):
        return [p for p in pool if all(getattr(p, k) == v for k, v in keys.items())]

    emit("### wrk, reloads as in the load line above (none for the bare example server): median (range) over runs")
    emit("")
    emit("| setup | load | delay | runs | requests | failures per run (connect/read/write/timeout/non-2xx summed) "
         "| req/s | p50 | p99 | reloads done/triggered | failures per reload |")
    emit("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for delay in delays:
        for load in loads:
            for setup in setups:
                runs = group(wrk, setup=setup, load=load, delay=delay)
                if not runs:
                    continue
                summed = [sum(p.errors[i] for p in runs) for i in range(5)]
                done, sent = sum(p.done for p in runs), sum(p.sent for p in runs)
                failures = sum(p.failures for p in runs)
                emit(f"| {label[setup]} | {load} | {delay} ms | {len(runs)} | {spread([p.requests for p in runs])} "
                     f"| {' / '.join(str(p.failures) for p in runs)} ({'/'.join(map(str, summed))}) "
                     f"| {spread([p.rps for p in runs])} | {spread([p.p50 for p in runs], '{:.2f}')} ms "
                     f"| {spread([p.p99 for p in runs], '{:.2f}')} ms | {done}/{sent} "
                     f"| {per(failures, done) if sent else 'no reloads'} |")
    emit("")

    emit("### Throughput ratios (median req/s of the wrk runs)")
    emit("")
    pairs = ([("launcher", other) for other in ("cluster", "pm2", "pm2-ready")]
             + [("launcher-surge1", "cluster"), ("launcher-surge1", "launcher"), ("example-launcher", "example-bare")])
    emit("| ratio | load | delay | value |")
    emit("| --- | --- | ---: | ---: |")
    for a, b in pairs:
        for delay in delays:
            for load in loads:
                ra = [p.rps for p in group(wrk, setup=a, load=load, delay=delay)]
                rb = [p.rps for p in group(wrk, setup=b, load=load, delay=delay)]
                if ra and rb:
                    emit(f"| {label[a]} ÷ {label[b]} | {load} | {delay} ms "
                         f"| {statistics.median(ra) / statistics.median(rb):.2f} |")
    emit("")

    emit("### CPU of the server's process tree (manager + workers, exited ones included) per 10,000 requests "
         "(wrk runs): median (range)")
    emit("")
    emit("| setup | load | delay | CPU ms per 10k requests | the manager alone, CPU ms per reload |")
    emit("| --- | --- | ---: | ---: | ---: |")
    for setup in setups:
        for delay in delays:
            for load in loads:
                runs = [p for p in group(wrk, setup=setup, load=load, delay=delay) if p.cpu_ms and p.requests]
                if runs:
                    own = [p.own_cpu_ms / p.sent for p in runs if p.own_cpu_ms is not None and p.sent]
                    emit(f"| {label[setup]} | {load} | {delay} ms "
                         f"| {spread([p.cpu_ms * 10000 / p.requests for p in runs], '{:.0f}')} "
                         f"| {spread(own, '{:.1f}') if own else 'no reloads'} |")
    emit("")

    emit("### Time per reload and the manager's memory (every pass with tcp_migrate_req=1)")
    emit("")
    emit("| setup | reloads done/triggered | failed | SIGHUP → new generation ready, ms | SIGHUP → old generation gone, ms "
         "| manager's VmRSS, MiB (max) |")
    emit("| --- | ---: | ---: | ---: | ---: | ---: |")
    for setup in setups:
        pool = [p for p in passes if p.setup == setup and p.migrate != "0"]
        if not any(p.sent for p in pool):
            continue
        rss = [p.rss_kb for p in pool if p.rss_kb]
        rss_text = f"{max(rss) / 1024:.1f}" if rss else "n/a"
        emit(f"| {label[setup]} | {sum(p.done for p in pool)}/{sum(p.sent for p in pool)} "
             f"| {sum(p.failed_reloads for p in pool)} | {spread([v for p in pool for v in p.ready_ms])} "
             f"| {spread([v for p in pool for v in p.windows])} | {rss_text} |")
    emit("")

    timeline = [p for p in passes if p.tool == "loadgen"]
    if timeline:
        emit("### Latency steady and during reloads (loadgen, 64 connections; a request counts as during a reload "
             "when it starts or ends between a SIGHUP and the moment the replaced workers are all gone)")
        emit("")
        emit("| setup | load | requests | failures | retries | reloads | requests during reloads "
             "| p50 steady / reloads, ms | p99 steady / reloads, ms | p99 reloads ÷ steady |")
        emit("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for p in timeline:
            r = p.report
            ms = lambda key: f"{r[key] / 1000:.2f}"
            during = r["reload_requests"] > 0
            ratio = per(r["reload_p99_us"], r["steady_p99_us"]) if during else "n/a"
            emit(f"| {p.label} | {p.load} | {r['requests']} | {r['failures']} | {r['retries']} | {p.done}/{p.sent} "
                 f"| {r['reload_requests']} | {ms('steady_p50_us')} / {ms('reload_p50_us') if during else 'n/a'} "
                 f"| {ms('steady_p99_us')} / {ms('reload_p99_us') if during else 'n/a'} | {ratio} |")
        emit("")

    no_migrate = [p for p in passes if p.migrate == "0"]
    if no_migrate:
        emit("### What net.ipv4.tcp_migrate_req=1 buys (wrk, same setup, one run with 0 against the runs with 1)")
        emit("")
        emit("| setup | load | delay | failures with 0 (connect/read/write/timeout/non-2xx) | reloads | "
             "failures per run with 1 |")
        emit("| --- | --- | ---: | --- | ---: | --- |")
        for p in no_migrate:
            with_one = group(wrk, setup=p.setup, load=p.load, delay=p.delay)
            emit(f"| {p.label} | {p.load} | {p.delay} ms | {p.failures} ({'/'.join(map(str, p.errors))}) "
                 f"| {p.done}/{p.sent} | {' / '.join(str(q.failures) for q in with_one) or 'n/a'} |")
        emit("")

    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
