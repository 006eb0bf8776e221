"""What pgvigil's Grafana dashboards show: every panel, query and annotation, as plain data.

`generate.py` turns these lists into dashboards with the Grafana Foundation SDK's typed builders.
Every `expr` here is evaluated against a real Prometheus scraping a real pgvigil by the
integration test `operator_kit::live_prometheus_answers_every_dashboard_and_rule`, and every
metric name it uses is checked against pgvigil's metric catalogue (src/metrics.rs).
"""

from dataclasses import dataclass
from typing import Literal

from grafana_foundation_sdk.models import units

T = 'target=~"$target"'
TD = 'target=~"$target",datname=~"$datname"'
RI = "$__rate_interval"
TOPK_BY = "target, datname, queryid"
OTHER = 'queryid!="other"'

# Threshold steps: (value, colour), the first with value None (the base).
Steps = tuple[tuple[float | None, str], ...]


def above(*steps: tuple[float, str]) -> Steps:
    """Green, then the given steps."""
    return ((None, "green"), *steps)


@dataclass(frozen=True)
class Q:
    """One query of a panel."""

    expr: str
    legend: str = ""
    # An instant query in table format (the table panels), instead of a range query.
    table: bool = False


@dataclass(frozen=True)
class P:
    """One panel."""

    kind: Literal["timeseries", "stat", "gauge", "table"]
    title: str
    queries: tuple[Q, ...]
    desc: str
    unit: str = units.Short
    w: int = 12
    h: int = 8
    # None: no threshold is drawn (the base green only).
    steps: Steps | None = None
    min: float | None = None
    max: float | None = None
    # Show 0/1 as DOWN/UP.
    up_down: bool = False


@dataclass(frozen=True)
class Row:
    title: str


@dataclass(frozen=True)
class Annotation:
    """A Prometheus annotation query: every sample above 0 marks the graphs of the dashboard."""

    name: str
    expr: str
    title: str
    tags: tuple[str, ...]
    color: str
    text: str = ""


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    items: tuple[P | Row, ...]
    # Has the `datname` variable (dashboards whose queries filter by database).
    datname: bool


OVERVIEW = (
    Row("Health"),
    P("stat", "Targets up", (Q(f"pgvigil_up{{{T}}}", "{{target}}"),), w=8, h=5,
      desc="1 if pgvigil's last poll of the target succeeded. DOWN: see the PgvigilTargetDown runbook.",
      steps=((None, "red"), (1, "green")), up_down=True),
    P("stat", "Alerts firing (pgvigil)", (Q('sum(pgvigil_alerts{state="firing"}) or vector(0)', "firing"),), w=4, h=5,
      desc="Alerts pgvigil's own engine holds in state firing.", steps=above((1, "red"))),
    P("stat", "Rows missing after imports", (Q(f"sum(pgvigil_import_missing_rows{{{T}}}) or vector(0)", "missing rows"),),
      w=4, h=5, desc="Rows missing from tables over confirmed import shortfalls. Anything above 0 is data loss: see the ImportRowShortfall runbook.",
      steps=above((1, "red"))),
    P("gauge", "Connection slots used", (Q(f"pgvigil:connections_used:ratio{{{T}}}", "{{target}}"),), unit=units.PercentUnit,
      w=8, h=5, desc="Client connections / (max_connections - reserved). ConnectionsNearLimit warns at 80%, critical at 95%.",
      steps=above((0.8, "orange"), (0.95, "red")), min=0, max=1),
    Row("Load"),
    P("timeseries", "Connections vs usable limit",
      (Q(f"sum by (target) (pgvigil_connections{{{T}}})", "{{target}} connections"),
       Q(f"pgvigil_connections_max{{{T}}} - pgvigil_connections_reserved{{{T}}}", "{{target}} usable slots")),
      desc="Client connections against max_connections minus reserved slots: when the lines meet, new connections are refused."),
    P("timeseries", "Statement time by database",
      (Q(f"sum by (target, datname) (rate(pgvigil_database_statement_exec_seconds_total{{{TD}}}[{RI}]))", "{{target}}/{{datname}}"),),
      unit=units.Seconds,
      desc="Seconds of execution per second (average number of busy backends) by database, from pg_stat_statements."),
    P("table", "Top statements by total time",
      (Q(f"topk(10, sum by (target, datname, queryid) (rate(pgvigil_statement_exec_seconds_total{{{TD}}}[5m])))"
         f" * on (target, queryid) group_left (query) max by (target, queryid, query) (pgvigil_statement_info{{{T}}})",
         table=True),),
      unit=units.Seconds, w=24,
      desc="The 10 statements that used the most execution time per second over the last 5 minutes, with their text."),
    Row("Import health"),
    P("timeseries", "Imports by verdict", (Q(f"sum by (target, verdict) (pgvigil_import_verdicts{{{T}}})", "{{target}} {{verdict}}"),),
      desc="Imports in the re-check window by pgvigil's verdict: shortfall, mismatch, surplus, stalled and aborted need a look."),
    P("timeseries", "Import checks per second by result",
      (Q(f"sum by (target, result) (rate(pgvigil_import_checks_total{{{T}}}[{RI}]))", "{{target}} {{result}}"),),
      unit=units.OpsPerSecond, desc="Reconciliations of committed imports against their tables, by verdict."),
)

