"""The soak: pgvigil for an hour under pgbench, with imports and faults (see bench/README.md).

Run through bench/soak.sh. Steps:
1. A scratch cluster (sidebyside.cluster): database `soak` with pgbench's tables, the shipped
   import audit table (deploy/sql/import_audit.sql) and a `contacts` table the imports fill,
   pgbench rate-limited beside it (`--rate` transactions per second, 1 client).
2. pgvigil (the binary given) watching it, alerts to a webhook receiver of this script's own,
   alert state in a state directory.
3. Every `--import-every` an import: an audit row on an autocommit session, then the rows in a
   transaction of their own; every third import is short (it claims more rows than it
   commits), and pgvigil must send ImportRowShortfall for it. Once its alert has fired, the
   import's audit row is deleted (the operator dealt with it), so the alert must resolve.
4. Every `--fault-every` the next fault of the list: the server restarted, pgvigil's backends
   terminated, a watched table locked exclusively for a minute, pg_stat_statements dropped and
   re-created, the audit table dropped and re-created.
5. Every `--sample-every`: pgvigil's RSS and open descriptors (/proc), its sessions on the
   server (pg_stat_activity, application_name = 'pgvigil'), and the alerts received.
6. results.json and report.md in --out; with --benchmarks, the soak section of that file.

Pass: RSS growth < 5% after warm-up (median of the last fifth against the median of the fifth
after warm-up), no descriptor growth (the same medians; at most +2 for a connection being
replaced at the sampling instant), never more sessions than the budget (`max_connections`),
every short import alerted, every alert that fired resolved by the end.
"""

import argparse
import datetime
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sidebyside.cluster import Cluster, find_bindir, wait_until  # noqa: E402

BUDGET = 2
FAULTS = ["restart", "terminate", "lock", "pg_stat_statements", "audit_table"]


