#!/usr/bin/env python3
"""Builds the deck from measurements: reads the fan-out runs in BENCHMARKS.md and the e2e
drills' figures in data/ (written by `bash .ci/test.sh e2e`), draws the plots into img/, and
fills slides.src.md's {{placeholders}} into slides.md, which marp renders (.ci/stages/slides.sh).

Every figure carries the run it came from: BENCHMARKS.md runs by commit and the machine that
file describes, drill figures by data/run.json (commit, machine, load, build). A placeholder
with no measurement behind it stops the build rather than printing a guess.
"""
import csv
import json
import pathlib
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA, IMG = HERE / "data", HERE / "img"
BENCH_MACHINE = "2 vCPU Xeon (KVM), 24 GiB, Debian 12, shared"


# ---- BENCHMARKS.md -------------------------------------------------------------------------
def bench_runs():
    """Rows of the fan-out tables, each with its commit, run label, load and write floors."""
    runs, commit, label, load, floors = [], None, None, None, {}
    for line in (ROOT / "BENCHMARKS.md").read_text().splitlines():
        if m := re.match(r"### .*commit (\w+)\)", line):
            commit, label, load, floors = m.group(1), "", None, {}
        elif m := re.match(r"Run (\w), load average ([\d.]+)", line):
            label, load, floors = f"run {m.group(1)}", float(m.group(2)), {}
        elif commit and not label and load is None and (m := re.search(r"load average ([\d.]+)", line)):
            load = float(m.group(1))
        elif m := re.match(r"write floor over (\d+) sockets: ([\d.]+) µs", line):
            floors[int(m.group(1))] = float(m.group(2))
        elif commit and (m := re.match(r"\| (\d+) subs, (tick \w+|idle) \|", line)):
            cells = [c.strip() for c in line.strip("|").split("|")]
            runs.append({"commit": commit, "label": label, "load": load, "floors": dict(floors),
                         "subs": int(m.group(1)), "tick": m.group(2), "cells": cells})
    return runs


def cluster_figures():
    """The cluster section of BENCHMARKS.md (benches/cluster.rs): follower vs standalone per run,
    and the 50,000-subscriber run across three replicas."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    section = text[text.index("## Cluster mode (issue 13)"):text.index("## Fan-out")]
    verdicts = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and (m := re.match(r"(\d+) subs, tick (\w+)$", cells[0])):
            verdicts[int(m.group(1))] = {"tick": m.group(2), "ratio": float(cells[4]),
                                         "standalone": cells[7], "follower": cells[8]}
    scale = re.search(r"(\d+) replicas, tick (\w+), steady window \w+: (\d+) of (\d+) subscribers "
                      r"connected; (\d+) missing seqs;\s+final seq (\d+) to (\d+) over every "
                      r"subscriber; RSS per subscriber over all\s+replicas ([\d.]+) KiB", section)
    if not verdicts or scale is None:
        sys.exit("BENCHMARKS.md has no cluster-mode figures: run `cargo bench --bench cluster`")
    date = re.search(r"`benches/cluster.rs`, (\d{4}-\d\d-\d\d)", section)
    return verdicts, scale, date.group(1) if date else "date not recorded"


def latency_of(cell):
    parts = [float(x) for x in cell.split("/")] if "/" in cell else None
    return dict(zip(("p50", "p90", "p99", "max"), parts)) if parts else None


def full_rows(runs):
    """Rows of the sharded server's full-column tables (81bf9a5, e82be2a)."""
    out = []
    for r in runs:
        c = r["cells"]
        if len(c) != 12 or r["tick"] == "idle":
            continue
        cpu = re.match(r"([\d.]+) \+ ([\d.]+) = ([\d.]+)", c[6])
        floor = r["floors"].get(9000 if r["subs"] >= 5000 else 1000)
        out.append({**r, "latency": latency_of(c[3]), "task": float(cpu.group(1)),
                    "irq": float(cpu.group(2)), "total": float(cpu.group(3)), "floor": floor,
                    "rss_per_sub": float(c[11])})
    return out


def run_name(r):
    return f"{r['commit']}{' ' + r['label'] if r['label'] else ''}"


