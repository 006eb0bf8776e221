"""The fleet case: one pgvigil watching many targets at its default collectors.

Clusters of their own (`max_connections` raised, `pg_stat_statements.max` = `pgss_max`), 100
target databases on each (`PER_CLUSTER`, on why), hold one template database
(pg_stat_statements, `tables` small tables) and copies of it; each copy is a `[[targets]]` entry
of one daemon. For each fleet size in turn (`run_size`):
1. start pgvigil, wait until every target has polled twice;
2. a window of `window_intervals` poll intervals: `/api/v1/targets` every `sample_every`
   seconds (each target's staleness, now - last_success, against 1.5 x its interval) and one
   `/metrics` scrape as Prometheus does it per interval, each with the CPU around it;
3. memory, and the CPU of the window less that of the requests, over the target polls in it;
4. the daemon's connect timeouts and connect-line figures (`connect_figures`), also for a size
   that failed, whose error is what `run_size` raises.

pg_stat_statements is one view per server, so on one cluster every target reads every
database's entries: `pgss_max` bounds what one target's statements collector reads, like a
small server of its own would.
"""

import datetime
import os
import re
import statistics
import time

from .cluster import Cluster, wait_until
from .phases import quantile
from .subjects import CpuSample, Pgvigil, proc_mem, threads_cpu


# Targets per cluster. On one cluster every target's cluster-scope collectors read every
# database's row of pg_stat_database and every session of pg_stat_activity, so the server's work
# per interval grows with the square of the fleet: at 500 targets on one 2-core cluster
# (1,000 pgvigil sessions) its queries went unanswered for 11 s. A real fleet's targets are
# servers of their own; 100 per cluster keeps each target's view of its server that of a
# small one (100 databases, ~200 sessions), and the 1- and 100-target sizes on one cluster.
PER_CLUSTER = 100


def setup_clusters(bindir, ports, max_targets, tables, pgss_max, per_cluster=PER_CLUSTER):
    """The fleet's clusters, `per_cluster` target databases on each: `(clusters, names)`,
    `names[i]` being `(cluster, database)` of target i + 1. `ports()` gives a free port."""
    clusters, names = [], []
    for first in range(1, max_targets + 1, per_cluster):
        count = min(per_cluster, max_targets - first + 1)
        cluster = Cluster(bindir, ports(), {
            # Each target holds its main session and, by default, one per-database session
            # ([targets] max_connections = 2).
            "max_connections": str(2 * count + 60),
            "pg_stat_statements.max": str(pgss_max),
            "shared_buffers": "'128MB'",
        }, f"fleet{len(clusters)}")
        clusters.append(cluster)
        cluster.start()
        cluster.create_roles(["bench_fleet"])
        cluster.create_database("fleet_tpl")
        if tables:
            cluster.fill_tables("fleet_tpl", tables)
        dbs = [f"fleet_{i:04d}" for i in range(first, first + count)]
        for start in range(0, len(dbs), 50):
            cluster.psql("postgres", "".join(
                f"CREATE DATABASE {n} TEMPLATE fleet_tpl STRATEGY FILE_COPY;\n"
                for n in dbs[start:start + 50]))
        names += [(cluster, n) for n in dbs]
    return clusters, names


