#!/usr/bin/env python3
"""Builds the deck from measurements: reads the fan-out runs in BENCHMARKS.md and the e2e
drills' figures in data/ (written by `bash .ci/test.sh e2e`), draws the plots into img/, and
fills slides.src.md's {{placeholders}} into slides.md, which marp renders (.ci/stages/slides.sh).

Every figure is read from its one source, never typed here: the bench runs and the bench machine
from BENCHMARKS.md, drill figures from data/*.json (stamped by data/run.json: commit, machine,
load, build), the image size and line coverage from docs/measured/ (written by the docker stage
and the coverage command), the cost from infra/README.md's table, the panel count from the
chart's dashboard. A figure that is missing stops the build (exit 1) rather than printing a
guess; a drill says "not run" only when data/drills-not-run.txt (demo/run.sh, DEMO_MAY_SKIP)
lists it. README's figures are checked against the same sources (check_readme).
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
DATA, IMG, BENCH = HERE / "data", HERE / "img", HERE / "bench"
MEASURED = ROOT / "docs" / "measured"
DASHBOARD = ROOT / "deploy" / "helm" / "ratecast" / "dashboards" / "ratecast.json"
# The build whose idle run (BENCHMARKS.md, "(commit …)" section) the memory slide quotes.
IDLE_COMMIT = "5200de5"
# The smallest text a chart may carry, in pixels of the 1920×1080 screen the deck is shown on
# (checked by fit-check.mjs against each chart's img/<name>.json): read from across a room.
MIN_CHART_TEXT_PX = 20


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


def bench_section(title):
    """The text of one `## ` section of BENCHMARKS.md."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def table_rows(text):
    """The cells of each Markdown table row in text (separator rows left out)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines()
            if line.startswith("|") and not re.match(r"\|\s*-", line)]


def bench_machine():
    """BENCHMARKS.md's "The machine" table, in one line."""
    rows = {r[0]: r[1] for r in table_rows(bench_section("The machine")) if len(r) == 2 and r[0]}
    try:
        cpu, memory, os_, files = rows["CPU"], rows["memory"], rows["OS"], rows["open files"]
    except KeyError as e:
        sys.exit(f"BENCHMARKS.md's machine table has no {e} row")
    shared = "; shared with other builds" if "shared" in rows.get("neighbours", "") else ""
    nofile = re.search(r"\*\*([\d,]+)\*\*", files)
    return f"{cpu}; {memory.split(',')[0]}; {os_.split(',')[0]}{shared}", nofile.group(1)


def bench_targets():
    """BENCHMARKS.md's targets table (Findings): target → (verdict, measured)."""
    rows = table_rows(bench_section("Findings"))
    targets = {r[0]: (r[1].replace("**", ""), r[2]) for r in rows if len(r) == 3 and r[0] != "target"}
    if not targets:
        sys.exit("BENCHMARKS.md has no targets table under Findings")
    return targets


def memory_target_kib(targets):
    """The KiB in the name of the targets table's memory row ("≤ 2.5 KiB server RSS per idle …")."""
    names = [k for k in targets if "idle subscriber" in k]
    found = re.search(r"≤ ([\d.]+) KiB", names[0]) if len(names) == 1 else None
    if not found:
        sys.exit("BENCHMARKS.md's targets table has no single '≤ N KiB … idle subscriber' row")
    return float(found.group(1))


def target(targets, words):
    """The one target whose name holds `words`."""
    found = [v for k, v in targets.items() if words in k]
    if len(found) != 1:
        sys.exit(f"BENCHMARKS.md's targets table has {len(found)} rows about {words!r}")
    return found[0]


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
# Drawn at the size they are shown (1280 px wide at full slide width, 100 dpi) with text no
# smaller than 14 pt, so that on a 1920×1080 screen no chart text is under MIN_CHART_TEXT_PX.
DPI = 100


def style():
    plt.rcParams.update({"figure.dpi": DPI, "font.size": 17, "axes.titlesize": 19,
                         "axes.labelsize": 17, "xtick.labelsize": 16, "ytick.labelsize": 16,
                         "legend.fontsize": 15, "axes.spines.top": False,
                         "axes.spines.right": False})