QUERIES = (
    Row("Top statements"),
    P("timeseries", "Top 10 statements by total time",
      (Q(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_exec_seconds_total{{{TD},{OTHER}}}[{RI}])))", "{{datname}} {{queryid}}"),),
      unit=units.Seconds, desc="Execution seconds per second. The text of a queryid is in the table at the bottom."),
    P("timeseries", "Top 10 statements by calls",
      (Q(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_calls_total{{{TD},{OTHER}}}[{RI}])))", "{{datname}} {{queryid}}"),),
      unit=units.OpsPerSecond, desc="Calls per second. A statement that jumps here without more users is usually a loop in an application (N+1 queries)."),
    P("timeseries", "Top 10 statements by mean latency",
      (Q(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_exec_seconds_total{{{TD},{OTHER}}}[{RI}]))"
         f" / (sum by ({TOPK_BY}) (rate(pgvigil_statement_calls_total{{{TD},{OTHER}}}[{RI}])) > 0))", "{{datname}} {{queryid}}"),),
      unit=units.Seconds, desc="Mean execution time per call. SlowQuery fires at 1s.", steps=above((1, "red"))),
    P("timeseries", "Latency regressions (mean now / mean an hour ago)",
      (Q(f"topk(10, pgvigil:statement_mean_seconds:rate5m{{{TD}}} / (pgvigil:statement_mean_seconds:rate5m{{{TD}}} offset 1h > 0))",
         "{{datname}} {{queryid}}"),),
      desc="How many times slower each statement is than an hour ago; 5 or more is what the in-daemon SlowQuery regression check flags.",
      steps=above((2, "orange"), (5, "red"))),
    P("timeseries", "Rows per second by database",
      (Q(f"sum by (target, datname) (rate(pgvigil_database_statement_rows_total{{{TD}}}[{RI}]))", "{{target}}/{{datname}}"),),
      desc="Rows returned or affected per second by all statements of each database."),
    P("timeseries", "Planning time",
      (Q(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_plan_seconds_total{{{TD},{OTHER}}}[{RI}])))", "{{datname}} {{queryid}}"),),
      unit=units.Seconds, desc="Needs pg_stat_statements.track_planning = on."),
    Row("I/O and WAL"),
    P("timeseries", "Shared buffer hit ratio",
      (Q(f"sum by (target, datname) (rate(pgvigil_statement_shared_blocks_hit_total{{{TD}}}[{RI}]))"
         f" / (sum by (target, datname) (rate(pgvigil_statement_shared_blocks_hit_total{{{TD}}}[{RI}]))"
         f" + sum by (target, datname) (rate(pgvigil_statement_shared_blocks_read_total{{{TD}}}[{RI}])) > 0)", "{{target}}/{{datname}}"),),
      unit=units.PercentUnit, min=0, max=1, steps=((None, "red"), (0.9, "orange"), (0.99, "green")),
      desc="Share of block reads served from shared buffers. Below 99% on an OLTP database, the working set no longer fits in shared_buffers."),
    P("timeseries", "Top 10 statements by blocks read",
      (Q(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_shared_blocks_read_total{{{TD},{OTHER}}}[{RI}])))", "{{datname}} {{queryid}}"),),
      desc="8 KiB blocks per second not found in shared buffers."),
    P("timeseries", "Blocks dirtied and written",
      (Q(f"sum by (target, datname) (rate(pgvigil_statement_shared_blocks_dirtied_total{{{TD}}}[{RI}]))", "{{datname}} dirtied"),
       Q(f"sum by (target, datname) (rate(pgvigil_statement_shared_blocks_written_total{{{TD}}}[{RI}]))", "{{datname}} written")),
      desc="8 KiB blocks per second that statements modified, and those a backend had to write out itself (checkpointer and background writer not keeping up)."),
    P("timeseries", "Temp blocks (work_mem spills)",
      (Q(f"sum by (target, datname) (rate(pgvigil_statement_temp_blocks_written_total{{{TD}}}[{RI}]))", "{{datname}} written"),
       Q(f"sum by (target, datname) (rate(pgvigil_statement_temp_blocks_read_total{{{TD}}}[{RI}]))", "{{datname}} read")),
      desc="Temporary-file blocks: sorts and hashes that did not fit in work_mem."),
    P("timeseries", "Time in block I/O",
      (Q(f"sum by (target, datname) (rate(pgvigil_statement_block_read_seconds_total{{{TD}}}[{RI}]))", "{{datname}} read"),
       Q(f"sum by (target, datname) (rate(pgvigil_statement_block_write_seconds_total{{{TD}}}[{RI}]))", "{{datname}} write")),
      unit=units.Seconds, desc="Needs track_io_timing = on; otherwise flat at 0."),
    P("timeseries", "Top 10 statements by WAL",
      (Q(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_wal_bytes_total{{{TD},{OTHER}}}[{RI}])))", "{{datname}} {{queryid}}"),),
      unit=units.BytesPerSecondSI, desc="WAL bytes per second written by each statement: what fills the archive and the replicas' network."),
    Row("pg_stat_statements"),
    P("timeseries", "Entries tracked vs max",
      (Q(f"pgvigil_statements_tracked{{{T}}}", "{{target}} tracked"), Q(f"pgvigil_statements_max{{{T}}}", "{{target}} max")),
      desc="At max, pg_stat_statements evicts the least used entries and statistics get lost."),
    P("timeseries", "Evictions and resets",
      (Q(f"sum by (target) (increase(pgvigil_statements_deallocations_total{{{T}}}[{RI}]))", "{{target}} evicted"),
       Q(f"sum by (target, scope) (increase(pgvigil_statements_resets_total{{{T}}}[{RI}]))", "{{target}} resets ({{scope}})")),
      desc="Entries pg_stat_statements threw away to make room (raise pg_stat_statements.max), and resets of its statistics."),
    P("table", "Statement texts", (Q(f"pgvigil_statement_info{{{T}}}", table=True),), w=24,
      desc="Normalised text of each top-K queryid."),
)