def log(msg):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A webhook endpoint recording every alert notification (Alertmanager's webhook body)."""

    def __init__(self):
        self.events = []  # (time, status, alertname, import_id)
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    payload = json.loads(body)
                    alerts = payload.get("alerts", [])
                except ValueError:
                    alerts = []
                with outer.lock:
                    for a in alerts:
                        labels = a.get("labels", {})
                        outer.events.append((time.time(), a.get("status"),
                                             labels.get("alertname"), labels.get("import_id")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def state(self):
        """{(alertname, import_id): last status}, and the count of firing/resolved events."""
        with self.lock:
            events = list(self.events)
        last = {}
        fired = resolved = 0
        for _, status, name, import_id in events:
            key = (name, import_id)
            if status == "firing" and last.get(key) != "firing":
                fired += 1
            if status == "resolved" and last.get(key) == "firing":
                resolved += 1
            last[key] = status
        return last, fired, resolved

    def stop(self):
        self.server.shutdown()


def proc_sample(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, args):
        self.args = args
        self.cluster = Cluster(find_bindir(), free_port(), {"max_connections": "40"}, "soak")
        self.receiver = Receiver()
        self.samples = []
        self.imports = []  # dicts: id, short, at, alerted_at, deleted
        self.faults = []  # (time, name, seconds to do it)
        self.proc = None
        self.pgbench = None
        self.lock_session = None

    # -- setup -------------------------------------------------------------------------
    def start(self):
        c = self.cluster
        c.start()
        c.create_database("soak")
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(repo, "deploy/sql/import_audit.sql")) as f:
            c.psql("soak", f.read())
        c.psql("soak", "CREATE TABLE contacts (id bigserial PRIMARY KEY, import_id uuid, name text);"
                       "CREATE INDEX ON contacts (import_id);"
                       "CREATE TABLE watched (id int PRIMARY KEY); INSERT INTO watched SELECT generate_series(1, 1000);")
        subprocess.run([os.path.join(c.bindir, "pgbench"), "-i", "-q", "-s", "1", "-h", "127.0.0.1",
                        "-p", str(c.port), "-U", "postgres", "soak"], check=True, capture_output=True)
        self.pgbench_log = open(os.path.join(self.args.out, "pgbench.log"), "w")
        self.pgbench = subprocess.Popen(
            [os.path.join(c.bindir, "pgbench"), "-n", "-c", "1", "-j", "1", "-R", str(self.args.rate),
             "-T", str(self.args.duration + 600), "-h", "127.0.0.1", "-p", str(c.port), "-U", "postgres",
             "soak"], stdout=self.pgbench_log, stderr=subprocess.STDOUT)
        state = os.path.join(self.args.out, "state")
        os.makedirs(state, exist_ok=True)
        self.http_port = free_port()
        config = os.path.join(self.args.out, "pgvigil.toml")
        with open(config, "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{self.http_port}"
[alerts]
state_dir = "{state}"
resend_interval = "1m"
# A restart fault's PostgresRestarted holds for 5 minutes after the new start, then for
# keep_firing_for (15 minutes by default): shortened so the last restart's alert can resolve
# within the drain.
[alerts.rules.PostgresRestarted]
keep_firing_for = "1m"
[[alerts.webhook]]
url = "http://127.0.0.1:{self.receiver.port}/hook"
[[targets]]
name = "soak"
dsn = "{c.dsn('soak')}"
poll_interval = "5s"
reconnect_max_backoff = "5s"
max_connections = {BUDGET}
[targets.databases]
include = ["soak"]
[targets.tables]
exact_count_tables = ["public.watched"]
exact_count_interval = "30s"
[targets.imports]
grace_period = "5s"
recheck_window = "10m"
""")
        self.log_file = open(os.path.join(self.args.out, "pgvigil.log"), "w")
        self.proc = subprocess.Popen([self.args.pgvigil, "run", "--config", config],
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        wait_until("pgvigil up", lambda: b"pgvigil_up{target=\"soak\"} 1" in self.metrics(), 60, 0.5)
        log(f"pgvigil pid {self.proc.pid} up; cluster on port {c.port}; out {self.args.out}")

    def metrics(self):
        import http.client
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
            conn.request("GET", "/metrics")
            return conn.getresponse().read()
        except OSError:
            return b""

    # -- the work ----------------------------------------------------------------------
    def run_import(self, n):
        import_id = str(uuid.uuid4())
        short = n % 3 == 2
        rows = 200
        committed = rows // 2 if short else rows
        c = self.cluster
        try:
            c.psql("soak", f"INSERT INTO import_audit (import_id, target_table, source_name, expected_rows, status, started_at) "
                           f"VALUES ('{import_id}', 'contacts', 'soak-{n}', {rows}, 'running', now());")
            c.psql("soak", f"BEGIN; INSERT INTO contacts (import_id, name) SELECT '{import_id}', 'c' || g "
                           f"FROM generate_series(1, {committed}) g; COMMIT;")
            c.psql("soak", f"UPDATE import_audit SET status = 'committed', finished_at = now(), reported_rows = {rows} "
                           f"WHERE import_id = '{import_id}'; NOTIFY pgvigil_import, '{import_id}';")
        except RuntimeError as e:
            # The server restarting under a fault: the import did not happen as planned.
            log(f"import {n} failed ({e}); not counted")
            return
        self.imports.append(dict(id=import_id, short=short, at=time.time(), alerted_at=None,
                                 deleted=False))

    def settle_imports(self):
        """Delete the audit row of a short import once its alert fired (the operator acted)."""
        last, _, _ = self.receiver.state()
        for imp in self.imports:
            if imp["short"] and imp["alerted_at"] is None and \
                    last.get(("ImportRowShortfall", imp["id"])) == "firing":
                imp["alerted_at"] = time.time()
            if imp["alerted_at"] and not imp["deleted"] and time.time() - imp["alerted_at"] > 30:
                try:
                    self.cluster.psql("soak", f"DELETE FROM import_audit WHERE import_id = '{imp['id']}'")
                    imp["deleted"] = True
                except RuntimeError:
                    pass

    def fault(self, n):
        name = FAULTS[n % len(FAULTS)]
        c = self.cluster
        started = time.time()
        try:
            if name == "restart":
                subprocess.run(c._cmd("pg_ctl", "-D", c.data, "-m", "fast", "-w", "restart", "-l", c.log),
                               check=True, capture_output=True, cwd="/")
            elif name == "terminate":
                c.psql("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE application_name = 'pgvigil'")
            elif name == "lock":
                # Held for a minute by a session of its own, in the background.
                self.lock_session = subprocess.Popen(
                    [os.path.join(c.bindir, "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(c.port),
                     "-U", "postgres", "-d", "soak", "-c",
                     "BEGIN; LOCK TABLE watched IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elif name == "pg_stat_statements":
                c.psql("soak", "DROP EXTENSION pg_stat_statements; CREATE EXTENSION pg_stat_statements;")
            elif name == "audit_table":
                c.psql("soak", "ALTER TABLE import_audit RENAME TO import_audit_old;")
                with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                       "deploy/sql/import_audit.sql")) as f:
                    ddl = f.read()
                c.psql("soak", "DROP INDEX IF EXISTS import_audit_recent;" + ddl +
                       "INSERT INTO import_audit SELECT * FROM import_audit_old; DROP TABLE import_audit_old;")
        except (RuntimeError, subprocess.CalledProcessError) as e:
            log(f"fault {name} failed to apply: {e}")
        self.faults.append((started, name, round(time.time() - started, 2)))
        log(f"fault {n}: {name}")

    def sample(self, t0):
        rss, fds = proc_sample(self.proc.pid)
        try:
            conns = int(self.cluster.psql(
                "postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgvigil'").strip())
        except RuntimeError:
            conns = None
        _, fired, resolved = self.receiver.state()
        up = b"pgvigil_up{target=\"soak\"} 1" in self.metrics()
        self.samples.append(dict(t=round(time.time() - t0, 1), rss=rss, fds=fds, connections=conns,
                                 fired=fired, resolved=resolved, up=up))

    def loop(self):
        a = self.args
        t0 = time.time()
        next_import = t0 + 10
        next_fault = t0 + a.fault_every
        next_sample = t0
        n_import = n_fault = 0
        while time.time() - t0 < a.duration:
            now = time.time()
            if self.proc.poll() is not None:
                raise SystemExit(f"pgvigil exited with {self.proc.returncode}; see {a.out}/pgvigil.log")
            if now >= next_sample:
                self.sample(t0)
                next_sample += a.sample_every
            if now >= next_import:
                self.run_import(n_import)
                n_import += 1
                next_import += a.import_every
            if now >= next_fault:
                self.fault(n_fault)
                n_fault += 1
                next_fault += a.fault_every
            self.settle_imports()
            time.sleep(1)
        # The last alerts: time to fire, be settled and resolve.
        deadline = time.time() + a.drain
        while time.time() < deadline:
            self.settle_imports()
            last, _, _ = self.receiver.state()
            pending = [i for i in self.imports if i["short"] and not i["deleted"]]
            if not pending and all(s != "firing" for s in last.values()):
                break
            time.sleep(2)
        self.sample(t0)

    # -- verdict -----------------------------------------------------------------------
    def verdict(self):
        s = self.samples
        warm = [x for x in s if x["t"] >= self.args.warmup]
        fifth = max(1, len(warm) // 5)
        first, last = warm[:fifth], warm[-fifth:]
        rss0, rss1 = statistics.median(x["rss"] for x in first), statistics.median(x["rss"] for x in last)
        fd0, fd1 = statistics.median(x["fds"] for x in first), statistics.median(x["fds"] for x in last)
        conns = [x["connections"] for x in s if x["connections"] is not None]
        last_state, fired, resolved = self.receiver.state()
        short = [i for i in self.imports if i["short"]]
        unalerted = [i["id"] for i in short if i["alerted_at"] is None]
        still_firing = sorted(f"{k[0]} {k[1] or ''}".strip() for k, v in last_state.items() if v == "firing")
        growth = (rss1 - rss0) / rss0 * 100 if rss0 else 0.0
        checks = {
            "rss_growth_below_5pct": growth < 5.0,
            "no_fd_growth": fd1 <= fd0 + 2,
            "within_connection_budget": max(conns, default=0) <= BUDGET,
            "every_short_import_alerted": not unalerted,
            "every_fired_alert_resolved": not still_firing,
        }
        return dict(
            duration_s=self.args.duration, rate=self.args.rate, imports=len(self.imports),
            short_imports=len(short), unalerted=unalerted, faults=self.faults,
            rss_after_warmup_mib=round(rss0 / 2**20, 2), rss_end_mib=round(rss1 / 2**20, 2),
            rss_growth_pct=round(growth, 2), rss_max_mib=round(max(x["rss"] for x in s) / 2**20, 2),
            fds_after_warmup=fd0, fds_end=fd1, fds_max=max(x["fds"] for x in s),
            connections_max=max(conns, default=0), budget=BUDGET, alerts_fired=fired,
            alerts_resolved=resolved, still_firing=still_firing,
            down_samples=sum(1 for x in s if not x["up"]), samples=len(s), checks=checks,
            passed=all(checks.values()),
        )

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for p in (self.pgbench, self.lock_session):
            if p and p.poll() is None:
                p.terminate()
                p.wait()
        self.receiver.stop()
        self.cluster.stop()


def report(v, command):
    ok = lambda b: "pass" if b else "**FAIL**"  # noqa: E731
    c = v["checks"]
    faults = ", ".join(f"{name} ({secs}s)" for _, name, secs in v["faults"][:len(FAULTS)])
    return f"""Run: `{command}` on {datetime.date.today()}: {v['duration_s'] / 60:.0f} min, pgbench at
{v['rate']} tps (1 client), {v['imports']} imports ({v['short_imports']} short), {len(v['faults'])} faults
cycling through {faults}; {v['samples']} samples.

| criterion | figure | verdict |
|---|---|---|
| RSS growth after warm-up (median of the first fifth vs the last) | {v['rss_after_warmup_mib']} MiB → {v['rss_end_mib']} MiB ({v['rss_growth_pct']:+.2f}%; max {v['rss_max_mib']} MiB) | {ok(c['rss_growth_below_5pct'])} |
| open descriptors (same medians) | {v['fds_after_warmup']} → {v['fds_end']} (max {v['fds_max']}) | {ok(c['no_fd_growth'])} |
| pgvigil's sessions on the server, max | {v['connections_max']} (budget {v['budget']}) | {ok(c['within_connection_budget'])} |
| short imports alerted (ImportRowShortfall) | {v['short_imports'] - len(v['unalerted'])} of {v['short_imports']} | {ok(c['every_short_import_alerted'])} |
| alerts fired / resolved | {v['alerts_fired']} / {v['alerts_resolved']}; still firing at the end: {', '.join(v['still_firing']) or 'none'} | {ok(c['every_fired_alert_resolved'])} |

Samples with `pgvigil_up 0` (the restarts): {v['down_samples']} of {v['samples']}.
**Result: {'pass' if v['passed'] else 'FAIL'}.**
"""


def write_section(path, text):
    """Replace (or append) the section of BENCHMARKS.md this script owns."""
    start = "<!-- soak:start (generated by bench/soak.sh; do not edit by hand) -->"
    end = "<!-- soak:end -->"
    with open(path) as f:
        doc = f.read()
    block = f"{start}\n## Soak: an hour under load, imports and faults\n\n{text}{end}"
    if "<!-- soak:start" in doc and end in doc:
        doc = doc[:doc.index("<!-- soak:start")] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pgvigil", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--duration", type=float, default=3600)
    p.add_argument("--warmup", type=float, default=300)
    p.add_argument("--rate", type=float, default=5)
    p.add_argument("--import-every", type=float, default=60)
    p.add_argument("--fault-every", type=float, default=300)
    p.add_argument("--sample-every", type=float, default=10)
    p.add_argument("--drain", type=float, default=600)
    p.add_argument("--benchmarks")
    p.add_argument("--command-line", default="bench/soak.sh")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    soak = Soak(a)
    try:
        soak.start()
        soak.loop()
        v = soak.verdict()
    finally:
        soak.stop()
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(dict(verdict=v, samples=soak.samples, imports=soak.imports), f, indent=1)
    text = report(v, a.command_line)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(text)
    print(text)
    if a.benchmarks:
        write_section(a.benchmarks, text)
    sys.exit(0 if v["passed"] else 1)


if __name__ == "__main__":
    main()