def save(fig, name):
    """Writes img/NAME.png and img/NAME.json: its width and its smallest text in image pixels,
    which fit-check.mjs scales to the screen to hold it to MIN_CHART_TEXT_PX."""
    fig.tight_layout()
    fig.savefig(IMG / f"{name}.png", dpi=DPI)
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)
             if t.get_visible() and t.get_text().strip()]
    (IMG / f"{name}.json").write_text(json.dumps({
        "width_px": round(fig.get_size_inches()[0] * DPI),
        "min_text_px": round(min(sizes) * DPI / 72, 1),
        "min_screen_text_px": MIN_CHART_TEXT_PX,
    }) + "\n")
    plt.close(fig)


def plot_cpu(rows, before, floor_sockets):
    at10k = [r for r in rows if r["subs"] == 10000]
    names = [run_name(r) for r in at10k] + [f"{before['commit']}\ntask/subscriber"]
    task = [r["task"] for r in at10k] + [before["task"]]
    irq = [r["irq"] for r in at10k] + [0]
    fig, ax = plt.subplots(figsize=(12.8, 4.0))
    ax.bar(names, task, label="server task µs/frame", color="#2f6db3")
    ax.bar(names, irq, bottom=task, label="+ irq (loopback receive)", color="#9cc0e8")
    for i, r in enumerate(at10k):
        ax.hlines(r["floor"], i - 0.4, i + 0.4, colors="#c0392b", linewidth=3,
                  label=f"write floor, {floor_sockets:,} sockets" if i == 0 else None)
        ax.text(i, r["total"] + 0.3, f"{r['total'] / r['floor']:.2f}×", ha="center", fontsize=17)
    ax.text(len(at10k), before["task"] + 0.3, "task only", ha="center", fontsize=15)
    ax.set_ylabel("µs per delivered frame")
    ax.set_ylim(0, max(r["total"] for r in at10k) * 1.5)
    ax.legend(loc="upper left", ncol=3, fontsize=15, frameon=False)
    save(fig, "cpu-per-frame")


def plot_memory(runs, target_kib):
    points = []
    for r in runs:
        c = r["cells"]
        kib = float(c[-1]) if c[-1].replace(".", "").isdigit() else None
        if kib and r["tick"] == "idle":
            points.append((run_name(r).replace(" run ", "\nrun "), kib, r["subs"]))
    fig, ax = plt.subplots(figsize=(12.8, 4.0))
    ax.bar([p[0] for p in points], [p[1] for p in points], color="#3a9d5d")
    ax.axhline(target_kib, color="#c0392b", linestyle="--", linewidth=2.5, label=f"target ≤ {target_kib:g} KiB")
    for i, (_, v, _) in enumerate(points):
        ax.text(i, v + 0.2, f"{v:.2f}", ha="center", fontsize=17)
    ax.set_ylabel("KiB RSS per idle subscriber")
    ax.legend(loc="upper left", frameon=False)
    save(fig, "memory-per-subscriber")
    return sorted({p[2] for p in points})


def plot_latency(rows, loadtest):
    chosen = [r for r in rows if r["commit"] == "81bf9a5" or r["label"] == "run C"]
    labels = [f"{r['subs']:,}\n{run_name(r)}" for r in chosen]
    series = [r["latency"] for r in chosen]
    l = loadtest["latency"]
    labels.append(f"{loadtest['connected']:,} via\nhaproxy, e2e")
    series.append({"p50": l["p50_ms"], "p90": l["p90_ms"], "p99": l["p99_ms"], "max": l["max_ms"]})
    fig, ax = plt.subplots(figsize=(12.8, 4.0))
    width = 0.2
    for k, (name, color) in enumerate((("p50", "#9cc0e8"), ("p90", "#5b93d1"), ("p99", "#2f6db3"), ("max", "#1b3f6b"))):
        xs = [i + (k - 1.5) * width for i in range(len(series))]
        ax.bar(xs, [s[name] for s in series], width, label=name, color=color)
    ax.axhline(50, color="#c0392b", linestyle="--", linewidth=2.5, label="p99 target at 10k: 50 ms")
    ax.set_xticks(range(len(series)), labels)
    ax.set_ylabel("ms, publish → receive")
    ax.legend(ncol=5, loc="upper left", frameon=False)
    ax.set_ylim(0, max(s["max"] for s in series) * 1.2)
    save(fig, "latency")


