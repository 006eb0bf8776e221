"""One measured phase: several subjects against one database, scraped interleaved.

Step by step (`run_phase`):
1. Warm-up: wait until every pgvigil has polled `warm_polls` times (its first polls fetch
   query texts and have no deltas yet) and the exporter answers.
2. Baseline: per subject one unmeasured classic scrape (for pgvigil's poll counts), then its
   process CPU; the CPU of its database backends; a pg_stat_statements snapshot of the
   subjects' own queries (each subject connects as a role of its own).
3. `rounds` rounds of `round_seconds`: in each, every subject, in an order rotated by one per
   round, gets one scrape as Prometheus does it (OpenMetrics, gzip) and one classic scrape;
   each is timed and the process CPU around it recorded. The backend pids are re-read every
   round so sessions opened late are counted from their start.
4. End: process CPU, memory, backend CPU, a final scrape for the poll counts, and the
   pg_stat_statements snapshot again.

What follows from it (`summarise`): pgvigil's CPU per poll is the window's process CPU minus the
CPU measured around its scrapes, over the polls in the window; the exporter does all its work in
the scrape, so its CPU per cycle is the window's CPU over its scrapes. The database side per
cycle is the backends' CPU over polls (pgvigil) or scrapes (exporter).
"""

import gzip
import statistics
import time
import zlib

from .subjects import CpuSample, Pgvigil, count_series, proc_mem, proc_rss_parts

SEP = "\x1f"


def quantile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def backend_pids(cluster, db, roles):
    out = cluster.psql(db, "SELECT usename || '" + SEP + "' || pid FROM pg_stat_activity "
                       "WHERE usename IN (" + ",".join(f"'{r}'" for r in roles) + ")")
    pids = {}
    for line in out.splitlines():
        if SEP in line:
            role, pid = line.split(SEP)
            pids.setdefault(role, set()).add(int(pid))
    return pids


def backend_cpu(pid):
    """A backend's time on CPU in seconds (it is single-threaded), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (FileNotFoundError, ProcessLookupError):
        return None


class BackendTracker:
    """CPU of each role's backends between `start` and `finish`."""

    def __init__(self, cluster, db, roles):
        self.cluster, self.db, self.roles = cluster, db, roles
        self.first = {}   # pid -> (role, cpu when first seen; 0 for sessions opened later)
        self.last = {}
        self.started = False

    def sample(self):
        for role, pids in backend_pids(self.cluster, self.db, self.roles).items():
            for pid in pids:
                cpu = backend_cpu(pid)
                if cpu is None:
                    continue
                if pid not in self.first:
                    self.first[pid] = (role, cpu if not self.started else 0.0)
                self.last[pid] = cpu
        self.started = True

    def totals(self):
        out = {r: {"cpu": 0.0, "sessions": 0} for r in self.roles}
        for pid, (role, base) in self.first.items():
            end = backend_cpu(pid)
            end = self.last[pid] if end is None else end
            out[role]["cpu"] += end - base
            out[role]["sessions"] += 1
        return out


def statements_snapshot(cluster, db, roles):
    """{(role, queryid): (calls, total_exec_ms, query)} for the subjects' own statements in
    this database (pg_stat_statements keeps one entry per database, user and queryid)."""
    sql = ("SELECT concat_ws('" + SEP + "', r.rolname, s.queryid, s.calls, s.total_exec_time, "
           "regexp_replace(left(s.query, 200), '\\s+', ' ', 'g')) "
           "FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
           "WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
           "AND r.rolname IN (" + ",".join(f"'{r}'" for r in roles) + ")")
    snap = {}
    for line in cluster.psql(db, sql).splitlines():
        parts = line.split(SEP)
        if len(parts) == 5:
            snap[(parts[0], parts[1])] = (int(parts[2]), float(parts[3]), parts[4])
    return snap


def statements_diff(before, after, role, cycles, top=6):
    rows = []
    for key, (calls, ms, query) in after.items():
        if key[0] != role:
            continue
        c0, m0, _ = before.get(key, (0, 0.0, ""))
        if calls - c0 > 0:
            rows.append({"query": query, "calls_per_cycle": (calls - c0) / cycles,
                         "ms_per_cycle": (ms - m0) / cycles})
    rows.sort(key=lambda r: -r["ms_per_cycle"])
    total = sum(r["ms_per_cycle"] for r in rows)
    return {"total_ms_per_cycle": total, "top": rows[:top]}