POOLS = (
    Row("PostgreSQL server"),
    P("timeseries", "Server connections by state",
      (Q(f"sum by (target, state) (pgvigil_connections{{{TD}}})", "{{target}} {{state}}"),
       Q(f"pgvigil_connections_max{{{T}}} - pgvigil_connections_reserved{{{T}}}", "{{target}} usable slots")),
      desc="Client backends by state (active, idle, idle in transaction, ...) against the slots clients may use."),
    P("timeseries", "Server connections by application",
      (Q(f"sum by (target, application_name) (pgvigil_connections{{{TD}}})", "{{target}} {{application_name}}"),),
      desc="Client backends by application_name: which application holds the connections."),
    P("timeseries", "Waiting connections by wait event type",
      (Q(f"sum by (target, wait_event_type) (pgvigil_connections_waiting{{{TD}}})", "{{target}} {{wait_event_type}}"),),
      desc="Active connections waiting, mostly on Lock when something holds a lock too long."),
    P("timeseries", "Oldest transactions",
      (Q(f"pgvigil_oldest_transaction_age_seconds{{{T}}}", "{{target}} oldest transaction"),
       Q(f"pgvigil_idle_in_transaction_max_age_seconds{{{T}}}", "{{target}} longest idle in transaction"),
       Q(f"pgvigil_transactions_with_writes_max_age_seconds{{{T}}}", "{{target}} oldest uncommitted write")),
      unit=units.Seconds, steps=above((120, "orange"), (1800, "red")),
      desc="IdleInTransaction fires at 2m idle with writes; LongRunningTransaction at 30m."),
    P("timeseries", "Server processes by type",
      (Q(f"sum by (target, backend_type) (pgvigil_backends{{{T}}})", "{{target}} {{backend_type}}"),),
      desc="Every server process by backend_type: client backends, autovacuum workers, WAL senders, parallel workers."),
    Row("PgBouncer"),
    P("timeseries", "PgBouncer clients by state",
      (Q(f"sum by (target, datname, state) (pgvigil_pgbouncer_clients{{{TD}}})", "{{target}} {{datname}} {{state}}"),),
      desc="Waiting clients are queued for a server connection."),
    P("timeseries", "PgBouncer servers by state",
      (Q(f"sum by (target, datname, state) (pgvigil_pgbouncer_servers{{{TD}}})", "{{target}} {{datname}} {{state}}"),),
      desc="Server connections PgBouncer holds to PostgreSQL, by state: active ones are linked to a client."),
    P("timeseries", "PgBouncer pool use (active servers / pool_size)",
      (Q(f"max without (state) (pgvigil_pgbouncer_servers{{{TD},state=\"active\"}})"
         f" / ignoring (usename) group_left () (pgvigil_pgbouncer_pool_size{{{TD}}} > 0)", "{{target}} {{datname}}/{{usename}}"),),
      unit=units.PercentUnit, steps=above((0.8, "orange"), (1, "red")), desc="PoolSaturated fires at 100% for 5m."),
    P("timeseries", "PgBouncer longest client wait",
      (Q(f"pgvigil_pgbouncer_max_wait_seconds{{{TD}}}", "{{target}} {{datname}}/{{usename}}"),), unit=units.Seconds,
      steps=above((1, "orange"), (10, "red")), desc="PoolMaxWaitHigh fires over 10s."),
    P("timeseries", "PgBouncer client connections vs max_client_conn",
      (Q(f"pgvigil_pgbouncer_client_connections{{{T}}}", "{{target}} clients"),
       Q(f"pgvigil_pgbouncer_max_client_connections{{{T}}}", "{{target}} max_client_conn")),
      desc="At max_client_conn PgBouncer refuses new clients; PoolClientConnectionsNearLimit warns before."),
    P("timeseries", "PgBouncer transactions and average wait",
      (Q(f"sum by (target, datname) (rate(pgvigil_pgbouncer_transactions_total{{{TD}}}[{RI}]))", "{{target}} {{datname}} transactions/s"),
       Q(f"sum by (target, datname) (rate(pgvigil_pgbouncer_client_wait_time_seconds_total{{{TD}}}[{RI}]))", "{{target}} {{datname}} clients waiting (avg)")),
      desc="Transactions per second through each pool, and seconds of client waiting per second (the average number of clients queued)."),
    Row("Application pools (pgvigil-timing)"),
    P("timeseries", "App pool connections by state",
      (Q("sum by (job, db_client_connection_pool_name, db_client_connection_state) (db_client_connection_count)",
         "{{job}} {{db_client_connection_pool_name}} {{db_client_connection_state}}"),
       Q("sum by (job, db_client_connection_pool_name) (db_client_connection_max)", "{{job}} {{db_client_connection_pool_name}} max")),
      desc="From applications instrumented with pgvigil-timing (scrape them too)."),
    P("timeseries", "App pool pending requests",
      (Q("sum by (job, db_client_connection_pool_name) (db_client_connection_pending_requests)", "{{job}} {{db_client_connection_pool_name}}"),),
      steps=above((1, "orange")), desc="Requests waiting for a pooled connection in the application."),
    P("timeseries", "App query latency p95 by statement",
      (Q(f"histogram_quantile(0.95, sum by (job, db_query_summary, le) (rate(db_client_operation_duration_seconds_bucket[{RI}])))",
         "{{job}} {{db_query_summary}}"),), unit=units.Seconds, w=24,
      desc="Latency as the application sees it, pool wait excluded; compare with the server-side mean on the Queries dashboard."),
)

