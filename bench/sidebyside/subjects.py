"""The programs measured (pgvigil, postgres_exporter), and how they are read from outside.

Everything is read the way a user could read it, without instrumenting the programs:
- CPU: `/proc/<pid>/stat` utime + stime (clock ticks; includes threads that have exited) for
  totals over a run, and the sum of `/proc/<pid>/task/*/schedstat` (nanoseconds, live threads)
  for the delta around one request.
- Memory: VmRSS and VmHWM from `/proc/<pid>/status`.
- `/metrics`: one HTTP/1.1 request per scrape on a fresh connection, timed from connect to the
  last body byte; "as Prometheus scrapes" means Prometheus' Accept header (OpenMetrics
  preferred) and `Accept-Encoding: gzip`, "classic" means no Accept header and no compression
  (curl, `promtool check metrics`).
- Database backends: the pids of the subject's sessions in pg_stat_activity (each subject
  connects as a role of its own), read through /proc like the subject itself.
"""

import gzip
import http.client
import os
import re
import shutil
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,"
                     "application/openmetrics-text;version=0.0.1;q=0.4,"
                     "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
EXPORTER_QUERIES = "/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml"


def proc_cpu(pid):
    """utime + stime of a process (all its threads, exited ones included), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def threads_cpu(pid):
    """Time on CPU of the live threads of a process, in seconds (nanosecond resolution)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


class CpuSample:
    """The CPU of every live thread of a process (ns) and its tick-resolution total."""

    def __init__(self, pid):
        self.threads = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    self.threads[tid] = int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
        self.ticks = proc_cpu(pid)

    def until(self, later):
        """CPU seconds from this sample to `later`: per thread at nanosecond resolution, or the
        tick-resolution total when a thread ended in between (its time would be lost)."""
        if any(tid not in later.threads for tid in self.threads):
            return later.ticks - self.ticks
        return sum(ns - self.threads.get(tid, 0) for tid, ns in later.threads.items()) / 1e9