# The peers the fan-out bench measures beside ratecast (labels of its `peer-json:` records), each
# with the one-word name the chart gives it.
PEERS = {"tokio-tungstenite": "tokio-tungstenite", "Node ws": "Node ws",
         "Node ws perMessageDeflate": "Node ws deflate"}


def peer_figures():
    """bench/deflate.json (the fan-out bench's permessage-deflate runs, BENCHMARKS.md): the
    newest run that measured every peer in PEERS beside ratecast (the newest code: run 6 brought
    context takeover, which changed ratecast's compressed bytes), at the subscriber count where
    all of them ran (Node ws compressed only up to 1,000: a zlib stream per connection). Kept out
    of data/, which the e2e stage clears."""
    path = BENCH / "deflate.json"
    if not path.exists():
        sys.exit("bench/deflate.json is missing: `cargo bench --bench fanout` prints its figures "
                 "(BENCHMARKS.md, Fan-out: peers side by side)")
    complete = []
    for r in json.loads(path.read_text())["runs"]:
        by_subs = {}
        for p in r["peers"]:
            subs, _tick, name = p["run"].split(", ", 2)
            by_subs.setdefault(int(subs.split()[0]), {})[name] = p
        complete += [(r, subs, peers) for subs, peers in by_subs.items() if set(PEERS) <= set(peers)]
    if not complete:
        sys.exit(f"bench/deflate.json has no run with all of {sorted(PEERS)} at one subscriber count: "
                 "run `cargo bench --bench fanout` with the peers (BENCHMARKS.md, peers side by side)")
    run, subs, peers = complete[-1]
    ours = next((r for r in run["ratecast"] if r["subscribers"] == subs), None)
    if ours is None:
        sys.exit(f"bench/deflate.json run {run['run']}: the peers ran at {subs:,} subscribers, ratecast did not")
    return run, subs, ours, peers


def plot_peers(ours, peers):
    """ratecast beside the peers, all measured in one run with the same generator: the server's
    task CPU per frame (the irq share is machine-wide, so it does not tell them apart) and RSS
    per subscriber."""
    bars = [  # label, µs/frame, KiB/subscriber, colour
        ("ratecast", ours["server_task_us_per_frame"]["raw"], ours["rss_per_subscriber_kib"]["raw"], "#2f6db3"),
        ("ratecast deflate", ours["server_task_us_per_frame"]["deflate"], ours["rss_per_subscriber_kib"]["deflate"],
         "#9cc0e8"),
    ] + [(PEERS[name], peers[name]["server_task_us_per_frame"], peers[name]["rss_per_subscriber_kib"], colour)
         for name, colour in zip(PEERS, ("#7b5ea7", "#d68910", "#f0b878"))]
    fig, axes = plt.subplots(1, 2, figsize=(12.8, 3.9), sharey=True)
    for ax, k, title in ((axes[0], 1, "server task µs per frame"), (axes[1], 2, "KiB RSS per subscriber")):
        ys = range(len(bars))
        ax.barh(ys, [b[k] for b in bars], color=[b[3] for b in bars], edgecolor="white")
        ax.set_xscale("log")
        top = max(b[k] for b in bars)
        ax.set_xlim(1, top * 6)
        for y, b in zip(ys, bars):
            ax.text(b[k] * 1.1, y, f"{b[k]:.1f}", va="center", fontsize=17)
        ax.set_title(title + ", log scale")
        ax.set_yticks(list(ys), [b[0] for b in bars])
        ax.invert_yaxis() if k == 1 else None
        ax.set_xticks([], minor=False)
        ax.set_xticks([], minor=True)
        ax.spines["bottom"].set_visible(False)
    save(fig, "peers")