def parse_rfc3339(value):
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_size(names, n, binary, port, workdir, interval, window_intervals, sample_every=2.0):
    targets = [(f"f{i:04d}", db, cluster) for i, (cluster, db) in enumerate(names[:n], 1)]
    cluster, db = names[0]
    daemon = Pgvigil(f"fleet-{n}", binary, port, "bench_fleet", cluster, db, workdir,
                     interval, targets=targets)
    daemon.start()
    try:
        wait_until(f"pgvigil on {n} targets to answer", daemon.ready, 60)

        # Probed as Prometheus scrapes (gzip from the cached pieces): at 500 targets a plain
        # body is ~150 MB of text, and making one every few seconds would be the load measured.
        def polled_twice():
            polls = daemon.polls(daemon.scrape(prometheus=True).body)
            return len(polls) == n and min(polls.values()) >= 2

        wait_until(f"every one of {n} targets to be polled twice", polled_twice,
                   interval * 4 + 120, every=interval / 3)
        first = daemon.scrape(prometheus=False)
        polls0 = sum(daemon.polls(first.body).values())
        cpu0 = CpuSample(daemon.pid)
        t0 = time.monotonic()
        end = t0 + interval * window_intervals
        request_cpu, scrapes, staleness, api_walls = 0.0, [], {}, []
        next_scrape = t0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_scrape:
                sc = daemon.scrape(prometheus=True)
                request_cpu += sc.cpu
                scrapes.append({"wall": sc.wall, "cpu": sc.cpu, "wire": sc.wire_bytes,
                                "series": sc.series()})
                next_scrape += interval
            c0, w0 = threads_cpu(daemon.pid), time.perf_counter()
            api = daemon.targets_api()
            api_walls.append(time.perf_counter() - w0)
            request_cpu += threads_cpu(daemon.pid) - c0
            wall_now = time.time()
            for t in api_targets(api):
                last = t.get("last_success")
                age = wall_now - parse_rfc3339(last) if last else float("inf")
                staleness[t["name"]] = max(staleness.get(t["name"], 0.0), age)
            time.sleep(sample_every)
        window = time.monotonic() - t0
        cpu_window = cpu0.until(CpuSample(daemon.pid))
        rss, hwm = proc_mem(daemon.pid)
        last = daemon.scrape(prometheus=False).body
        polls1 = sum(daemon.polls(last).values())
        line = connect_line(last)
    finally:
        daemon.stop()
    polls = polls1 - polls0
    # A target never seen with a last success counts as late, with no staleness (JSON has no inf).
    ages = [staleness.get(name, float("inf")) for name, _, _ in targets]
    limit = 1.5 * interval
    finite = [a for a in ages if a != float("inf")]
    return {
        "targets": n,
        "interval": interval,
        "window_seconds": window,
        "rss": rss,
        "hwm": hwm,
        "polls": polls,
        "cpu_window": cpu_window,
        "request_cpu": request_cpu,
        "cpu_per_target_poll": (cpu_window - request_cpu) / polls if polls else None,
        "core_share": cpu_window / window,
        "metrics_wall_median": statistics.median(s["wall"] for s in scrapes),
        "metrics_wall_p90": quantile([s["wall"] for s in scrapes], 0.9),
        "metrics_cpu_median": statistics.median(s["cpu"] for s in scrapes),
        "metrics_series": scrapes[-1]["series"],
        "metrics_wire_bytes": scrapes[-1]["wire"],
        "api_wall_median": statistics.median(api_walls),
        "max_staleness": max(finite) if len(finite) == len(ages) else None,
        "late_targets": sum(1 for a in ages if a > limit),
        "polled_within_limit": all(a <= limit for a in ages),
        "connect_timeouts": connect_timeouts(workdir, n),
        **line,
    }


def log_path(workdir, n):
    """The log of the daemon of size `n` (its stderr, see subjects.Subject)."""
    return os.path.join(workdir, f"fleet-{n}.log")


def connect_timeouts(workdir, n):
    """How many connection attempts of size `n`'s daemon gave up at connect_timeout, as its
    log says (a down source is logged at warn once a minute, then at debug: a floor)."""
    try:
        with open(log_path(workdir, n), errors="replace") as f:
            return sum(1 for line in f if "no session within connect_timeout" in line)
    except OSError:
        return None


def connect_line(body):
    """Failed connection attempts and the connect line's figures from a `/metrics` body."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    def total(name, where=""):
        pattern = re.compile(rf"^{name}(\{{[^}}]*{where}[^}}]*\}})? (\S+)$", re.M)
        return sum(float(m.group(2)) for m in pattern.finditer(body))
    count = total("pgvigil_connect_permit_wait_seconds_count")
    return {
        "connect_failures": int(total("pgvigil_connection_attempts_total", 'result="failure"')),
        "connect_permit_waits": int(count),
        "connect_permit_wait_mean": total("pgvigil_connect_permit_wait_seconds_sum") / count if count else None,
    }


def failed_size(n, workdir, error):
    """What a size that did not finish records: why, and the connect timeouts in its log."""
    return {"targets": n, "error": f"{type(error).__name__}: {error}",
            "connect_timeouts": connect_timeouts(workdir, n)}


def api_targets(api):
    """The target entries of /api/v1/targets, whether it answers a list or {"targets": [...]}."""
    if isinstance(api, dict):
        api = api.get("targets", [])
    return [t for t in api if isinstance(t, dict) and "name" in t]
