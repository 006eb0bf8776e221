"""A scratch PostgreSQL cluster for the benchmark, and the data it is filled with.

`Cluster` runs initdb into a directory of its own (as the OS user `postgres` when we are root,
like pgvigil-testkit), listens on 127.0.0.1 on a port of its own with pg_stat_statements
preloaded, and is stopped (immediate) and removed by `stop()`. Nothing here touches the
system cluster on 5432.

The data:
- `fill_statements`: N distinct queryids, from a PL/pgSQL function that EXECUTEs the i-th of
  100 target-list shapes x (N / 100) IN-list shapes (benches/statements.rs does the same);
  `pg_stat_statements.track = all` records the nested statements.
- `fill_tables`: N tables `t_00001 ...` with a primary key and 1..97 rows each (so sizes differ
  and "largest first" means something), created in batches of 250 per transaction (a single
  transaction would need a lock slot per table), then ANALYZEd.
- `Load`: background pgbench traffic, rate-limited (TPC-B-like plus random calls of the
  statement function), and a sweep that runs every generated statement once per poll interval,
  so every entry of pg_stat_statements has a delta at every poll (the worst case for an
  exporter computing deltas, and what makes full fidelity export every statement: a statement
  enters pgvigil's top-K by its execution time over the rank window).
"""

import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time

STATEMENT_FUNCTION = """
CREATE OR REPLACE FUNCTION bench_stmt(i int) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
  EXECUTE format('SELECT %s WHERE 1 IN (%s)',
                 rtrim(repeat('1,', i % 100 + 1), ','),
                 rtrim(repeat('1,', i / 100 + 1), ','));
END $f$;
"""

TABLE_BATCH = 250


def find_bindir():
    """The newest /usr/lib/postgresql/<major>/bin with initdb (PGVIGIL_BENCH_PGBIN overrides)."""
    forced = os.environ.get("PGVIGIL_BENCH_PGBIN")
    if forced:
        return forced
    root = "/usr/lib/postgresql"
    majors = sorted(
        (d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "bin", "initdb"))),
        key=lambda d: [int(p) for p in d.split(".") if p.isdigit()],
    ) if os.path.isdir(root) else []
    if not majors:
        raise SystemExit(
            "no PostgreSQL server binaries under /usr/lib/postgresql; "
            "install them with scripts/install-test-deps.sh (Debian: postgresql)"
        )
    return os.path.join(root, majors[-1], "bin")