def plot_timeline():
    path, events_path = DATA / "rolling-restart-timeline.csv", DATA / "rolling-restart-events.csv"
    rows = list(csv.DictReader(path.open()))
    if len(rows) < 5:
        sys.exit(f"data/{path.name} has {len(rows)} samples: the rolling-restart drill did not sample")
    t0 = int(rows[0]["ms"])
    t = [(int(r["ms"]) - t0) / 1000 for r in rows]
    fig, ax = plt.subplots(figsize=(12.8, 4.2))
    for n, color in (("1", "#2f6db3"), ("2", "#3a9d5d"), ("3", "#d68910")):
        ax.plot(t, [float(r[f"conn_{n}"] or 0) for r in rows], label=f"ratecast-{n}", color=color,
                linewidth=2.5)
    top = max(float(r[f"conn_{n}"] or 0) for r in rows for n in "123") * 1.35
    ax.set_ylim(0, top)
    for e in csv.DictReader(events_path.open()):
        if e["event"].startswith("SIGTERM") or e["event"] == "feed frozen":
            x = (int(e["ms"]) - t0) / 1000
            ax.axvline(x, color="#888", linestyle=":")
            ax.text(x, top * 0.98, e["event"].replace("ratecast-", "r"), rotation=90,
                    va="top", ha="right", fontsize=15)
    ax.set_xlabel("seconds")
    ax.set_ylabel("WebSocket connections")
    ax.legend(loc="center left", frameon=False)
    save(fig, "rolling-restart-timeline")


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


# ---- the other sources ---------------------------------------------------------------------
def measured(name, command):
    """docs/measured/NAME.json, written by COMMAND."""
    path = MEASURED / f"{name}.json"
    if not path.exists():
        sys.exit(f"docs/measured/{name}.json is missing: `{command}` writes it")
    return json.loads(path.read_text())


def monthly_cost():
    """infra/README.md's cost table: each environment's total, checked against its line items,
    and prod's usage-driven egress with the client count it assumes."""
    rows = [r for r in table_rows((ROOT / "infra" / "README.md").read_text()) if len(r) == 5]
    head = next((i for i, r in enumerate(rows) if r[:4] == ["line item", "dev", "staging", "prod"]), None)
    if head is None:
        sys.exit("infra/README.md has no cost table (line item | dev | staging | prod)")
    number = lambda cell: float(re.sub(r"[^\d.]", "", cell.replace(" ", "")) or 0)
    items, totals, egress = [], None, None
    for r in rows[head + 1:]:
        if r[0].startswith("**total"):
            totals = [number(c) for c in r[1:4]]
        elif r[0].startswith("internet egress"):
            clients = re.search(r"([\d ,]+) clients", r[4])
            egress = (number(r[3]), f"{int(number(clients.group(1))):,}")
        elif totals is None:
            items.append([number(c) for c in r[1:4]])
    if totals is None or egress is None:
        sys.exit("infra/README.md's cost table has no total row or no egress row")
    for env, total, column in zip(("dev", "staging", "prod"), totals, zip(*items)):
        if round(sum(column)) != total:
            sys.exit(f"infra/README.md: the {env} line items add up to {sum(column):.2f}, the total says {total:.0f}")
    return dict(zip(("dev", "staging", "prod"), totals)), egress