TABLES = (
    Row("Row counts"),
    P("timeseries", "Live rows by table", (Q(f"pgvigil_table_live_rows{{{T}}}", "{{target}} {{datname}} {{table}}"),),
      desc="Estimated live rows (pg_stat_user_tables.n_live_tup) of each watched table."),
    P("timeseries", "Row count change over 5m",
      (Q(f"delta(pgvigil_table_live_rows{{{T}}}[5m])", "{{target}} {{datname}} {{table}}"),),
      desc="A deep negative dip is a mass DELETE or TRUNCATE: TableRowsDropped fires at -50% within a poll."),
    P("timeseries", "Rows written per second",
      (Q(f"sum by (target, datname, table) (rate(pgvigil_table_rows_inserted_total{{{T}}}[{RI}]))", "{{datname}} {{table}} inserted"),
       Q(f"sum by (target, datname, table) (rate(pgvigil_table_rows_updated_total{{{T}}}[{RI}]))", "{{datname}} {{table}} updated"),
       Q(f"sum by (target, datname, table) (rate(pgvigil_table_rows_deleted_total{{{T}}}[{RI}]))", "{{datname}} {{table}} deleted")),
      desc="Rows inserted, updated and deleted per second, committed or not."),
    P("timeseries", "Rolled-back inserts (estimate, 5m)",
      (Q(f"clamp_min(increase(pgvigil_table_rows_inserted_total{{{T}}}[5m]) - clamp_min(delta(pgvigil_table_live_rows{{{T}}}[5m]), 0), 0)",
         "{{target}} {{table}}"),), steps=above((1000, "red")),
      desc="Inserts that did not become live rows: an import that rolled back or never committed. RolledBackInserts fires at 1000 rows."),
    P("timeseries", "Dead rows", (Q(f"pgvigil_table_dead_rows{{{T}}}", "{{target}} {{datname}} {{table}}"),),
      desc="Dead row versions waiting for vacuum; they grow after rolled-back imports and mass updates."),
    P("timeseries", "Table size", (Q(f"pgvigil_table_size_bytes{{{T}}}", "{{target}} {{datname}} {{table}}"),), unit=units.BytesIEC,
      desc="Size of each table with its indexes and TOAST data, as of its last vacuum or analyze."),
    P("table", "Exact row counts", (Q(f"pgvigil_table_exact_rows{{{T}}}", table=True),),
      desc="count(*) of the allow-listed tables ([targets.tables] exact_count)."),
    P("timeseries", "Time since last vacuum or analyze",
      (Q(f"time() - pgvigil_table_last_maintenance_timestamp_seconds{{{T}}}", "{{datname}} {{table}} {{operation}}"),), unit=units.Seconds,
      desc="Age of the last (auto)vacuum and (auto)analyze of each table; stale statistics make the planner guess."),
    Row("Imports"),
    P("timeseries", "Imports by verdict", (Q(f"sum by (target, verdict) (pgvigil_import_verdicts{{{T}}})", "{{target}} {{verdict}}"),),
      desc="shortfall: rows missing after commit; mismatch/surplus: counts disagree; stalled: no heartbeat; aborted: rolled back."),
    P("timeseries", "Rows missing after imports, by table",
      (Q(f"pgvigil_import_missing_rows{{{T}}}", "{{target}} {{datname}} {{table}}"),), steps=above((1, "red")),
      desc="ImportRowShortfall fires from 1 row."),
    P("timeseries", "Imports by audit status", (Q(f"sum by (target, status) (pgvigil_imports{{{T}}})", "{{target}} {{status}}"),),
      desc="Imports in the audit tables by the status the application wrote (running, committed, failed, ...)."),
    P("timeseries", "Time since an import was last verified complete",
      (Q(f"time() - pgvigil_import_last_verified_timestamp_seconds{{{T}}}", "{{target}} {{datname}} {{table}}"),), unit=units.Seconds,
      desc="How long ago pgvigil last re-counted a committed import into each table and found every row."),
    P("stat", "Audit tables read", (Q(f"pgvigil_import_audit_tables{{{T}}}", "{{target}}"),), w=8, h=5,
      desc="0 means no import is checked: create the import_audit table (deploy/sql/import_audit.sql).",
      steps=((None, "orange"), (1, "green"))),
    P("stat", "Tables exported / omitted",
      (Q(f"sum(pgvigil_tables_exported{{{T}}})", "exported"), Q(f"sum(pgvigil_tables_omitted{{{T}}})", "omitted (raise max_tables)")),
      w=8, h=5, desc="Tables with per-table series, and those cut off by [targets.tables] max_tables (smallest first)."),
    P("timeseries", "Exact counts by result",
      (Q(f"sum by (target, result) (rate(pgvigil_table_exact_counts_total{{{T}}}[{RI}]))", "{{target}} {{result}}"),),
      unit=units.OpsPerSecond, w=8, h=5, desc="count(*) runs per second by result; errors and timeouts leave the exact count stale."),
)

def lockqueue() -> tuple[Row | P, ...]:
    """Lock queues (issue 14, part lockqueue): blocked sessions, the longest wait, the root
    blocker's age and the queue behind a strong lock, by database. A function so that a
    "Schema & indexes" dashboard can take the same panels."""
    return (
        Row("Lock queues"),
        P("timeseries", "Blocked sessions, by database",
          (Q(f"max by (target, datname) (pgvigil_lock_blocked_sessions{{{T}}})", "{{target}}/{{datname}}"),), w=12,
          desc="Sessions waiting for a heavyweight lock, by their database. A sudden wall of them is a lock queue: the status page's Blocked sessions tree names its head."),
        P("timeseries", "Longest lock wait, by database",
          (Q(f"max by (target, datname) (pgvigil_lock_blocked_max_wait_seconds{{{T}}})", "{{target}}/{{datname}}"),),
          unit=units.Seconds, w=12, steps=above((60, "red")),
          desc="How long the longest waiter of each database has waited (PostgreSQL 14+)."),
        P("timeseries", "Root blocker transaction age, by database",
          (Q(f"max by (target, datname) (pgvigil_lock_root_blocker_age_seconds{{{T}}})", "{{target}}/{{datname}}"),),
          unit=units.Seconds, w=12,
          desc="The oldest transaction among the sessions at the head of a blocking chain (idle in transaction, a long query, pg_dump): the session to end."),
        P("timeseries", "Sessions queued behind a strong lock",
          (Q(f"max by (target, datname) (pgvigil_lock_queue_sessions{{{T}}})", "{{target}}/{{datname}}"),
           Q(f"max by (target) (pgvigil_lock_chain_max_depth{{{T}}})", "{{target}} chain depth")),
          w=12, steps=above((3, "red")),
          desc="Sessions waiting behind a session that waits for ACCESS EXCLUSIVE, EXCLUSIVE, SHARE ROW EXCLUSIVE or SHARE (a migration's DDL); LockQueue fires at 3. Chain depth 2: readers behind a DDL behind an idle transaction."),
    )


