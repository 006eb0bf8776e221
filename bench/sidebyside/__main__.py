"""pgvigil beside postgres_exporter on the same data, then the fleet case (see bench/README.md).

Run through bench/side-by-side.sh, which builds pgvigil and passes `--pgvigil`. Steps:
1. A scratch cluster: the generated statements and tables in database `bench`, a second
   database `bench10k` with the large table count, background pgbench on `bench`.
2. For each database: postgres_exporter, pgvigil default and pgvigil full run at once against
   it and are scraped interleaved (phases.py); then the bare catalog queries in psql.
3. The fleet cluster and one daemon per fleet size (fleet.py); on the same cluster, one
   target watching 50 databases on 2 connections, and its data-loss alert latency (wide.py).
4. results.json and report.md in --out; with --benchmarks, the generated section of that file.
Everything started is stopped and removed on the way out, also on SIGINT/SIGTERM.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time

from . import chart, fleet, phases, report, wide
from .cluster import Cluster, Load, find_bindir
from .subjects import Exporter, Pgvigil, adapted_queries, exporter_version

FULL = dict(statements=8000, tables=2000, big_tables=10000, rounds=15, round_seconds=10,
            pgbench_rate=40, lower_bound_reps=7, fleet_sizes=[1, 100, 250, 500],
            fleet_interval=15, fleet_window_intervals=4, fleet_tables=10, fleet_pgss_max=1000,
            wide_databases=50, wide_tables=200, wide_imports=5, wide_writers=wide.WRITERS,
            warm_timeout=600)
SMOKE = dict(statements=60, tables=20, big_tables=40, rounds=2, round_seconds=1,
             pgbench_rate=20, lower_bound_reps=2, fleet_sizes=[1, 3], fleet_interval=1,
             fleet_window_intervals=3, fleet_tables=2, fleet_pgss_max=200, wide_databases=3,
             wide_tables=5, wide_imports=1, wide_writers=wide.WRITERS[:1], warm_timeout=60)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


def environment(binary, repo):
    def first(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"

    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    # The last commit that changed the daemon's code (the branch may add only bench/ on top).
    commit = first(["git", "log", "-1", "--format=%h", "--abbrev=12", "--",
                    "src", "crates", "Cargo.toml", "Cargo.lock"])
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True, cwd=repo).stdout.strip()
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": f"{mem_kb / 1024 / 1024:.0f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "pgvigil_version": first([binary, "--version"]),
        "pgvigil_commit": commit + ("-dirty" if dirty else ""),
        "exporter_version": exporter_version(),
    }


def start_all(subjects):
    for s in subjects:
        s.start()


def stop_all(subjects):
    for s in subjects:
        s.stop()


def run(args, sizes, cleanup):
    started = time.monotonic()
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    os.makedirs(args.out, exist_ok=True)
    env = environment(args.pgvigil, repo)
    bindir = find_bindir()
    results = {"command": args.command_line, "sizes": dict(sizes), "environment": env, "phases": []}

    if args.fleet_only:
        return run_fleet(args, sizes, cleanup, results, env, started)
    log("main cluster: initdb and data")
    main = Cluster(bindir, free_port(), {
        "pg_stat_statements.max": str(max(5000, sizes["statements"] + 5000)),
        "shared_buffers": "'256MB'" if not args.smoke else "'32MB'",
        "max_locks_per_transaction": "256",
    }, "main")
    cleanup.append(main.stop)
    main.start()
    env["postgres_version"] = main.version().split(" on ")[0]
    main.create_roles(["bench_exporter", "bench_pgvigil_default", "bench_pgvigil_full"])
    main.create_database("bench")
    main.fill_statements("bench", sizes["statements"])
    main.fill_tables("bench", sizes["tables"])
    main.create_database("bench10k")
    main.fill_tables("bench10k", sizes["big_tables"])
    load = Load(main, "bench", sizes["pgbench_rate"], sizes["statements"], args.out,
                sweep_every=sizes["round_seconds"])
    cleanup.append(load.stop)
    version_num = int(main.psql("postgres", "SHOW server_version_num").strip())
    queries, env["queries_adapted"] = adapted_queries(args.out, version_num)

    for db in ("bench", "bench10k"):
        subjects = [
            Exporter("exporter", free_port(), "bench_exporter", main, db, args.out, queries),
            Pgvigil(report.DEFAULT, args.pgvigil, free_port(), "bench_pgvigil_default", main, db,
                    args.out, sizes["round_seconds"]),
            Pgvigil(report.FULL, args.pgvigil, free_port(), "bench_pgvigil_full", main, db,
                    args.out, sizes["round_seconds"], top_k=10000, max_tables=10000),
        ]
        cleanup.append(lambda s=subjects: stop_all(s))
        start_all(subjects)
        log(f"{db}: {main.table_count(db):,} tables; measuring {sizes['rounds']} rounds")
        phase = phases.run_phase(db, subjects, main, db, sizes["rounds"], sizes["round_seconds"],
                                 warm_timeout=sizes["warm_timeout"])
        stop_all(subjects)
        phase["tables"] = main.table_count(db)
        log(f"{db}: bare catalog queries")
        phase["lower_bound"] = phases.lower_bound(main, db, sizes["lower_bound_reps"])
        results["phases"].append(phase)
    results["sizes"]["statements_in_view"] = main.statement_count("bench")
    results["sizes"]["evictions"] = int(main.psql("bench", "SELECT dealloc FROM pg_stat_statements_info").strip())
    load.stop()
    results["sizes"]["sweeps"] = load.sweeps
    main.stop()

    return run_fleet(args, sizes, cleanup, results, env, started)


def run_fleet(args, sizes, cleanup, results, env, started):
    """Step 3 (the fleet cluster and one daemon per size) and step 4, the results."""
    if sizes["fleet_sizes"]:
        log(f"fleet clusters: {max(sizes['fleet_sizes'])} databases, "
            f"{fleet.PER_CLUSTER} per cluster")
        clusters, names = fleet.setup_clusters(find_bindir(), free_port,
                                               max(sizes["fleet_sizes"]), sizes["fleet_tables"],
                                               sizes["fleet_pgss_max"])
        cleanup.extend(c.stop for c in clusters)
        fc = clusters[0]
        results["fleet"], results["fleet_failed"] = [], []
        for n in sizes["fleet_sizes"]:
            log(f"fleet: {n} targets")
            try:
                results["fleet"].append(fleet.run_size(
                    names, n, args.pgvigil, free_port(), args.out, sizes["fleet_interval"],
                    sizes["fleet_window_intervals"]))
            except Exception as e:  # the next size may still work; a signal is not caught
                log(f"fleet: {n} targets failed: {e}")
                results["fleet_failed"].append(fleet.failed_size(n, args.out, e))
            # Saved after every size, so a later size that fails or hangs keeps this one.
            save_results(args.out, results, partial=True)
        if sizes["wide_databases"]:
            log(f"every database: {sizes['wide_databases']} databases of {sizes['wide_tables']} tables")
            wide_names = wide.setup(fc, sizes["wide_databases"], sizes["wide_tables"])
            results["wide"] = wide.run(fc, wide_names, args.pgvigil, free_port(), args.out,
                                       sizes["fleet_interval"], sizes["wide_imports"],
                                       sizes["wide_writers"])
        for c in clusters:
            c.stop()

    env["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["duration_seconds"] = time.monotonic() - started
    if args.chart and not args.fleet_only:
        results["chart"] = chart.draw(results, args.chart)
    save_results(args.out, results, partial=False)
    text = report.render_fleet(results) if args.fleet_only else report.render(results)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text)
    if args.benchmarks and not args.fleet_only:
        report.write_section(args.benchmarks, text)
    log(f"done in {results['duration_seconds']:.0f}s: {os.path.join(args.out, 'report.md')}")


def save_results(out, results, partial):
    """Write results.json whole (a temporary file renamed over it); `partial` until the run ends."""
    results["partial"] = partial
    path = os.path.join(out, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser(prog="bench/side-by-side.sh", description=__doc__.splitlines()[0])
    p.add_argument("--pgvigil", required=True, help="the pgvigil binary to measure")
    p.add_argument("--out", required=True, help="directory for results.json, report.md, logs")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks the script works")
    p.add_argument("--benchmarks", help="write the generated section into this BENCHMARKS.md")
    p.add_argument("--chart", help="draw a PNG chart here (needs matplotlib; skipped without it)")
    p.add_argument("--no-fleet", action="store_true", help="skip the fleet case")
    p.add_argument("--fleet-only", action="store_true",
                   help="only the fleet case (results.json and report.md in --out)")
    p.add_argument("--no-wide", action="store_true",
                   help="skip the every-database case (50 databases x 200 tables on 2 connections)")
    p.add_argument("--fleet-sizes", help="comma-separated fleet sizes, e.g. 1,100,500")
    p.add_argument("--command-line", default="bench/side-by-side.sh", help=argparse.SUPPRESS)
    args = p.parse_args()
    sizes = dict(SMOKE if args.smoke else FULL)
    if args.fleet_sizes:
        sizes["fleet_sizes"] = [int(x) for x in args.fleet_sizes.split(",")]
    if args.no_fleet:
        sizes["fleet_sizes"] = []
    if args.no_wide or not sizes["fleet_sizes"]:
        sizes["wide_databases"] = 0

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    cleanup = []
    try:
        run(args, sizes, cleanup)
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception as e:  # cleanup goes on whatever one step says
                print(f"cleanup: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
