#!/usr/bin/env python3
"""scripts/bench-compare.d/plot.py — the timeline plot of scripts/bench-compare, as a hand-written SVG
(standard library only: no matplotlib to install).

    python3 plot.py OUT.svg TITLE LABEL TIMELINE WINDOWS [LABEL TIMELINE WINDOWS]...

TIMELINE is loadgen's stderr with --progress-ms 1000: one {"t_ms","ok","failures"} JSON line per second
(other lines are skipped). WINDOWS holds one reload window a line: "opened closed", in ms since loadgen
started (from the SIGHUP until the replaced workers are gone). Two panels share the time axis: requests/s
(top) and failed requests/s (bottom), one line per setup; each setup's reload windows are bars in its colour
under the bottom panel.
"""
import json
import sys
from html import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
WIDTH, LEFT, RIGHT = 900, 70, 20
PANEL_H, TOP, GAP, TICK_ROW = 220, 40, 50, 12


def read_timeline(path):
    points = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{") and '"t_ms"' in line:
                p = json.loads(line)
                points.append((p["t_ms"] / 1000.0, p["ok"], p["failures"]))
    return points


def read_windows(path):
    with open(path) as f:
        return [(int(a) / 1000.0, int(b) / 1000.0) for a, b in (line.split() for line in f if line.strip())]


def nice_max(v):
    if v <= 0:
        return 1
    step = 10 ** (len(str(int(v))) - 1)
    return ((int(v) // step) + 1) * step


def main():
    if len(sys.argv) < 6 or (len(sys.argv) - 3) % 3:
        sys.exit("usage: plot.py OUT.svg TITLE LABEL TIMELINE WINDOWS [LABEL TIMELINE WINDOWS]...")
    out, title, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    setups = [(rest[i], read_timeline(rest[i + 1]), read_windows(rest[i + 2])) for i in range(0, len(rest), 3)]
    t_max = max([p[0] for _, pts, _ in setups for p in pts] + [1])
    ok_max = nice_max(max([p[1] for _, pts, _ in setups for p in pts] + [1]))
    fail_max = nice_max(max([p[2] for _, pts, _ in setups for p in pts] + [1]))
    plot_w = WIDTH - LEFT - RIGHT
    ticks_h = TICK_ROW * len(setups)
    legend_y = TOP + 2 * PANEL_H + GAP + ticks_h + 60
    height = legend_y + 16 * len(setups) + 10
    x = lambda t: LEFT + plot_w * t / t_max
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="{LEFT}" y="20" font-size="14">{escape(title)}</text>']

    def panel(y0, vmax, title, idx):
        y = lambda v: y0 + PANEL_H - PANEL_H * v / vmax
        svg.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#999"/>')
        for k in range(5):
            v = vmax * k / 4
            svg.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
            svg.append(f'<text x="{LEFT - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        svg.append(f'<text x="15" y="{y0 + PANEL_H / 2}" transform="rotate(-90 15 {y0 + PANEL_H / 2})" '
                   f'text-anchor="middle">{escape(title)}</text>')
        for n, (_, pts, _) in enumerate(setups):
            path = " ".join(f"{x(p[0]):.1f},{y(p[idx]):.1f}" for p in pts)
            svg.append(f'<polyline fill="none" stroke="{COLOURS[n % len(COLOURS)]}" stroke-width="1.5" '
                       f'points="{path}"/>')

    panel(TOP, ok_max, "requests/s", 1)  # a timeline point is (t_s, ok, failures)
    panel(TOP + PANEL_H + GAP, fail_max, "failed requests/s", 2)
    base = TOP + 2 * PANEL_H + GAP
    for n, (label, _, windows) in enumerate(setups):
        colour = COLOURS[n % len(COLOURS)]
        ty = base + 6 + TICK_ROW * n
        for opened, closed in windows:
            if opened <= t_max:
                width = max(x(min(closed, t_max)) - x(opened), 2)
                svg.append(f'<rect x="{x(opened):.1f}" y="{ty}" width="{width:.1f}" height="{TICK_ROW - 3}" '
                           f'fill="{colour}"/>')
    for s in range(0, int(t_max) + 1, 2):
        svg.append(f'<text x="{x(s):.1f}" y="{base + ticks_h + 22}" text-anchor="middle">{s}</text>')
    svg.append(f'<text x="{LEFT + plot_w / 2}" y="{base + ticks_h + 38}" text-anchor="middle">'
               f'seconds (bars under the plot: each setup\'s reloads, from SIGHUP to the old workers gone)</text>')
    for n, (label, _, _) in enumerate(setups):
        colour = COLOURS[n % len(COLOURS)]
        ly = legend_y + 16 * n
        svg.append(f'<rect x="{LEFT}" y="{ly - 5}" width="14" height="4" fill="{colour}"/>')
        svg.append(f'<text x="{LEFT + 20}" y="{ly}">{escape(label)}</text>')
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
