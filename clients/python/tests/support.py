"""Helpers for the pytest suite: the throwaway cluster, the real pgvigil daemon, waiting on
conditions (never on clocks), and reading pgvigil's API and metrics.

Everything the tests run is real: PostgreSQL from ``pgvigil-testkit cluster`` (the Rust testkit's
template-copied cluster, as the postgres OS user when run as root, removed when the pipe to it
closes), the ``pgvigil`` binary built by cargo, and pgvigil-timing's ``record_import`` example as
the Rust writer. Their paths come from ``PGVIGIL_BIN``, ``PGVIGIL_TESTKIT_BIN`` and
``PGVIGIL_RECORD_IMPORT_BIN`` (scripts/python-tests.sh sets them), or are built with cargo.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

import psycopg

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def binaries() -> Dict[str, str]:
    """Paths of pgvigil, pgvigil-testkit and the record_import example."""
    wanted = {
        "pgvigil": os.environ.get("PGVIGIL_BIN"),
        "pgvigil-testkit": os.environ.get("PGVIGIL_TESTKIT_BIN"),
        "record_import": os.environ.get("PGVIGIL_RECORD_IMPORT_BIN"),
    }
    if all(wanted.values()):
        return wanted  # type: ignore[return-value]
    out = subprocess.run(
        [
            "cargo",
            "build",
            "--all-features",
            "--message-format=json-render-diagnostics",
            "-p",
            "pgvigil",
            "--bin",
            "pgvigil",
            "-p",
            "pgvigil-testkit",
            "--bin",
            "pgvigil-testkit",
            "-p",
            "pgvigil-timing",
            "--example",
            "record_import",
        ],
        cwd=REPO,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            name = msg["target"]["name"]
            if name in wanted and not wanted[name]:
                wanted[name] = msg["executable"]
    missing = [k for k, v in wanted.items() if not v]
    assert not missing, f"cargo built no executable for {missing}"
    return wanted  # type: ignore[return-value]


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float = 30.0) -> T:
    """Call ``check`` every 100 ms until it returns something truthy; fail with ``what`` and the
    last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(0.1)


class Cluster:
    """The cluster of the whole session (``pgvigil-testkit cluster``)."""

    def __init__(self, testkit: str) -> None:
        self.proc = subprocess.Popen(
            [testkit, "cluster"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"pgvigil-testkit cluster exited with {self.proc.wait()}")
        info = json.loads(line)
        self.host, self.port, self.user = info["host"], info["port"], info["user"]

    def dsn(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def url(self, dbname: str, driver: str) -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, prefix: str) -> str:
        name = f"{prefix[:24]}_{uuid.uuid4().hex[:10]}".lower()
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """A real pgvigil process watching one database, polling every 200 ms."""

    def __init__(self, binary: str, dsn: str, workdir: Path) -> None:
        self.port = free_port()
        config = workdir / "pgvigil.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\n\n'
            '[logging]\nlevel = "warn"\n\n'
            f'[[targets]]\nname = "py"\ndsn = "{dsn}"\npoll_interval = "200ms"\n'
            'reconnect_max_backoff = "1s"\n\n'
            # The shortest grace period: two polls confirm a discrepancy.
            '[targets.imports]\ngrace_period = "100ms"\n'
        )
        self.log = open(workdir / "pgvigil.log", "w")
        self.proc = subprocess.Popen(
            [binary, "--config", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for("pgvigil to be ready", lambda: self._ready(), timeout=30)

    def _ready(self) -> bool:
        assert self.proc.poll() is None, (
            f"pgvigil exited with {self.proc.returncode}: {self.log.name}"
        )
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    def get(self, path: str) -> "tuple[int, str]":
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, f"{path}: {status} {body}"
        return json.loads(body)

    def imports(self) -> List[dict]:
        report = self.json("/api/v1/imports")["targets"].get("py") or {}
        return report.get("imports") or []

    def verdicts(
        self, ids: List[str], settled: "tuple[str, ...]" = ("ok", "shortfall")
    ) -> Optional[Dict[str, dict]]:
        """The verdicts of ``ids`` once every one of them is in ``settled``."""
        by_id = {v["import_id"]: v for v in self.imports()}
        if all(by_id.get(i, {}).get("verdict") in settled for i in ids):
            return {i: by_id[i] for i in ids}
        return None

    def alerts(self, name: str) -> List[dict]:
        return [
            a for a in self.json("/api/v1/alerts")["active"] if a["labels"].get("alertname") == name
        ]

    def metric(self, name: str, **labels: str) -> Optional[float]:
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                return float(value)
        return None

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