def proc_status(pid, keys):
    """The `keys` of /proc/<pid>/status that are sizes in kB, in bytes (None when absent)."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in keys:
                values[key] = int(rest.split()[0]) * 1024
    return [values.get(key) for key in keys]


def proc_mem(pid):
    """(VmRSS, VmHWM) of a process, in bytes."""
    rss, hwm = proc_status(pid, ("VmRSS", "VmHWM"))
    return rss or 0, hwm or 0


def proc_rss_parts(pid):
    """(RssAnon, RssFile) of a process, in bytes: what VmRSS is made of, heap and stacks
    against code and libraries mapped from disk (shared with the page cache)."""
    anon, file = proc_status(pid, ("RssAnon", "RssFile"))
    return anon, file


class Scrape:
    """One /metrics response."""

    def __init__(self, wall, status, encoding, content_type, wire, body, cpu):
        self.wall = wall
        self.status = status
        self.encoding = encoding
        self.content_type = content_type
        self.wire_bytes = wire
        self.body = body
        self.cpu = cpu

    def series(self):
        return count_series(self.body)

    def plain_bytes(self):
        return len(self.body)


def count_series(body):
    """Samples in an exposition body: non-empty lines that are not comments."""
    n = 0
    for line in body.split(b"\n"):
        if line and not line.startswith(b"#"):
            n += 1
    return n


def sample_values(body, name):
    """{labels-string: value} of every sample of `name` in an exposition body."""
    out = {}
    pattern = re.compile(rb"^" + re.escape(name.encode()) + rb"(\{[^}]*\})?\s+(\S+)", re.M)
    for m in pattern.finditer(body):
        out[(m.group(1) or b"").decode()] = float(m.group(2))
    return out


def http_get(port, path, headers=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data
    finally:
        conn.close()


class Subject:
    """A measured program: one process serving /metrics on `port`."""

    kind = "?"

    def __init__(self, name, port, role, db, workdir):
        self.name = name
        self.port = port
        self.role = role
        self.db = db
        self.workdir = workdir
        self.proc = None
        self.stderr = None

    def _spawn(self, argv, env=None):
        self.stderr = open(os.path.join(self.workdir, f"{self.name}.log"), "w")
        self.proc = subprocess.Popen(argv, stdout=self.stderr, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, cwd=self.workdir)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.stderr:
            self.stderr.close()
            self.stderr = None

    def scrape(self, prometheus=True):
        """One /metrics request, with the CPU the process spent meanwhile."""
        headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"} if prometheus else {}
        c0 = threads_cpu(self.pid)
        t0 = time.perf_counter()
        status, hdrs, data = http_get(self.port, "/metrics", headers)
        wall = time.perf_counter() - t0
        cpu = threads_cpu(self.pid) - c0
        encoding = hdrs.get("content-encoding", "identity")
        body = gzip.decompress(data) if encoding == "gzip" else data
        return Scrape(wall, status, encoding, hdrs.get("content-type", ""), len(data), body, cpu)

    def ready(self):
        """Whether /metrics answers; subclasses wait for more. The timeout is as long as a
        scrape's: postgres_exporter answers its first scrape of 10,000 tables only after
        several seconds, and a shorter one would never see it ready."""
        try:
            return http_get(self.port, "/metrics")[0] == 200
        except OSError:
            return False


class Pgvigil(Subject):
    kind = "pgvigil"

    def __init__(self, name, binary, port, role, cluster, db, workdir, poll_interval,
                 top_k=None, max_tables=None, targets=None, extra=""):
        super().__init__(name, port, role, db, workdir)
        self.binary = binary
        self.poll_interval = poll_interval
        self.config = os.path.join(workdir, f"{name}.toml")
        lines = [f'[server]\nlisten = "127.0.0.1:{port}"\n', '[logging]\nlevel = "warn"\n']
        # A target is (name, database) on `cluster`, or (name, database, its own cluster).
        for target, tdb, *on in (targets or [(db, db)]):
            tcluster = on[0] if on else cluster
            lines.append(f'[[targets]]\nname = "{target}"\ndsn = "{tcluster.dsn(tdb, role)}"\n'
                         f'poll_interval = "{poll_interval}s"\n{extra}')
            if top_k is not None:
                lines.append(f"[targets.statements]\ntop_k = {top_k}\n")
            if max_tables is not None:
                lines.append(f"[targets.tables]\nmax_tables = {max_tables}\n")
        with open(self.config, "w") as f:
            f.write("\n".join(lines))

    def start(self):
        self._spawn([self.binary, "run", "--config", self.config])

    def polls(self, body):
        """Polls per target so far, from pgvigil_poll_duration_seconds_count (the most-polled
        collector of each target: every collector runs once per poll)."""
        per_target = {}
        for labels, value in sample_values(body, "pgvigil_poll_duration_seconds_count").items():
            m = re.search(r'target="([^"]*)"', labels)
            if m:
                per_target[m.group(1)] = max(per_target.get(m.group(1), 0), int(value))
        return per_target

    def answers_api(self):
        try:
            return bool(self.targets_api())
        except (OSError, RuntimeError, ValueError):
            return False

    def targets_api(self):
        import json
        status, _, data = http_get(self.port, "/api/v1/targets", timeout=30)
        if status != 200:
            raise RuntimeError(f"{self.name}: /api/v1/targets answered {status}")
        return json.loads(data)


class Exporter(Subject):
    kind = "postgres_exporter"

    def __init__(self, name, port, role, cluster, db, workdir, queries):
        super().__init__(name, port, role, db, workdir)
        self.dsn = cluster.url(db, role)
        self.queries = queries

    def start(self):
        binary = shutil.which("prometheus-postgres-exporter") or "/usr/bin/prometheus-postgres-exporter"
        self._spawn([binary, f"--web.listen-address=127.0.0.1:{self.port}",
                     f"--extend.query-path={self.queries}", "--log.level=warn"],
                    env={"DATA_SOURCE_NAME": self.dsn})


def exporter_version():
    binary = shutil.which("prometheus-postgres-exporter")
    if not binary:
        raise SystemExit("prometheus-postgres-exporter is not installed: run "
                         "scripts/install-test-deps.sh (Debian: prometheus-postgres-exporter)")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return (out.stdout + out.stderr).splitlines()[0].strip()


def adapted_queries(workdir, server_version_num):
    """The exporter's example queries file, with pg_stat_statements' timing columns renamed
    for PostgreSQL 13+ (total_time -> total_exec_time, ...): as shipped, that query fails on
    PostgreSQL 13 and later and the exporter would export no statements at all. Returns the
    path and whether anything was changed."""
    with open(EXPORTER_QUERIES) as f:
        text = f.read()
    adapted = text
    if server_version_num >= 130000:
        adapted = re.sub(r"\b(total|min|max|mean|stddev)_time / 1000", r"\1_exec_time / 1000", text)
    path = os.path.join(workdir, "exporter-queries.yaml")
    with open(path, "w") as f:
        f.write(adapted)
    return path, adapted != text
