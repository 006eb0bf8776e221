"""Where a fleet target's poll CPU goes: callgrind over a few poll intervals of a small fleet.

Instruction counts (Ir), so repeatable on a shared machine whatever its load; to a few percent
only, since what moved in the view between two polls (entries evicted from the full view, texts
fetched for new ones) differs from run to run; the per-row costs do not. Steps:
1. The fleet cluster of fleet.py (`setup_clusters`: `pg_stat_statements.max` = 1000, 10 small
   tables per database), and `--fill` distinct statements in the template database so the
   view holds its 1,000 entries as it does at 100 fleet targets (each target reads them all).
2. One pgvigil at default collectors watching `--targets` databases, under callgrind; once
   every target has polled twice the counters are zeroed, `--intervals` poll intervals pass
   with no request to the daemon, and the counters are dumped.
3. Everything the process did in the window (polls, timers, alert evaluation, database
   visits) is divided by the target poll intervals in it (targets x window / interval): Ir
   per target and interval, a third of which is per target poll as fleet.py counts polls
   (`locks`, every 5 s, is the most frequent collector). Summarised like profile.py (top
   functions, allocator calls), plus the statements collector per run.

    cd bench && python3 -m sidebyside.fleet_profile --pgvigil BIN --out DIR [--targets 5]
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

from .__main__ import free_port, log
from .cluster import find_bindir, wait_until
from .fleet import setup_clusters
from .profile import dump, fmt_table, parse_callgrind, short_name, summarise
from .subjects import Pgvigil, sample_values

STATEMENTS_POLL = "<pgvigil::collect::statements::Statements as pgvigil::collect::ReportCollector>::poll"


def profile_fleet(args, cluster, names):
    targets = [(f"f{i:04d}", db, c) for i, (c, db) in enumerate(names[:args.targets], 1)]
    d = Pgvigil("fleet-profile", args.pgvigil, free_port(), "bench_fleet", cluster, names[0][1],
                args.out, args.interval, targets=targets,
                extra='connect_timeout = "60s"\nstatement_timeout = "60s"\n')
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={args.out}/callgrind.%p.boot",
            "--dump-instr=no", "--collect-jumps=no"]
    d._spawn(argv + [args.pgvigil, "run", "--config", d.config])
    try:
        wait_until("pgvigil to answer under valgrind", lambda: d.alive() and d.answers_api(), 300,
                   every=1.0)

        def polls():
            return d.polls(d.scrape(prometheus=False).body)

        def runs():
            return collector_runs(d.scrape(prometheus=False).body)

        wait_until("every target polled twice",
                   lambda: len(p := polls()) == args.targets and min(p.values()) >= 2, 600,
                   every=args.interval / 3)
        before, runs0 = sum(polls().values()), runs()
        subprocess.run(["callgrind_control", "-z", str(d.pid)], check=True, capture_output=True)
        zeroed = time.monotonic()
        time.sleep(args.interval * args.intervals)
        window = time.monotonic() - zeroed
        path = os.path.join(args.out, "fleet.callgrind")
        dump(d.pid, path)
        after, runs1 = sum(polls().values()), runs()
    finally:
        d.stop()
    return path, window, after - before, {c: n - runs0.get(c, 0) for c, n in runs1.items()}


def collector_runs(body):
    """Runs of each collector so far, summed over the targets."""
    out = {}
    for labels, value in sample_values(body, "pgvigil_poll_duration_seconds_count").items():
        m = re.search(r'collector="([^"]*)"', labels)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + int(value)
    return out


def render(summary, args, window, runs, statements_runs):
    # fleet.py counts 3 polls per interval (the most frequent collector, locks, every 5 s).
    per = summary["total_ir"] / summary["per"]
    stmt = sum(ir for ir, _, f in summary["inclusive"] if f.startswith(STATEMENTS_POLL))
    allocs = ", ".join(f"{k} {v:,.0f}" for k, v in summary["allocs"].items())
    callers = ["| allocations per target and interval | caller |", "|---:|---|"] + [
        f"| {c:,.0f} | `{short_name(f)}` |" for c, f in summary["alloc_callers"]]
    return "\n".join([
        f"{args.targets} targets, poll interval {args.interval} s, {args.intervals} intervals, "
        f"{window:.1f} s window: {per / 1e6:,.2f} M Ir per target and poll interval, "
        f"{per / 3e6:,.2f} M per target poll as fleet.py counts them (3 per interval: `locks` "
        f"runs every 5 s); the statements collector {stmt / max(statements_runs, 1) / 1e6:,.2f} M "
        f"per run ({statements_runs} runs completed in the window).", "",
        "Collector runs around the window (scrapes before zeroing, after dumping): "
        + ", ".join(f"{c} {n}" for c, n in sorted(runs.items()) if n) + ".", "",
        f"Allocator calls per target and interval: {allocs}.", "",
        "Self cost:", "", fmt_table(summary, "self", 30), "",
        "Inclusive cost:", "", fmt_table(summary, "inclusive", 60), "",
        "\n".join(callers), ""])


def main():
    p = argparse.ArgumentParser(prog="python3 -m sidebyside.fleet_profile")
    p.add_argument("--pgvigil", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--targets", type=int, default=5)
    p.add_argument("--fill", type=int, default=1000,
                   help="distinct statements run in the template database (fills the view)")
    p.add_argument("--interval", type=int, default=15)
    p.add_argument("--intervals", type=int, default=3)
    args = p.parse_args()
    # Stopped by SIGTERM: still stop the daemon and the cluster (the `finally`s below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    os.makedirs(args.out, exist_ok=True)
    # Up to 100 targets are one cluster (fleet.PER_CLUSTER); the fill and the profile use it.
    clusters, names = setup_clusters(find_bindir(), free_port, args.targets, 10, 1000)
    cluster = clusters[0]
    try:
        if args.fill:
            cluster.fill_statements("fleet_tpl", args.fill)
        log(f"{cluster.statement_count('fleet_tpl')} statements in the view")
        path, window, _, runs = profile_fleet(args, cluster, names)
    finally:
        for c in clusters:
            c.stop()
    # Target poll intervals in the window (zeroed to dumped, wall clock): the unit.
    summary = summarise(path, args.targets * window / args.interval, n=200)
    calls = parse_callgrind(path)[2]
    statements_runs = calls.get(f"core::ptr::drop_in_place<{STATEMENTS_POLL}::{{{{closure}}}}>", 0)
    text = render(summary, args, window, runs, statements_runs)
    with open(os.path.join(args.out, "fleet-profile.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "fleet-profile.json"), "w") as f:
        json.dump({"targets": args.targets, "interval": args.interval, "window": window, "runs": runs, "total_ir": summary["total_ir"],
                   "statements_runs": statements_runs}, f)
    log(f"done: {os.path.join(args.out, 'fleet-profile.md')}")


if __name__ == "__main__":
    main()