# ---- plots ---------------------------------------------------------------------------------
def style():
    plt.rcParams.update({"figure.dpi": 110, "font.size": 12, "axes.spines.top": False,
                         "axes.spines.right": False})


def plot_cpu(rows, before):
    at10k = [r for r in rows if r["subs"] == 10000]
    names = [run_name(r) for r in at10k] + [f"{before['commit']}\n(task per subscriber,\ntask time only)"]
    task = [r["task"] for r in at10k] + [before["task"]]
    irq = [r["irq"] for r in at10k] + [0]
    fig, ax = plt.subplots(figsize=(10, 4.6))
    ax.bar(names, task, label="server task µs/frame", color="#2f6db3")
    ax.bar(names, irq, bottom=task, label="+ irq (loopback receive, machine-wide)", color="#9cc0e8")
    for i, r in enumerate(at10k):
        ax.hlines(r["floor"], i - 0.4, i + 0.4, colors="#c0392b", linewidth=2.5,
                  label="write floor, 9,000 sockets (same run)" if i == 0 else None)
        ax.text(i, r["total"] + 0.3, f"{r['total'] / r['floor']:.2f}×", ha="center")
    ax.set_ylabel("µs per delivered frame")
    ax.set_title("CPU per delivered frame at 10,000 subscribers, against the write floor")
    ax.legend(loc="lower right", fontsize=10)
    ax.tick_params(axis="x", labelsize=10)
    fig.tight_layout()
    fig.savefig(IMG / "cpu-per-frame.png")
    plt.close(fig)


def plot_memory(runs):
    points = []
    for r in runs:
        c = r["cells"]
        kib = float(c[-1]) if c[-1].replace(".", "").isdigit() else None
        if kib and r["tick"] == "idle":
            points.append((f"{run_name(r)}", kib))
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.bar([p[0] for p in points], [p[1] for p in points], color="#3a9d5d")
    ax.axhline(8, color="#c0392b", linestyle="--", label="target ≤ 8 KiB")
    for i, (_, v) in enumerate(points):
        ax.text(i, v + 0.2, f"{v:.2f}", ha="center")
    ax.set_ylabel("KiB RSS per idle subscriber")
    ax.set_title("Memory per idle subscriber (19,900 idle subscribers)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "memory-per-subscriber.png")
    plt.close(fig)


def plot_latency(rows, loadtest):
    chosen = [r for r in rows if r["commit"] == "81bf9a5" or r["label"] == "run C"]
    labels = [f"{r['subs']:,} subs\n{run_name(r)}" for r in chosen]
    series = [r["latency"] for r in chosen]
    if loadtest:
        l = loadtest["latency"]
        labels.append(f"{loadtest['connected']:,} subs via haproxy\ne2e {loadtest['run']['commit']}")
        series.append({"p50": l["p50_ms"], "p90": l["p90_ms"], "p99": l["p99_ms"], "max": l["max_ms"]})
    fig, ax = plt.subplots(figsize=(10, 4.6))
    width = 0.2
    for k, (name, color) in enumerate((("p50", "#9cc0e8"), ("p90", "#5b93d1"), ("p99", "#2f6db3"), ("max", "#1b3f6b"))):
        xs = [i + (k - 1.5) * width for i in range(len(series))]
        ax.bar(xs, [s[name] for s in series], width, label=name, color=color)
    ax.axhline(50, color="#c0392b", linestyle="--", label="p99 target at 10k: 50 ms")
    ax.set_xticks(range(len(series)), labels, fontsize=9)
    ax.set_ylabel("ms, publish → kernel receive")
    ax.set_title("Delivery latency percentiles")
    ax.legend(fontsize=9, ncol=5)
    fig.tight_layout()
    fig.savefig(IMG / "latency.png")
    plt.close(fig)


def plot_timeline():
    path, events_path = DATA / "rolling-restart-timeline.csv", DATA / "rolling-restart-events.csv"
    if not path.exists():
        return False
    rows = list(csv.DictReader(path.open()))
    if len(rows) < 5:
        return False
    t0 = int(rows[0]["ms"])
    t = [(int(r["ms"]) - t0) / 1000 for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4.4))
    for n, color in (("1", "#2f6db3"), ("2", "#3a9d5d"), ("3", "#d68910")):
        ax.plot(t, [float(r[f"conn_{n}"] or 0) for r in rows], label=f"ratecast-{n}", color=color)
    for e in csv.DictReader(events_path.open()):
        if e["event"].startswith("SIGTERM") or e["event"] == "feed frozen":
            x = (int(e["ms"]) - t0) / 1000
            ax.axvline(x, color="#888", linestyle=":")
            ax.text(x, ax.get_ylim()[1] * 0.95, e["event"].replace("ratecast-", "r"), rotation=90,
                    va="top", ha="right", fontsize=9)
    ax.set_xlabel("seconds")
    ax.set_ylabel("WebSocket connections")
    ax.set_title("Rolling restart under 1,000 subscribers: connections per replica")
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "rolling-restart-timeline.png")
    plt.close(fig)
    return True


