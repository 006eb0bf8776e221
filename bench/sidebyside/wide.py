"""The every-database case: one target watching 50 databases of 200 tables on 2 connections.

On the fleet cluster (fleet.py), `dbs` databases `wide_NN` copied from a template of `tables`
small tables; the first also holds an `import_audit` table (deploy/sql/import_audit.sql) and
the `contacts` table its imports fill. One pgvigil, one target whose `[targets.databases]`
includes `wide_*`, at defaults (`max_connections = 2`: the main session and one database
session). `run`:
1. start it; time until every database's tables are published (`pgvigil_tables_exported` has
   a `datname` series for each): the first round of visits;
2. pgvigil's sessions on the server (`pg_stat_activity` of its role), sampled all along: never
   more than the budget;
3. the data-loss alert's latency: short imports (700 of 1,000 rows) by two writers, from the
   moment the audit row says committed (psql returned) until `/api/v1/alerts` shows
   `ImportRowShortfall` firing for that import (polled every 50 ms): plain SQL with `xact_id`
   and `NOTIFY pgvigil_import` (what pgvigil-timing's `ImportAudit` does), and plain SQL
   with neither (pgvigil waits out `grace_period`, 10 s);
4. memory and the daemon's CPU over the run.
"""

import json
import os
import re
import threading
import time
import uuid

from .cluster import wait_until
from .phases import quantile
from .subjects import CpuSample, Pgvigil, http_get, proc_mem, sample_values

AUDIT_SQL = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "sql", "import_audit.sql")


def setup(cluster, dbs, tables):
    cluster.create_roles(["bench_wide"])
    cluster.create_database("wide_tpl", extension=False)
    cluster.fill_tables("wide_tpl", tables)
    names = [f"wide_{i:02d}" for i in range(1, dbs + 1)]
    cluster.psql("postgres", "".join(
        f"CREATE DATABASE {n} TEMPLATE wide_tpl STRATEGY FILE_COPY;\n" for n in names))
    with open(AUDIT_SQL) as f:
        cluster.psql(names[0], f.read())
    cluster.psql(names[0], "CREATE TABLE contacts (id bigserial PRIMARY KEY, email text, import_id uuid);\n"
                 "CREATE INDEX ON contacts (import_id);\n"
                 "GRANT SELECT ON import_audit, contacts TO bench_wide;")
    return names


def short_import(cluster, db, notify):
    """A committed import of 700 of 1,000 rows; returns its id once the audit row says committed."""
    import_id = str(uuid.uuid4())
    xact = "(SELECT xid FROM pgvigil_bench_xid)" if notify else "NULL"
    cluster.psql(db, f"""
INSERT INTO import_audit (import_id, target_table, source_name, expected_rows, status, started_at)
     VALUES ('{import_id}', 'contacts', 'bench.csv', 1000, 'running', now());
BEGIN;
INSERT INTO contacts (email, import_id) SELECT 'x', '{import_id}' FROM generate_series(1, 700);
CREATE TEMP TABLE pgvigil_bench_xid AS SELECT pg_current_xact_id() AS xid;
COMMIT;
UPDATE import_audit SET status = 'committed', finished_at = now(), reported_rows = 1000,
       xact_id = {xact} WHERE import_id = '{import_id}';
""" + (f"NOTIFY pgvigil_import, '{import_id}';\n" if notify else ""))
    return import_id


def firing(daemon, import_id):
    status, _, data = http_get(daemon.port, "/api/v1/alerts", timeout=30)
    if status != 200:
        return False
    active = json.loads(data).get("active") or []
    return any(a.get("state") == "firing" and a.get("labels", {}).get("alertname") == "ImportRowShortfall"
               and a.get("labels", {}).get("import_id") == import_id for a in active)


def published_databases(daemon):
    """The datnames with a pgvigil_tables_exported series (the template database too)."""
    body = daemon.scrape(prometheus=False).body
    found = set()
    for labels in sample_values(body, "pgvigil_tables_exported"):
        m = re.search(r'datname="([^"]*)"', labels)
        if m:
            found.add(m.group(1))
    return found


WRITERS = (("xact_id and NOTIFY", True), ("no xact_id, no NOTIFY", False))


def run(cluster, names, binary, port, workdir, interval, imports_per_writer, writers=WRITERS):
    daemon = Pgvigil("wide", binary, port, "bench_wide", cluster, names[0], workdir, interval,
                     extra='[targets.databases]\ninclude = ["wide_*"]\n')
    sessions, stop = [], threading.Event()

    def sample_sessions():
        while not stop.is_set():
            try:
                sessions.append(int(cluster.psql(
                    "postgres", "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bench_wide'").strip()))
            except RuntimeError:
                pass
            stop.wait(0.5)

    sampler = threading.Thread(target=sample_sessions, daemon=True)
    daemon.start()
    started = time.monotonic()
    sampler.start()
    try:
        cpu0 = CpuSample(daemon.pid)
        wait_until("pgvigil to answer", daemon.ready, 60)
        wait_until(f"the tables of all {len(names)} databases to be published",
                   lambda: set(names) <= published_databases(daemon), 600, every=0.5)
        first_round = time.monotonic() - started
        latencies = {writer: [] for writer, _ in writers}
        for _ in range(imports_per_writer):
            for writer, notify in writers:
                import_id = short_import(cluster, names[0], notify)
                t0 = time.monotonic()
                wait_until(f"ImportRowShortfall for {import_id}", lambda: firing(daemon, import_id),
                           120, every=0.05)
                latencies[writer].append(time.monotonic() - t0)
        window = time.monotonic() - started
        cpu = cpu0.until(CpuSample(daemon.pid))
        rss, hwm = proc_mem(daemon.pid)
    finally:
        stop.set()
        sampler.join(5)
        daemon.stop()
    return {
        "databases": len(names),
        "first_round_seconds": first_round,
        "max_sessions": max(sessions) if sessions else None,
        "session_samples": len(sessions),
        "rss": rss,
        "hwm": hwm,
        "cpu_seconds": cpu,
        "window_seconds": window,
        "alert_latency": {w: {"median": quantile(v, 0.5), "max": max(v), "runs": len(v)}
                          for w, v in latencies.items()},
    }