# The server-health layer: role, replication, slots, wraparound, archiver and WAL,
# checkpoints, I/O, locks.
SERVER = (
    Row("Role & uptime"),
    P("stat", "In recovery (standby)", (Q(f"pgvigil_server_in_recovery{{{T}}}", "{{target}}"),), w=6, h=5,
      desc="1: the server is a standby (pg_is_in_recovery()), 0: a primary. RecoveryRoleChanged fires when it flips."),
    P("stat", "Uptime", (Q(f"pgvigil_server_uptime_seconds{{{T}}}", "{{target}}"),), unit=units.Seconds, w=6, h=5,
      desc="Time since the postmaster started; PostgresRestarted fires when the start time changes."),
    P("stat", "Timeline", (Q(f"pgvigil_server_timeline{{{T}}}", "{{target}}"),), w=6, h=5,
      desc="The timeline of the last checkpoint: it goes up at each promotion."),
    P("stat", "Settings pending restart", (Q(f"pgvigil_settings_pending_restart{{{T}}}", "{{target}}"),), w=6, h=5,
      steps=above((1, "orange")), desc="Settings changed in the configuration that take effect only after a restart (SettingsPendingRestart names them)."),
    Row("Replication"),
    P("timeseries", "Replication lag in bytes, by standby",
      (Q(f"max by (target, application_name, stage) (pgvigil_replication_lag_bytes{{{T}}})", "{{target}} {{application_name}} {{stage}}"),),
      unit=units.BytesIEC, w=8, desc="On a primary: WAL not yet sent, written, flushed or replayed by each standby. ReplicationLagHigh fires on it."),
    P("timeseries", "Replication lag in seconds, by standby",
      (Q(f"max by (target, application_name, stage) (pgvigil_replication_lag_seconds{{{T}}})", "{{target}} {{application_name}} {{stage}}"),),
      unit=units.Seconds, w=8, desc="pg_stat_replication write/flush/replay lag; it stays 0 on an idle primary."),
    P("timeseries", "Standby replay lag (watched standbys)",
      (Q(f"pgvigil_standby_replay_lag_seconds{{{T}}}", "{{target}} seconds"),), unit=units.Seconds, w=8,
      desc="On a standby: how far replay is behind what was received; grows while replay is stuck or paused, never on an idle primary."),
    Row("Replication slots"),
    P("timeseries", "WAL retained by slot",
      (Q(f"pgvigil_replication_slot_retained_wal_bytes{{{T}}}", "{{target}} {{slot_name}}"),), unit=units.BytesIEC, w=12,
      desc="WAL a slot keeps on disk for its consumer. ReplicationSlotWalRetentionHigh fires on it, and near wal_status lost."),
    P("timeseries", "Inactive slots",
      (Q(f"sum by (target) (1 - pgvigil_replication_slot_active{{{T}}})", "{{target}}"),), w=12, steps=above((1, "orange")),
      desc="Slots with no consumer connected: they retain WAL (and an xmin) until dropped. ReplicationSlotInactive fires on them."),
    Row("Wraparound"),
    P("timeseries", "Transaction ID age by database",
      (Q(f"pgvigil_database_xid_age{{{T}}}", "{{target}} {{datname}} xid"),
       Q(f"pgvigil_database_mxid_age{{{T}}}", "{{target}} {{datname}} multixact")),
      w=12, steps=above((1e9, "orange"), (1.6e9, "red")),
      desc="age(datfrozenxid) and mxid_age(datminmxid): at 2^31 the server stops writes. WraparoundRisk fires against autovacuum_freeze_max_age and 2^31."),
    P("timeseries", "Who holds the xmin horizon back",
      (Q(f"pgvigil_xmin_horizon_age{{{T}}}", "{{target}} {{holder}}"),), w=12,
      desc="Transactions of age behind the oldest xmin each kind of holder keeps: a backend, a slot, a prepared transaction, a standby's feedback."),
    Row("Archiver & WAL"),
    P("timeseries", "WAL segments archived and failed per minute",
      (Q(f"sum by (target) (rate(pgvigil_archiver_archived_total{{{T}}}[{RI}])) * 60", "{{target}} archived"),
       Q(f"sum by (target) (rate(pgvigil_archiver_failed_total{{{T}}}[{RI}])) * 60", "{{target}} failed")),
      w=8, desc="From pg_stat_archiver. ArchiveFailing fires while the last attempt failed."),
    P("timeseries", "WAL generated per second",
      (Q(f"sum by (target) (rate(pgvigil_wal_bytes_total{{{T}}}[{RI}]))", "{{target}}"),), unit=units.BytesPerSecondSI, w=8,
      desc="Bytes of WAL written (pg_stat_wal, 14+): the write load every standby and the archive must keep up with."),
    P("timeseries", "WAL directory size",
      (Q(f"pgvigil_wal_directory_bytes{{{T}}}", "{{target}}"),), unit=units.BytesIEC, w=8,
      desc="pg_wal on disk (pg_ls_waldir, on its own slow schedule): grows when archiving fails or a slot retains WAL."),
    Row("Checkpoints & background writer"),
    P("timeseries", "Checkpoints per minute",
      (Q(f"sum by (target) (rate(pgvigil_checkpoints_timed_total{{{T}}}[{RI}])) * 60", "{{target}} timed"),
       Q(f"sum by (target) (rate(pgvigil_checkpoints_requested_total{{{T}}}[{RI}])) * 60", "{{target}} requested")),
      w=8, desc="Checkpoints started by checkpoint_timeout (timed) and before it (requested): many requested ones mean max_wal_size is too small for the write load."),
    P("timeseries", "Buffers written per second, by writer",
      (Q(f"sum by (target) (rate(pgvigil_checkpoint_buffers_written_total{{{T}}}[{RI}]))", "{{target}} checkpointer"),
       Q(f"sum by (target) (rate(pgvigil_bgwriter_buffers_written_total{{{T}}}[{RI}]))", "{{target}} background writer")),
      unit=units.OpsPerSecond, w=8,
      desc="Shared buffers written by checkpoints and by the background writer. Backends writing their own buffers show on the I/O row (client backend, op write)."),
    P("timeseries", "Checkpoint write and sync time",
      (Q(f"sum by (target) (rate(pgvigil_checkpoint_write_time_seconds_total{{{T}}}[{RI}]))", "{{target}} write"),
       Q(f"sum by (target) (rate(pgvigil_checkpoint_sync_time_seconds_total{{{T}}}[{RI}]))", "{{target}} sync")),
      unit=units.Seconds, w=8,
      desc="Seconds per second the checkpointer spends writing and fsyncing; a sync time that rises is storage that cannot keep up."),
    Row("I/O (pg_stat_io, PostgreSQL 16+)"),
    P("timeseries", "Reads and buffer hits per second, by backend type",
      (Q(f'sum by (target, backend_type, op) (rate(pgvigil_io_operations_total{{{T},op=~"read|hit"}}[{RI}]))',
         "{{target}} {{backend_type}} {{op}}"),), unit=units.OpsPerSecond, w=8,
      desc="Blocks read from the kernel (read) and found in shared_buffers (hit), by who asked."),
    P("timeseries", "Evictions per second (shared_buffers pressure)",
      (Q(f'sum by (target, backend_type, context) (rate(pgvigil_io_operations_total{{{T},op="eviction"}}[{RI}]))',
         "{{target}} {{backend_type}} {{context}}"),), unit=units.OpsPerSecond, w=8,
      desc="Buffers evicted to make room. Sustained evictions in context normal mean the working set does not fit in shared_buffers."),
    P("timeseries", "I/O bytes per second, by operation",
      (Q(f"sum by (target, object, op) (rate(pgvigil_io_bytes_total{{{T}}}[{RI}]))", "{{target}} {{object}} {{op}}"),),
      unit=units.BytesPerSecondSI, w=8, desc="Bytes read, written and extended, relations and (18+) WAL."),
    Row("Locks"),
    P("stat", "Backends waiting for a lock", (Q(f"pgvigil_lock_waiting_backends{{{T}}}", "{{target}}"),), w=8, h=5,
      steps=above((1, "orange")), desc="Sessions waiting for a heavyweight lock now."),
    P("stat", "Longest lock wait", (Q(f"pgvigil_lock_wait_max_age_seconds{{{T}}}", "{{target}}"),), unit=units.Seconds,
      w=8, h=5, steps=above((60, "red")),
      desc="How long the longest current wait has lasted (PostgreSQL 14+). LockWaitsLong fires at 1m and names the blocker."),
    P("stat", "Blocking sessions", (Q(f"pgvigil_lock_blockers{{{T}}}", "{{target}}"),), w=8, h=5,
      steps=above((1, "orange")), desc="Sessions the longest waiters wait for (pg_blocking_pids)."),
    P("timeseries", "Locks by mode and state",
      (Q(f"sum by (target, mode, state) (pgvigil_locks{{{T}}})", "{{target}} {{mode}} {{state}}"),), w=24,
      desc="Heavyweight locks held (granted) and waited for (waiting), by mode. A waiting AccessExclusiveLock is a DDL queued behind a transaction, with everything else queued behind it."),
    *lockqueue(),
)