def warm_up(subjects, warm_polls, timeout):
    deadline = time.monotonic() + timeout
    for s in subjects:
        while True:
            if not s.alive():
                raise RuntimeError(f"{s.name} exited; see its log in {s.workdir}/{s.name}.log")
            ok = False
            try:
                if isinstance(s, Pgvigil):
                    polls = s.polls(s.scrape(prometheus=False).body)
                    ok = bool(polls) and min(polls.values()) >= warm_polls
                else:
                    ok = s.ready()
            except OSError:
                ok = False
            if ok:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{s.name} did not reach {warm_polls} polls within {timeout:.0f}s")
            time.sleep(0.5)


def run_phase(label, subjects, cluster, db, rounds, round_seconds, warm_polls=2,
              warm_timeout=300.0):
    roles = [s.role for s in subjects]
    warm_up(subjects, warm_polls, warm_timeout)
    rec = {s.name: {"prom": [], "classic": []} for s in subjects}
    for s in subjects:
        first = s.scrape(prometheus=False)
        rec[s.name]["polls0"] = sum(s.polls(first.body).values()) if isinstance(s, Pgvigil) else 0
        rec[s.name]["cpu0"] = CpuSample(s.pid)
    backends = BackendTracker(cluster, db, roles)
    backends.sample()
    stmts0 = statements_snapshot(cluster, db, roles)
    t0 = time.monotonic()
    last_classic = {}
    for r in range(rounds):
        round_end = time.monotonic() + round_seconds
        order = subjects[r % len(subjects):] + subjects[:r % len(subjects)]
        for s in order:
            p = s.scrape(prometheus=True)
            c = s.scrape(prometheus=False)
            for kind, sc in (("prom", p), ("classic", c)):
                if sc.status != 200:
                    raise RuntimeError(f"{s.name}: /metrics answered {sc.status}")
                rec[s.name][kind].append({"wall": sc.wall, "cpu": sc.cpu, "wire": sc.wire_bytes,
                                          "encoding": sc.encoding, "plain": sc.plain_bytes()})
            last_classic[s.name] = c.body
        backends.sample()
        time.sleep(max(0.0, round_end - time.monotonic()))
    window = time.monotonic() - t0
    backend_totals = backends.totals()
    stmts1 = statements_snapshot(cluster, db, roles)
    for s in subjects:
        rec[s.name]["cpu_window"] = rec[s.name]["cpu0"].until(CpuSample(s.pid))
        rec[s.name]["rss"], rec[s.name]["hwm"] = proc_mem(s.pid)
        rec[s.name]["rss_anon"], rec[s.name]["rss_file"] = proc_rss_parts(s.pid)
        last = s.scrape(prometheus=False)
        rec[s.name]["polls1"] = sum(s.polls(last.body).values()) if isinstance(s, Pgvigil) else 0
    results = {"label": label, "db": db, "window_seconds": window, "rounds": rounds,
               "subjects": {}}
    for s in subjects:
        results["subjects"][s.name] = summarise(
            s, rec[s.name], last_classic[s.name], backend_totals[s.role], stmts0, stmts1)
    return results


def compress_cpu(body, level):
    t0 = time.process_time()
    zlib.compress(body, level)
    return time.process_time() - t0


def summarise(subject, rec, classic_body, backend, stmts0, stmts1):
    prom, classic = rec["prom"], rec["classic"]
    cpu_window = rec["cpu_window"]
    scrape_cpu = sum(x["cpu"] for x in prom + classic)
    is_pgvigil = isinstance(subject, Pgvigil)
    out = {
        "kind": subject.kind,
        "series": count_series(classic_body),
        "plain_bytes": len(classic_body),
        "gzip_of_plain_bytes": len(gzip.compress(classic_body, 6)),
        # What serving gzip would cost per scrape without caching (zlib, as flate2 uses).
        "gzip1_cpu": compress_cpu(classic_body, 1),
        "gzip6_cpu": compress_cpu(classic_body, 6),
        "wire_bytes_prometheus": statistics.median(x["wire"] for x in prom),
        "encoding_prometheus": prom[-1]["encoding"],
        "wall_median": statistics.median(x["wall"] for x in prom),
        "wall_p90": quantile([x["wall"] for x in prom], 0.9),
        "wall_classic_median": statistics.median(x["wall"] for x in classic),
        "scrape_cpu_median": statistics.median(x["cpu"] for x in prom),
        "scrape_cpu_classic_median": statistics.median(x["cpu"] for x in classic),
        "scrapes": len(prom) + len(classic),
        "cpu_window": cpu_window,
        "rss": rec["rss"],
        "hwm": rec["hwm"],
        "rss_anon": rec["rss_anon"],
        "rss_file": rec["rss_file"],
        "backend_cpu": backend["cpu"],
        "backend_sessions": backend["sessions"],
    }
    if is_pgvigil:
        polls = rec["polls1"] - rec["polls0"]
        out["polls"] = polls
        out["poll_cpu"] = (cpu_window - scrape_cpu) / polls if polls else None
        out["cycle_cpu"] = (out["poll_cpu"] or 0.0) + out["scrape_cpu_median"]
        cycles = polls
    else:
        cycles = out["scrapes"]
        out["polls"] = None
        out["poll_cpu"] = None
        out["cycle_cpu"] = cpu_window / cycles
    out["cycles"] = cycles
    out["backend_cpu_per_cycle"] = backend["cpu"] / cycles if cycles else None
    out["cpu_per_series"] = out["cycle_cpu"] / out["series"] if out["series"] else None
    out["queries"] = statements_diff(stmts0, stmts1, subject.role, cycles or 1)
    return out