def unwrap(body):
    """Joins hard-wrapped lines of paragraphs and list items: Marp renders a newline inside a
    paragraph as a line break, while the source is wrapped at 100 columns for review."""
    out = []
    for line in body.split("\n"):
        prev = out[-1] if out else ""
        block = re.match(r"\s*([-*|#!<`]|\d+\.\s)", line)
        prev_text = prev.strip() and not re.match(r"\s*([|#!<`]|---)", prev)
        if line.strip() and prev_text and (line.startswith("  ") or not block):
            out[-1] = prev.rstrip() + " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


# ---- the deck --------------------------------------------------------------------------------
def load(name):
    path = DATA / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_tag(figures):
    r = figures["run"]
    build = f", {r['profile']} build" if r.get("profile") else ""
    return f"e2e run {r['commit']}{build}, {r['machine']}, load {r['load_average']:.1f}, {r['started_utc']}"


def main():
    style()
    IMG.mkdir(exist_ok=True)
    runs = bench_runs()
    rows = full_rows(runs)
    before = next(r for r in runs if r["commit"] == "3285130" and r["subs"] == 10000)
    before = {"commit": "3285130", "task": float(before["cells"][3])}
    live, outage, slow, loadtest = load("live"), load("outage"), load("slow-clients"), load("loadtest")
    leader, rolling, redis = load("leader-kill"), load("rolling-restart"), load("redis-outage")
    for name, figures in (("live", live), ("outage", outage), ("slow-clients", slow), ("loadtest", loadtest)):
        if figures is None:
            sys.exit(f"data/{name}.json is missing: run `bash .ci/test.sh e2e` first")

    plot_cpu(rows, before)
    plot_memory(runs)
    plot_latency(rows, loadtest)
    has_timeline = plot_timeline() and rolling is not None

    verdicts, scale, cluster_date = cluster_figures()
    small, large = verdicts[min(verdicts)], verdicts[max(verdicts)]
    cur = next(r for r in rows if r["commit"] == "81bf9a5" and r["subs"] == 10000)
    idle = next(r for r in runs if r["commit"] == "81bf9a5" and r["tick"] == "idle")
    lt = loadtest["latency"]
    v = {
        "bench_machine": BENCH_MACHINE,
        "cur_total": f"{cur['total']:.1f}", "cur_floor": f"{cur['floor']:.1f}",
        "cur_ratio": f"{cur['total'] / cur['floor']:.2f}", "cur_p99": f"{cur['latency']['p99']:.0f}",
        "cur_p50": f"{cur['latency']['p50']:.0f}", "idle_kib": idle["cells"][-1],
        "idle_subs": f"{idle['subs']:,}", "cur_load": f"{cur['load']}",
        "e2e_run": run_tag(loadtest),
        "wall_stale": (f"{outage['wall']['status']} · {outage['wall']['age']}" if outage.get("wall")
                       else "no picture in this run"),
        "live_deltas": live["deltas"], "live_units": live["units"],
        "out_stale": outage["stale_after_s"], "out_fire": outage["alert_firing_after_s"],
        "out_age": f"{float(outage['data_age_at_firing_s']):.0f}",
        "out_fresh": outage["fresh_after_recovery_s"], "out_resolved": outage["alert_resolved_after_recovery_s"],
        "slow_closes": slow["slow_consumer_closes"],
        "slow_others": slow["others"]["connected"], "slow_missing": slow["others"]["missing_seqs"],
        "flood_result": (f"closed with {slow['flood']['close_code']} after {slow['flood']['seconds']} s"
                         if slow["flood_budget_in_build"] else
                         "**pending**: this build has no per-client frame budget (stream-robustness change), "
                         f"so no 1008 is asserted (the flood {'ended by ' + slow['flood']['ended'] if slow['flood']['closed'] else 'stayed open'}"
                         f" after {slow['flood']['seconds']} s)"),
        "lt_clients": f"{loadtest['connected']:,}", "lt_fps": f"{loadtest['steady_frames_per_sec']:.0f}",
        "lt_p50": f"{lt['p50_ms']:.1f}", "lt_p99": f"{lt['p99_ms']:.1f}", "lt_max": f"{lt['max_ms']:.1f}",
        "lt_missing": loadtest["missing_seqs"],
        "leader_result": (f"lease taken over in {leader['takeover_ms'] / 1000:.1f} s; {leader['reconnects']} "
                          f"reconnects, {leader['missed_on_reconnect']} deltas missed, "
                          f"{leader['missing_seqs']} missing seqs")
                         if leader else "**not run: depends on cluster mode (issue 13)**",
        "rolling_result": (f"{rolling['connected']:,} subscribers, {rolling['reconnects']:,} reconnects, "
                           f"{rolling['missed_on_reconnect']} missed, {rolling['reconnect_snapshots']} snapshots, "
                           f"{rolling['missing_seqs']} missing seqs, "
                           f"{'all ended on one seq' if rolling['final_seq_min'] == rolling['final_seq_max'] else 'final seqs differ'}; "
                           f"delivery p99 {rolling['latency']['p99_ms']:.0f} ms across the restarts")
                          if rolling else "**not run: depends on cluster mode (issue 13)**",
        "redis_result": (f"stale within {redis['stale_after_s'] + 1} s, pods ready throughout; a leader "
                         f"{redis['leader_after_s']} s and fresh data {redis['fresh_after_s']} s after Redis "
                         f"came back")
                        if redis else "**not run: depends on cluster mode (issue 13)**",
        "cl_small": f"{min(verdicts):,}", "cl_small_ratio": f"{(small['ratio'] - 1) * 100:+.1f}",
        "cl_large": f"{max(verdicts):,}", "cl_large_ratio": f"{(large['ratio'] - 1) * 100:+.1f}",
        "cl_small_lat": f"{small['standalone']} → {small['follower']}",
        "cl_large_lat": f"{large['standalone']} → {large['follower']}",
        "cl_replicas": scale.group(1), "cl_tick": scale.group(2),
        "cl_connected": f"{int(scale.group(3)):,}", "cl_clients": f"{int(scale.group(4)):,}",
        "cl_missing": scale.group(5),
        "cl_final": "one final seq on every subscriber" if scale.group(6) == scale.group(7)
                    else "final seqs differ",
        "cl_rss": scale.group(8), "cl_date": cluster_date,
        "timeline": ("![w:1000](img/rolling-restart-timeline.png)" if has_timeline else
                     "*No timeline: the rolling-restart drill needs cluster mode (issue 13), which this run's binary does not have.*"),
    }
    text = (HERE / "slides.src.md").read_text()
    missing = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)) - set(v))
    if missing:
        sys.exit(f"slides.src.md uses figures nobody measured: {missing}")
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: str(v[m.group(1)]), text)
    # After Marp's front matter, which must open the file.
    end = text.index("\n---\n", 4) + 5
    text = text[:end] + unwrap(text[end:])
    note = "\n<!-- GENERATED by docs/presentation/build.py from slides.src.md: edit that. -->\n"
    (HERE / "slides.md").write_text(text[:end] + note + text[end:])
    print(f"slides.md written; plots: {sorted(p.name for p in IMG.glob('*.png'))}")


if __name__ == "__main__":
    main()