SELF = (
    Row("Polling"),
    P("timeseries", "Poll duration p95 by collector",
      (Q(f"histogram_quantile(0.95, sum by (target, collector, le) (rate(pgvigil_poll_duration_seconds_bucket{{{T}}}[{RI}])))",
         "{{target}} {{collector}}"),), unit=units.Seconds,
      desc="How long each collector's queries take; a poll close to its interval means a slow or loaded server."),
    P("timeseries", "Poll errors per second by collector",
      (Q(f"sum by (target, collector) (rate(pgvigil_poll_errors_total{{{T}}}[{RI}]))", "{{target}} {{collector}}"),),
      unit=units.OpsPerSecond, steps=above((0.001, "red")), desc="The status page (/status) says why a collector fails."),
    P("timeseries", "Time since last successful poll",
      (Q(f"time() - pgvigil_last_successful_poll_timestamp_seconds{{{T}}}", "{{target}} {{collector}}"),), unit=units.Seconds,
      desc="Age of the data each collector serves; it climbs while a collector fails or the target is down."),
    P("timeseries", "Connection attempts by result",
      (Q(f"sum by (target, result) (rate(pgvigil_connection_attempts_total{{{T}}}[{RI}]))", "{{target}} {{result}}"),),
      unit=units.OpsPerSecond, desc="Attempts to open the monitoring connection; failures repeat while the target is down."),
    Row("Alerting"),
    P("timeseries", "Alerts held", (Q("sum by (alertname, severity, state) (pgvigil_alerts)", "{{alertname}} {{severity}} {{state}}"),),
      desc="Alerts pgvigil's engine holds, pending or firing."),
    P("timeseries", "Notifications by sink and result",
      (Q(f"sum by (sink, result) (rate(pgvigil_notifications_total[{RI}]))", "{{sink}} {{result}}"),), unit=units.OpsPerSecond,
      desc="failed: an attempt that will be retried."),
    P("timeseries", "Alert observations dropped",
      (Q(f"sum by (target) (rate(pgvigil_alert_observations_dropped_total{{{T}}}[{RI}]))", "{{target}}"),), unit=units.OpsPerSecond,
      steps=above((0.001, "red")), desc="Observations the alert engine could not take in time; anything above 0 can delay alerts."),
    P("table", "pgvigil version", (Q("pgvigil_build_info", table=True),),
      desc="Version and build of each pgvigil instance Prometheus scrapes."),
)