USER_TABLES = ("c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
               "AND n.nspname !~ '^pg_toast'")

LOWER_BOUND = [
    ("pg_stat_statements(false)", "SELECT * FROM pg_stat_statements(false)"),
    ("pg_stat_statements (view: with texts)", "SELECT * FROM pg_stat_statements"),
    ("pg_stat_user_tables", "SELECT * FROM pg_stat_user_tables"),
    ("pg_statio_user_tables", "SELECT * FROM pg_statio_user_tables"),
    ("pg_stat_activity", "SELECT * FROM pg_stat_activity"),
    # Candidates for pushing the tables cap into SQL (issue 15): what the row-loss alerts need
    # of every table, and the exported detail for the largest max_tables (300) only.
    ("row-loss counters of every table (4 pg_stat_get_* per table)", f"""
SELECT c.oid, pg_stat_get_live_tuples(c.oid), pg_stat_get_dead_tuples(c.oid),
       pg_stat_get_tuples_inserted(c.oid), pg_stat_get_tuples_deleted(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {USER_TABLES}"""),
    ("the 300 largest tables with pgvigil's columns (cap in SQL)", f"""
SELECT format('%I.%I', t.nspname, t.relname), t.reltuples, t.pages,
       pg_stat_get_live_tuples(t.oid), pg_stat_get_dead_tuples(t.oid),
       pg_stat_get_tuples_inserted(t.oid), pg_stat_get_tuples_updated(t.oid),
       pg_stat_get_tuples_deleted(t.oid), pg_stat_get_last_vacuum_time(t.oid),
       pg_stat_get_last_autovacuum_time(t.oid), pg_stat_get_last_analyze_time(t.oid),
       pg_stat_get_last_autoanalyze_time(t.oid)
  FROM (SELECT c.oid, n.nspname, c.relname, c.reltuples,
               c.relpages::int8 + coalesce(tc.relpages, 0) + coalesce(ix.pages, 0) AS pages
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_class tc ON tc.oid = c.reltoastrelid
          LEFT JOIN (SELECT x.indrelid, sum(i.relpages) AS pages
                       FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid GROUP BY 1) ix
                 ON ix.indrelid = c.oid
         WHERE {USER_TABLES}
         ORDER BY pages DESC LIMIT 300) t"""),
]


def lower_bound(cluster, db, reps):
    """Backend CPU and server-side wall time of the bare catalog queries, run in psql with the
    rows sent to /dev/null: the least any exporter of the same data pays the database."""
    marker = ("SELECT 'M " + "' || split_part(pg_read_file('/proc/self/schedstat'), ' ', 1) "
              "|| ' ' || extract(epoch FROM clock_timestamp());\n")
    out = {}
    for name, sql in LOWER_BOUND:
        script = marker
        for _ in range(reps):
            script += f"\\o /dev/null\n{sql};\n\\o\n" + marker
        lines = [line.split() for line in cluster.psql(db, script).splitlines()
                 if line.startswith("M ")]
        cpu, wall = [], []
        for (_, c0, w0), (_, c1, w1) in zip(lines, lines[1:]):
            cpu.append((int(c1) - int(c0)) / 1e9)
            wall.append(float(w1) - float(w0))
        out[name] = {"cpu_median": statistics.median(cpu), "wall_median": statistics.median(wall),
                     "reps": reps}
    return out