def dashboard_panels():
    """The chart's Grafana dashboard: (panels, rows), rows' nested panels counted."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    panels = panels + [p for row in panels for p in row.get("panels", [])]
    rows = sum(p["type"] == "row" for p in panels)
    return len(panels) - rows, rows


def check_readme(coverage):
    """README.md and docs/container.md quote the image size and the line coverage: they must say
    what docs/measured/ says (they are written by hand; this makes a stale one fail the stage)."""
    readme = (ROOT / "README.md").read_text()
    container = (ROOT / "docs" / "container.md").read_text()
    # The image size changes with every binary and the docker stage re-measures it on every run:
    # the docs point at docs/measured/image.json instead of quoting a figure that would go stale.
    problems = [f"{name} does not point at docs/measured/image.json for the image size"
                for name, text in (("README.md", readme), ("docs/container.md", container))
                if "measured/image.json" not in text]
    m = re.search(r"Measured\s+(\S+) at commit (\w+),[^*]*\*\*([\d.]+) %\*\* of lines \(([\d,]+) of ([\d,]+)", readme)
    want = (coverage["date"], coverage["commit"], f"{coverage['percent']:.2f}",
            f"{coverage['covered']:,}", f"{coverage['coverable']:,}")
    if m is None or m.groups() != want:
        problems.append(f"README.md's line coverage says {m.groups() if m else 'nothing'}; docs/measured/coverage.json: {want}")
    if problems:
        sys.exit("README figures disagree with their source:\n  " + "\n  ".join(problems))


# ---- the deck --------------------------------------------------------------------------------
def load(name):
    path = DATA / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def not_run_here():
    """Drills demo/run.sh let go unrun on this machine (DEMO_MAY_SKIP), with the reason."""
    path = DATA / "drills-not-run.txt"
    if not path.exists():
        sys.exit("data/drills-not-run.txt is missing: run `bash .ci/test.sh e2e` first")
    return dict(line.split("\t", 1) for line in path.read_text().splitlines() if line)


def drill_result(name, not_run, describe):
    """describe(figures) for a drill that ran; "not run" only for one listed as not runnable."""
    figures = load(name)
    if figures is not None:
        return describe(figures)
    if name in not_run:
        return f"**not run here**: {not_run[name]}"
    sys.exit(f"data/{name}.json is missing and data/drills-not-run.txt does not list {name}: "
             "the drill failed or did not run (`bash .ci/test.sh e2e`)")


def run_tag(figures):
    r = figures["run"]
    build = f", {r['profile']} build" if r.get("profile") else ""
    return f"e2e run {r['commit']}{build}, {r['machine']}, load {r['load_average']:.1f}, {r['started_utc']}"


def main():
    style()
    IMG.mkdir(exist_ok=True)
    image = measured("image", "bash .ci/test.sh docker")
    coverage = measured("coverage", "RATECAST_COVERAGE=1 bash .ci/test.sh rust")
    check_readme(coverage)
    cost, egress = monthly_cost()
    panels, panel_rows = dashboard_panels()
    machine, nofile = bench_machine()
    targets = bench_targets()

    runs = bench_runs()
    rows = full_rows(runs)
    before_row = next(r for r in runs if r["commit"] == "3285130" and r["subs"] == 10000)
    before = {"commit": "3285130", "task": float(before_row["cells"][3])}
    before_idle = next(r for r in runs if r["commit"] == "3285130" and r["tick"] == "idle")
    peer_run, peer_subs, ours, peers = peer_figures()
    not_run = not_run_here()
    live, outage, slow, loadtest = load("live"), load("outage"), load("slow-clients"), load("loadtest")
    for name, figures in (("live", live), ("outage", outage), ("slow-clients", slow), ("loadtest", loadtest)):
        if figures is None:
            sys.exit(f"data/{name}.json is missing: run `bash .ci/test.sh e2e` first")

    cur = next(r for r in rows if r["commit"] == "81bf9a5" and r["subs"] == 10000)
    floor_sockets = 9000 if cur["subs"] >= 5000 else 1000
    plot_cpu(rows, before, floor_sockets)
    memory_kib = memory_target_kib(targets)
    idle_subs = plot_memory(runs, memory_kib)
    plot_latency(rows, loadtest)
    plot_peers(ours, peers)

    verdicts, scale, cluster_date = cluster_figures()
    small, large = verdicts[min(verdicts)], verdicts[max(verdicts)]
    idle = next(r for r in runs if r["commit"] == IDLE_COMMIT and r["tick"] == "idle")
    lt = loadtest["latency"]
    rolling = load("rolling-restart")
    if rolling is not None:
        plot_timeline()
    rr_clients = rolling["clients"] if rolling else None
    one_process, p99_target = target(targets, "50,000"), target(targets, "p99")
    cpu_target, memory_target = target(targets, "write floor"), target(targets, "idle subscriber")

    def redis_describe(r):
        ready = (f"haproxy and every replica ready in all {r['readiness_samples']} readiness samples"
                 if r["readiness_not_ready"] == 0 else
                 f"**not ready in {r['readiness_not_ready']} of {r['readiness_samples']} samples**")
        return (f"stale within {r['stale_after_s'] + 1} s, the reason given (*{r['reason'].split(';')[0]}*); "
                f"{ready} over the {r['outage_s']} s outage; a leader {r['leader_after_s']} s and fresh "
                f"data {r['fresh_after_s']} s after Redis came back")

    failover = load("failover")

    def failover_describe(f):
        lf = f["load"]
        return "\n".join([
            f"- **The open wall:** *{f['wall']['status']}*",
            f"- **Failed over** {f['failover_after_s']} s after CoinGecko answered {f['primary_error']}: "
            f"{f['units_via_coinbase']} of {f['units']} units via Coinbase, the "
            f"{f['units_flagged_stale']} it lacks flagged stale on their own",
            f"- **Never stale** in {f['stale_samples']} samples over 15 s (stale after 10 s without a fallback)",
            f"- **RatecastUpstreamFailover** firing after {f['alert_firing_after_s']} s; CoinGecko back: its own "
            f"again {f['failback_after_s']} s later, the alert resolved after {f['alert_resolved_after_recovery_s']} s",
            f"- **{lf['connected']} subscribers** throughout: {lf['missing_seqs']} missing seqs, "
            f"{lf['resyncs']} snapshots, {lf['checksum_mismatches']} checksum mismatches — each switch one delta",
        ])

    v = {
        "bench_machine": machine, "nofile": nofile, "floor_sockets": f"{floor_sockets:,}",
        "cur_total": f"{cur['total']:.1f}", "cur_floor": f"{cur['floor']:.1f}",
        "cur_task": f"{cur['task']:.1f}",
        "cur_ratio": f"{cur['total'] / cur['floor']:.2f}", "cur_p99": f"{cur['latency']['p99']:.0f}",
        "cur_p50": f"{cur['latency']['p50']:.0f}", "idle_kib": idle["cells"][-1],
        "idle_subs": " and ".join(f"{n:,}" for n in idle_subs), "cur_load": f"{cur['load']}",
        "peer_task": f"{before['task']:.1f}", "peer_idle_kib": before_idle["cells"][-1],
        "peer_run": peer_run["run"], "peer_commit": peer_run["commit"],
        "peer_subs": f"{peer_subs:,}", "peer_tick": ours["tick"],
        "peer_load": "–".join(f"{x:.1f}" for x in (
            min(ours["load_average"] + [x for p in peers.values() for x in p["load_average"]]),
            max(ours["load_average"] + [x for p in peers.values() for x in p["load_average"]]))),
        "peer_ours_us": f"{ours['server_task_us_per_frame']['raw']:.1f}",
        "peer_ours_kib": f"{ours['rss_per_subscriber_kib']['raw']:.1f}",
        "peer_tung_us": f"{peers['tokio-tungstenite']['server_task_us_per_frame']:.1f}",
        "peer_tung_kib": f"{peers['tokio-tungstenite']['rss_per_subscriber_kib']:.1f}",
        "peer_node_us": f"{peers['Node ws']['server_task_us_per_frame']:.1f}",
        "peer_node_kib": f"{peers['Node ws']['rss_per_subscriber_kib']:.1f}",
        "peer_node_z_us": f"{peers['Node ws perMessageDeflate']['server_task_us_per_frame']:.0f}",
        "peer_node_z_kib": f"{peers['Node ws perMessageDeflate']['rss_per_subscriber_kib']:.0f}",
        "peer_ours_raw_b": f"{ours['wire_bytes_per_frame']['raw']:,.0f}",
        "peer_ours_z_b": f"{ours['wire_bytes_per_frame']['deflate']:,.0f}",
        "peer_ours_z_pct": f"{100 * ours['wire_bytes_per_frame']['deflate'] / ours['wire_bytes_per_frame']['raw']:.0f}",
        "peer_node_z_b": f"{peers['Node ws perMessageDeflate']['wire_bytes_per_frame']:,.0f}",
        "peer_node_z_pct": f"{100 * peers['Node ws perMessageDeflate']['wire_bytes_per_frame'] / peers['Node ws']['wire_bytes_per_frame']:.0f}",
        "v_one_process": one_process[0], "v_p99": p99_target[0], "v_cpu": cpu_target[0],
        "v_memory": memory_target[0], "memory_target_kib": f"{memory_kib:g}", "idle_commit": IDLE_COMMIT,
        "image_mb": f"{image['bytes'] / 1e6:.1f}", "image_date": image["date"], "image_commit": image["commit"],
        "coverage": f"{coverage['percent']:.2f}", "coverage_date": coverage["date"],
        "panels": f"{panels} panels, {panel_rows} row{'' if panel_rows == 1 else 's'}",
        "cost_dev": f"{cost['dev']:,.0f}", "cost_staging": f"{cost['staging']:,.0f}",
        "cost_prod": f"{cost['prod']:,.0f}", "cost_egress": f"{egress[0]:,.0f}",
        "egress_clients": egress[1],
        "e2e_run": run_tag(loadtest),
        "wall_stale": f"{outage['wall']['status']} · {outage['wall']['age']}",
        "live_deltas": live["deltas"], "live_units": live["units"],
        "out_stale": outage["stale_after_s"], "out_fire": outage["alert_firing_after_s"],
        "out_age": f"{float(outage['data_age_at_firing_s']):.0f}",
        "out_fresh": outage["fresh_after_recovery_s"], "out_resolved": outage["alert_resolved_after_recovery_s"],
        "slow_closes": slow["slow_consumer_closes"],
        # Drill 6 passes only when the slow client itself read its 1008 close.
        "slow_end": f"close {slow['slow']['close_code']}",
        "slow_others": slow["others"]["connected"], "slow_missing": slow["others"]["missing_seqs"],
        "flood_result": f"closed with {slow['flood']['close_code']} after {slow['flood']['seconds']} s",
        "lt_clients": f"{loadtest['connected']:,}", "lt_fps": f"{loadtest['steady_frames_per_sec']:.0f}",
        "lt_p50": f"{lt['p50_ms']:.1f}", "lt_p99": f"{lt['p99_ms']:.1f}", "lt_max": f"{lt['max_ms']:.1f}",
        "lt_missing": loadtest["missing_seqs"],
        "leader_result": drill_result("leader-kill", not_run, lambda f: (
            f"lease taken over in {f['takeover_ms'] / 1000:.1f} s; the {f['held_by_killed']} subscribers "
            f"of the killed replica: {f['reconnects']} reconnects, {f['missed_on_reconnect']} deltas "
            f"missed, {f['missing_seqs']} missing seqs")),
        "rr_clients": f"{rr_clients:,}" if rr_clients else "the",
        "rolling_result": drill_result("rolling-restart", not_run, lambda f: (
            f"{f['connected']:,} subscribers, {f['reconnects']:,} reconnects, "
            f"{f['missed_on_reconnect']} missed, {f['reconnect_snapshots']} snapshots, "
            f"{f['missing_seqs']} missing seqs, "
            f"{'all ended on one seq' if f['final_seq_min'] == f['final_seq_max'] else 'final seqs differ'}; "
            f"delivery p99 {f['latency']['p99_ms']:.0f} ms across the restarts")),
        "redis_result": drill_result("redis-outage", not_run, redis_describe),
        "failover_result": drill_result("failover", not_run, failover_describe),
        "failover_wall": "![](data/wall-failover.png)" if failover else "",
        "failover_run": run_tag(failover) if failover else run_tag(loadtest),
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
        "timeline": ("![w:1100](img/rolling-restart-timeline.png)" if rolling else
                     f"*No timeline: {not_run.get('rolling-restart', 'the drill did not run')}.*"),
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