def migrations_panels() -> tuple[P | Row, ...]:
    """The schema guard's migration part: what the migration tools recorded and what unsafe
    migrations left behind (collector `migrations`)."""
    return (
        Row("Migrations"),
        P("table", "Migration version by table", (Q(f"pgvigil_migration_info{{{TD}}}", table=True),),
          desc="The schema version each migration tool recorded last (golang-migrate, Flyway, sqlx; Alembic's heads). The Deploys annotation marks every move."),
        P("stat", "Failed migrations", (Q(f"sum(pgvigil_migration_failed{{{TD}}})", "failed"),), w=6, h=5,
          steps=above((1, "red")),
          desc="golang-migrate dirty, Flyway or sqlx success = false. MigrationFailed fires from 1 and names the tool's fix."),
        P("stat", "Unreadable migration tables", (Q(f"sum(pgvigil_migration_table_problems{{{TD}}})", "problems"),), w=6, h=5,
          steps=above((1, "orange")),
          desc="Migration tables with an unexpected shape, no SELECT grant, or locked by a running migration; the status page names each and its fix."),
        P("timeseries", "Schema changes per hour",
          (Q(f"sum by (target, datname, tool, table) (increase(pgvigil_schema_changes_total{{{TD}}}[1h]))", "{{datname}} {{tool}} {{table}}"),),
          w=12, h=5, desc="Moves of the recorded schema version (deploys) within the last hour."),
        Row("Leftovers of unsafe migrations"),
        P("timeseries", "INVALID indexes and NOT VALID constraints",
          (Q(f"pgvigil_invalid_indexes{{{TD}}}", "{{datname}} INVALID indexes"),
           Q(f"pgvigil_not_valid_constraints{{{TD}}}", "{{datname}} NOT VALID constraints")),
          steps=above((1, "orange")),
          desc="A failed CREATE INDEX CONCURRENTLY leaves an INVALID index (InvalidIndex fires); a constraint added NOT VALID was never checked against existing rows."),
        P("table", "INVALID indexes", (Q(f"pgvigil_invalid_index_size_bytes{{{TD}}}", table=True),), unit=units.BytesIEC,
          desc="Each INVALID index and its size: REINDEX INDEX CONCURRENTLY it, or DROP INDEX CONCURRENTLY and create it again."),
        P("table", "NOT VALID constraints", (Q(f"pgvigil_not_valid_constraint_info{{{TD}}}", table=True),),
          desc="ALTER TABLE ... VALIDATE CONSTRAINT checks the existing rows without blocking writes."),
        P("timeseries", "Index builds and rewrites in progress",
          (Q(f"pgvigil_schema_operation_progress_ratio{{{TD}}}", "{{datname}} {{command}} {{relation}} ({{phase}})"),),
          unit=units.PercentUnit, min=0, max=1,
          desc="CREATE INDEX / REINDEX (pg_stat_progress_create_index) and CLUSTER / VACUUM FULL (pg_stat_progress_cluster), done over total of the current phase."),
    )


def indexes_panels() -> tuple[P | Row, ...]:
    """The schema guard's index-health part (collector `indexes`): unused, duplicate and
    prefix-redundant indexes, foreign keys without an index, sequences running out."""
    return (
        Row("Index health"),
        P("timeseries", "Sequences: share of their range used (10 most used)",
          (Q(f"topk(10, pgvigil_sequence_used_ratio{{{TD}}})", "{{datname}} {{sequence}} {{column}}"),),
          unit=units.PercentUnit, min=0, max=1, steps=above((0.75, "orange"), (0.9, "red")),
          desc="Up to the tighter of the sequence's limit and its column type's (an integer column fed by a bigint sequence ends at 2^31-1). SequenceExhaustion warns at sequence_warning_ratio (0.75) and is critical at sequence_critical_ratio (0.9): ALTER the column (and a serial's sequence) to bigint."),
        P("timeseries", "Index findings, by check",
          (Q(f"sum by (target, datname, check) (pgvigil_index_findings{{{TD}}})", "{{datname}} {{check}}"),),
          desc="Verdicts of the indexes collector per database, including those over max_series; the status page, /api/v1/findings and pgvigil advise list each with the SQL to act on."),
        P("table", "Sequences closest to their limit",
          (Q(f"bottomk(20, pgvigil_sequence_remaining_values{{{TD}}})", table=True),),
          desc="Values each sequence can still hand out before its own limit or its column type's, fewest first. Divide by the insert rate for the time left."),
        P("table", "Unused indexes", (Q(f"pgvigil_index_unused_bytes{{{TD}}}", table=True),), unit=units.BytesIEC,
          desc="No scan over the statistics window (unused_min_window, since stats_reset), enforcing nothing: every write maintains them for no reader. DROP INDEX CONCURRENTLY."),
        P("table", "Duplicate and prefix-redundant indexes", (Q(f"pgvigil_index_redundant_bytes{{{TD}}}", table=True),),
          unit=units.BytesIEC,
          desc="kind duplicate: another index has the same definition; kind prefix: its key columns lead another btree's. The status page names the index kept."),
        P("table", "Foreign keys without an index", (Q(f"pgvigil_foreign_key_unindexed_bytes{{{TD}}}", table=True),),
          unit=units.BytesIEC,
          desc="No valid index leads with the referencing columns: each DELETE or key UPDATE on the referenced table scans this table. CREATE INDEX CONCURRENTLY on the columns."),
        P("stat", "Unreadable sequences", (Q(f"sum(pgvigil_sequences_unreadable{{{TD}}})", "unreadable"),), w=12, h=5,
          steps=above((1, "orange")),
          desc="Sequences whose last value pgvigil's role may not read, so their exhaustion is unknown: GRANT SELECT ON them."),
        P("stat", "Findings without a series (max_series)",
          (Q(f"sum(pgvigil_index_findings_dropped{{{TD}}})", "dropped"),), w=12, h=5, steps=above((1, "orange")),
          desc="Findings past [targets.indexes] max_series per check and database: no series of their own, still on the status page, in the API and pgvigil advise."),
    )