class Cluster:
    """One throwaway PostgreSQL cluster."""

    def __init__(self, bindir, port, settings, label):
        self.bindir = bindir
        self.port = port
        self.root = tempfile.mkdtemp(prefix=f"pgvigil-bench-{label}-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.as_postgres = os.geteuid() == 0
        self.settings = settings
        self.running = False

    def _cmd(self, program, *args):
        argv = [os.path.join(self.bindir, program), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def _run(self, argv, what):
        out = subprocess.run(argv, capture_output=True, text=True, cwd="/")
        if out.returncode != 0:
            raise RuntimeError(f"{what} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def start(self):
        if self.as_postgres:
            pwd.getpwnam("postgres")  # KeyError: the postgresql package creates that user
            shutil.chown(self.root, "postgres", "postgres")
        self._run(self._cmd("initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                            "--no-sync", "-E", "UTF8", "--locale=C"), "initdb")
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "'all'",
            "track_io_timing": "on",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
            **self.settings,
        }
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# pgvigil bench\n")
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")
        if self.as_postgres:
            subprocess.run(["chown", "-R", "postgres:postgres", self.root], check=True)
        self._run(self._cmd("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start"),
                  f"starting the cluster (log: {self.log})")
        self.running = True

    def stop(self):
        if self.running:
            subprocess.run(self._cmd("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"),
                           capture_output=True, cwd="/")
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, db, user="postgres"):
        return f"host=127.0.0.1 port={self.port} user={user} dbname={db} sslmode=disable"

    def url(self, db, user="postgres"):
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}?sslmode=disable"

    def psql(self, db, sql, user="postgres"):
        """Run `sql` (several statements: each in its own transaction) and return stdout."""
        argv = [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", db, "-f", "-"]
        out = subprocess.run(argv, input=sql, capture_output=True, text=True,
                             env={**os.environ, "PGCONNECT_TIMEOUT": "10"})
        if out.returncode != 0:
            raise RuntimeError(f"psql {db}: {out.stderr.strip()}\n--- sql:\n{sql[:2000]}")
        return out.stdout

    def version(self):
        return self.psql("postgres", "SELECT version()").strip()

    def create_database(self, name, template=None, extension=True):
        tpl = f" TEMPLATE {template}" if template else ""
        self.psql("postgres", f"CREATE DATABASE {name}{tpl}")
        if extension and not template:
            self.psql(name, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def create_roles(self, names):
        self.psql("postgres", "".join(f"CREATE ROLE {n} LOGIN SUPERUSER;\n" for n in names))

    def fill_statements(self, db, n):
        self.psql(db, STATEMENT_FUNCTION)
        self.psql(db, f"SELECT count(bench_stmt(i)) FROM generate_series(0, {n - 1}) i")

    def fill_tables(self, db, n):
        batches = []
        for start in range(1, n + 1, TABLE_BATCH):
            end = min(n, start + TABLE_BATCH - 1)
            batches.append(f"""DO $$
BEGIN
  FOR i IN {start}..{end} LOOP
    EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, payload text)', 't_' || lpad(i::text, 5, '0'));
    EXECUTE format('INSERT INTO %I SELECT g, md5(g::text) FROM generate_series(1, %s) g',
                   't_' || lpad(i::text, 5, '0'), i % 97 + 1);
  END LOOP;
END $$;
""")
        # Untracked: 2 x N distinct DDL/INSERT texts would crowd the measured statements out of
        # pg_stat_statements (and its evictions would hide the subjects' own queries).
        self.psql(db, "SET pg_stat_statements.track = 'none';\n" + "".join(batches) + "ANALYZE;\n")

    def sweep_sql(self, n):
        return f"SELECT count(bench_stmt(i)) FROM generate_series(0, {n - 1}) i"

    def statement_count(self, db):
        return int(self.psql(db, "SELECT count(*) FROM pg_stat_statements").strip())

    def table_count(self, db):
        return int(self.psql(db, "SELECT count(*) FROM pg_stat_user_tables").strip())


class Load:
    """Background pgbench traffic and the statement sweep on one database until `stop()`."""

    def __init__(self, cluster, db, rate, statements, log_dir, sweep_every):
        self.cluster = cluster
        self.stopping = threading.Event()
        self.sweeps = 0

        def sweep():
            next_at = time.monotonic()
            while not self.stopping.is_set():
                try:
                    cluster.psql(db, cluster.sweep_sql(statements))
                    self.sweeps += 1
                except RuntimeError:
                    if not self.stopping.is_set():
                        raise
                next_at += sweep_every
                self.stopping.wait(max(0.0, next_at - time.monotonic()))

        self.sweeper = threading.Thread(target=sweep, name="statement-sweep", daemon=True)
        subprocess.run(
            [os.path.join(cluster.bindir, "pgbench"), "-i", "-q", "-s", "1", "-h", "127.0.0.1",
             "-p", str(cluster.port), "-U", "postgres", db],
            check=True, capture_output=True)
        script = os.path.join(log_dir, "statements.pgbench")
        with open(script, "w") as f:
            f.write(f"\\set i random(0, {max(statements - 1, 0)})\nSELECT bench_stmt(:i);\n")
        self.log = open(os.path.join(log_dir, "pgbench.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(cluster.bindir, "pgbench"), "-n", "-c", "2", "-j", "1",
             "-R", str(rate), "-T", "86400", "-b", "tpcb-like@1", "-f", f"{script}@3",
             "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", db],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.sweeper.start()

    def stop(self):
        self.stopping.set()
        self.sweeper.join(60)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_until(what, condition, timeout, every=0.2):
    """Poll `condition()` until it returns a truthy value; raise naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