def advice_panels() -> tuple[P | Row, ...]:
    """The schema guard's advice part (collector `advice`): missing indexes for the top
    statements, with the sequential scans that make them matter, and the rulebook lints."""
    return (
        Row("Index advice & rulebook lints"),
        P("table", "Suggested indexes", (Q(f"pgvigil_index_suggestion_info{{{TD}}}", table=True),),
          desc="A top statement (queryid) filters, joins or sorts the table by columns no valid index starts with, and the table is large and sequentially scanned. IndexSuggested (info) carries the CREATE INDEX CONCURRENTLY statement."),
        P("timeseries", "Sequential scans of tables with a suggested index",
          (Q(f"pgvigil_index_suggestion_seq_scans{{{TD}}}", "{{datname}} {{table}} ({{columns}})"),),
          desc="Sequential scans of each suggested index's table between the last two advice runs: the cost the index would save."),
        P("table", "Statement lints", (Q(f"pgvigil_statement_lint_info{{{TD}}}", table=True),),
          desc="Top statements that break the rulebook: select_star (SELECT * or t.*), unbounded_select (no LIMIT on a large table, many rows per call). The Queries dashboard has their text by queryid."),
        P("timeseries", "Top statements the advice read, by outcome",
          (Q(f"sum by (target, datname, outcome) (pgvigil_advice_statements{{{TD}}})", "{{datname}} {{outcome}}"),),
          desc="parsed, or unparsed (a text cut by query_text_length, or syntax the parser does not know): advice covers only the parsed ones."),
        P("stat", "Suggestions and lints over the cap",
          (Q(f"sum(pgvigil_index_suggestions_dropped{{{TD}}})", "suggestions"),
           Q(f"sum(pgvigil_statement_lints_dropped{{{TD}}})", "lints")),
          w=24, h=5, steps=above((1, "orange")),
          desc="Found but not exported because of [targets.advice] max_suggestions / max_lints (the weakest ones)."),
    )


# The schema guard (issue 14): one function per part.
SCHEMA = (
    *migrations_panels(),
    *indexes_panels(),
    *advice_panels(),
)

DASHBOARDS = (
    Dashboard("pgvigil-overview", "pgvigil / Overview", OVERVIEW, True),
    Dashboard("pgvigil-queries", "pgvigil / Queries", QUERIES, True),
    Dashboard("pgvigil-pools", "pgvigil / Connections & pools", POOLS, True),
    Dashboard("pgvigil-tables", "pgvigil / Tables & data integrity", TABLES, False),
    Dashboard("pgvigil-self", "pgvigil / pgvigil itself", SELF, False),
    Dashboard("pgvigil-server", "pgvigil / Server health", SERVER, False),
    Dashboard("pgvigil-schema", "pgvigil / Schema & indexes", SCHEMA, True),
)

# On every dashboard. Grafana marks each sample above 0 of these queries on every graph.
ANNOTATIONS = (
    Annotation("Alerts firing (pgvigil)", 'sum by (alertname, severity) (pgvigil_alerts{state="firing"})',
               title="{{alertname}} firing (pgvigil)", tags=("alertname", "severity"), color="red"),
    Annotation("Alerts firing (Prometheus rules)", f'ALERTS{{alertstate="firing",{T}}}',
               title="{{alertname}} firing on {{target}}", tags=("alertname", "severity", "target"), color="orange"),
    # The number of tables pgvigil sees (exported + cut off by max_tables) changes on CREATE
    # and DROP TABLE; a migration tool's recorded version moves on every deploy.
    Annotation("Schema changes (tables created or dropped)",
               f"changes(pgvigil_tables_exported{{{T}}}[2m]) + changes(pgvigil_tables_omitted{{{T}}}[2m]) > 0",
               title="Tables created or dropped on {{target}}", tags=("target",), color="purple",
               text="The number of tables pgvigil watches (after include/exclude) changed: CREATE, DROP or a rename."),
    Annotation("Deploys (migration version moved)",
               f"sum by (target, datname, tool) (increase(pgvigil_schema_changes_total{{{T}}}[2m])) > 0",
               title="{{tool}} migrated {{datname}} on {{target}}", tags=("target", "datname", "tool"), color="green",
               text="The schema version a migration tool recorded (golang-migrate, Flyway, sqlx, Alembic) moved: a deploy ran its migrations."),
    Annotation("Reconnects (server restart or upgrade)",
               f'sum by (target) (increase(pgvigil_connection_attempts_total{{{T},result="success"}}[2m])) > 0',
               title="pgvigil reconnected to {{target}}", tags=("target",), color="blue",
               text="A new monitoring connection: the server restarted (or was upgraded), the network failed, or pgvigil restarted."),
)
