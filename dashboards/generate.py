#!/usr/bin/env python3
"""Generate pgvigil's Grafana dashboards (dashboards/*.json) from the compact panel lists below.

    python3 dashboards/generate.py          # rewrite the JSON files
    python3 dashboards/generate.py --check  # exit 1 if a committed file differs

Standard library only. Every `expr` here is evaluated against a real Prometheus scraping a real
pgvigil by the integration test `operator_kit::live_prometheus_answers_every_dashboard_and_rule`,
and every metric name it uses is checked against pgvigil's metric list.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
T = 'target=~"$target"'
TD = 'target=~"$target",datname=~"$datname"'
RI = "$__rate_interval"


def thresholds(*steps):
    """steps: (value, color) after the base green."""
    out = [{"color": "green", "value": None}]
    out += [{"color": c, "value": v} for v, c in steps]
    return {"mode": "absolute", "steps": out}


def P(kind, title, targets, unit="short", w=12, h=8, desc="", th=None, extra=None, mappings=None):
    """One panel. targets: list of (expr, legend) or (expr, legend, {"instant": True, ...})."""
    return {"kind": kind, "title": title, "targets": targets, "unit": unit, "w": w, "h": h,
            "desc": desc, "th": th, "extra": extra or {}, "mappings": mappings}


def ROW(title):
    return {"kind": "row", "title": title}


UP_MAPPING = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"},
                                            "1": {"text": "UP", "color": "green"}}}]

OVERVIEW = [
    ROW("Health"),
    P("stat", "Targets up", [(f"pgvigil_up{{{T}}}", "{{target}}")], w=8, h=5,
      desc="1 if pgvigil's last poll of the target succeeded. DOWN: see the PgvigilTargetDown runbook.",
      th=thresholds((1, "green")) | {"steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}]},
      mappings=UP_MAPPING),
    P("stat", "Alerts firing (pgvigil)", [('sum(pgvigil_alerts{state="firing"}) or vector(0)', "firing")], w=4, h=5,
      desc="Alerts pgvigil's own engine holds in state firing.", th=thresholds((1, "red"))),
    P("stat", "Rows missing after imports", [(f"sum(pgvigil_import_missing_rows{{{T}}}) or vector(0)", "missing rows")],
      w=4, h=5, desc="Rows missing from tables over confirmed import shortfalls. Anything above 0 is data loss: see the ImportRowShortfall runbook.",
      th=thresholds((1, "red"))),
    P("gauge", "Connection slots used", [(f"pgvigil:connections_used:ratio{{{T}}}", "{{target}}")], unit="percentunit", w=8, h=5,
      desc="Client connections / (max_connections - reserved). ConnectionsNearLimit warns at 80%, critical at 95%.",
      th=thresholds((0.8, "orange"), (0.95, "red")), extra={"min": 0, "max": 1}),
    ROW("Load"),
    P("timeseries", "Connections vs usable limit",
      [(f"sum by (target) (pgvigil_connections{{{T}}})", "{{target}} connections"),
       (f"pgvigil_connections_max{{{T}}} - pgvigil_connections_reserved{{{T}}}", "{{target}} usable slots")],
      desc="Client connections against max_connections minus reserved slots: when the lines meet, new connections are refused."),
    P("timeseries", "Statement time by database",
      [(f"sum by (target, datname) (rate(pgvigil_database_statement_exec_seconds_total{{{TD}}}[{RI}]))", "{{target}}/{{datname}}")],
      unit="s", desc="Seconds of execution per second (average number of busy backends) by database, from pg_stat_statements."),
    P("table", "Top statements by total time",
      [(f"topk(10, sum by (target, datname, queryid) (rate(pgvigil_statement_exec_seconds_total{{{TD}}}[5m])))"
        f" * on (target, queryid) group_left (query) max by (target, queryid, query) (pgvigil_statement_info{{{T}}})",
        "", {"instant": True, "format": "table"})],
      unit="s", w=24, desc="The 10 statements that used the most execution time per second over the last 5 minutes, with their text."),
    ROW("Import health"),
    P("timeseries", "Imports by verdict", [(f"sum by (target, verdict) (pgvigil_import_verdicts{{{T}}})", "{{target}} {{verdict}}")],
      desc="Imports in the re-check window by pgvigil's verdict: shortfall, mismatch, surplus, stalled and aborted need a look."),
    P("timeseries", "Import checks per second by result",
      [(f"sum by (target, result) (rate(pgvigil_import_checks_total{{{T}}}[{RI}]))", "{{target}} {{result}}")], unit="ops",
      desc="Reconciliations of committed imports against their tables, by verdict."),
]

TOPK_BY = "target, datname, queryid"
OTHER = 'queryid!="other"'
QUERIES = [
    ROW("Top statements"),
    P("timeseries", "Top 10 statements by total time",
      [(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_exec_seconds_total{{{TD},{OTHER}}}[{RI}])))", "{{datname}} {{queryid}}")],
      unit="s", desc="Execution seconds per second. The text of a queryid is in the table at the bottom."),
    P("timeseries", "Top 10 statements by calls",
      [(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_calls_total{{{TD},{OTHER}}}[{RI}])))", "{{datname}} {{queryid}}")],
      unit="ops"),
    P("timeseries", "Top 10 statements by mean latency",
      [(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_exec_seconds_total{{{TD},{OTHER}}}[{RI}]))"
        f" / (sum by ({TOPK_BY}) (rate(pgvigil_statement_calls_total{{{TD},{OTHER}}}[{RI}])) > 0))", "{{datname}} {{queryid}}")],
      unit="s", desc="Mean execution time per call. SlowQuery fires at 1s.", th=thresholds((1, "red"))),
    P("timeseries", "Latency regressions (mean now / mean an hour ago)",
      [(f"topk(10, pgvigil:statement_mean_seconds:rate5m{{{TD}}} / (pgvigil:statement_mean_seconds:rate5m{{{TD}}} offset 1h > 0))",
        "{{datname}} {{queryid}}")],
      unit="short", desc="How many times slower each statement is than an hour ago; 5 or more is what the in-daemon SlowQuery regression check flags.",
      th=thresholds((2, "orange"), (5, "red"))),
    P("timeseries", "Rows per second by database",
      [(f"sum by (target, datname) (rate(pgvigil_database_statement_rows_total{{{TD}}}[{RI}]))", "{{target}}/{{datname}}")], unit="short"),
    P("timeseries", "Planning time",
      [(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_plan_seconds_total{{{TD},{OTHER}}}[{RI}])))", "{{datname}} {{queryid}}")],
      unit="s", desc="Needs pg_stat_statements.track_planning = on."),
    ROW("I/O and WAL"),
    P("timeseries", "Shared buffer hit ratio",
      [(f"sum by (target, datname) (rate(pgvigil_statement_shared_blocks_hit_total{{{TD}}}[{RI}]))"
        f" / (sum by (target, datname) (rate(pgvigil_statement_shared_blocks_hit_total{{{TD}}}[{RI}]))"
        f" + sum by (target, datname) (rate(pgvigil_statement_shared_blocks_read_total{{{TD}}}[{RI}])) > 0)", "{{target}}/{{datname}}")],
      unit="percentunit", extra={"min": 0, "max": 1}, th=thresholds() | {"steps": [{"color": "red", "value": None}, {"color": "orange", "value": 0.9}, {"color": "green", "value": 0.99}]}),
    P("timeseries", "Top 10 statements by blocks read",
      [(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_shared_blocks_read_total{{{TD},{OTHER}}}[{RI}])))", "{{datname}} {{queryid}}")],
      unit="short", desc="8 KiB blocks per second not found in shared buffers."),
    P("timeseries", "Blocks dirtied and written",
      [(f"sum by (target, datname) (rate(pgvigil_statement_shared_blocks_dirtied_total{{{TD}}}[{RI}]))", "{{datname}} dirtied"),
       (f"sum by (target, datname) (rate(pgvigil_statement_shared_blocks_written_total{{{TD}}}[{RI}]))", "{{datname}} written")],
      unit="short"),
    P("timeseries", "Temp blocks (work_mem spills)",
      [(f"sum by (target, datname) (rate(pgvigil_statement_temp_blocks_written_total{{{TD}}}[{RI}]))", "{{datname}} written"),
       (f"sum by (target, datname) (rate(pgvigil_statement_temp_blocks_read_total{{{TD}}}[{RI}]))", "{{datname}} read")],
      unit="short", desc="Temporary-file blocks: sorts and hashes that did not fit in work_mem."),
    P("timeseries", "Time in block I/O",
      [(f"sum by (target, datname) (rate(pgvigil_statement_block_read_seconds_total{{{TD}}}[{RI}]))", "{{datname}} read"),
       (f"sum by (target, datname) (rate(pgvigil_statement_block_write_seconds_total{{{TD}}}[{RI}]))", "{{datname}} write")],
      unit="s", desc="Needs track_io_timing = on; otherwise flat at 0."),
    P("timeseries", "Top 10 statements by WAL",
      [(f"topk(10, sum by ({TOPK_BY}) (rate(pgvigil_statement_wal_bytes_total{{{TD},{OTHER}}}[{RI}])))", "{{datname}} {{queryid}}")],
      unit="Bps"),
    ROW("pg_stat_statements"),
    P("timeseries", "Entries tracked vs max",
      [(f"pgvigil_statements_tracked{{{T}}}", "{{target}} tracked"), (f"pgvigil_statements_max{{{T}}}", "{{target}} max")],
      desc="At max, pg_stat_statements evicts the least used entries and statistics get lost."),
    P("timeseries", "Evictions and resets",
      [(f"sum by (target) (increase(pgvigil_statements_deallocations_total{{{T}}}[{RI}]))", "{{target}} evicted"),
       (f"sum by (target, scope) (increase(pgvigil_statements_resets_total{{{T}}}[{RI}]))", "{{target}} resets ({{scope}})")],
      unit="short"),
    P("table", "Statement texts", [(f"pgvigil_statement_info{{{T}}}", "", {"instant": True, "format": "table"})], w=24,
      desc="Normalised text of each top-K queryid."),
]

POOLS = [
    ROW("PostgreSQL server"),
    P("timeseries", "Server connections by state",
      [(f"sum by (target, state) (pgvigil_connections{{{TD}}})", "{{target}} {{state}}"),
       (f"pgvigil_connections_max{{{T}}} - pgvigil_connections_reserved{{{T}}}", "{{target}} usable slots")]),
    P("timeseries", "Server connections by application",
      [(f"sum by (target, application_name) (pgvigil_connections{{{TD}}})", "{{target}} {{application_name}}")]),
    P("timeseries", "Waiting connections by wait event type",
      [(f"sum by (target, wait_event_type) (pgvigil_connections_waiting{{{TD}}})", "{{target}} {{wait_event_type}}")],
      desc="Active connections waiting, mostly on Lock when something holds a lock too long."),
    P("timeseries", "Oldest transactions",
      [(f"pgvigil_oldest_transaction_age_seconds{{{T}}}", "{{target}} oldest transaction"),
       (f"pgvigil_idle_in_transaction_max_age_seconds{{{T}}}", "{{target}} longest idle in transaction"),
       (f"pgvigil_transactions_with_writes_max_age_seconds{{{T}}}", "{{target}} oldest uncommitted write")],
      unit="s", th=thresholds((120, "orange"), (1800, "red")),
      desc="IdleInTransaction fires at 2m idle with writes; LongRunningTransaction at 30m."),
    P("timeseries", "Server processes by type",
      [(f"sum by (target, backend_type) (pgvigil_backends{{{T}}})", "{{target}} {{backend_type}}")]),
    ROW("PgBouncer"),
    P("timeseries", "PgBouncer clients by state",
      [(f"sum by (target, datname, state) (pgvigil_pgbouncer_clients{{{TD}}})", "{{target}} {{datname}} {{state}}")],
      desc="Waiting clients are queued for a server connection."),
    P("timeseries", "PgBouncer servers by state",
      [(f"sum by (target, datname, state) (pgvigil_pgbouncer_servers{{{TD}}})", "{{target}} {{datname}} {{state}}")]),
    P("timeseries", "PgBouncer pool use (active servers / pool_size)",
      [(f"max without (state) (pgvigil_pgbouncer_servers{{{TD},state=\"active\"}})"
        f" / ignoring (usename) group_left () (pgvigil_pgbouncer_pool_size{{{TD}}} > 0)", "{{target}} {{datname}}/{{usename}}")],
      unit="percentunit", th=thresholds((0.8, "orange"), (1, "red")), desc="PoolSaturated fires at 100% for 5m."),
    P("timeseries", "PgBouncer longest client wait",
      [(f"pgvigil_pgbouncer_max_wait_seconds{{{TD}}}", "{{target}} {{datname}}/{{usename}}")], unit="s",
      th=thresholds((1, "orange"), (10, "red")), desc="PoolMaxWaitHigh fires over 10s."),
    P("timeseries", "PgBouncer client connections vs max_client_conn",
      [(f"pgvigil_pgbouncer_client_connections{{{T}}}", "{{target}} clients"),
       (f"pgvigil_pgbouncer_max_client_connections{{{T}}}", "{{target}} max_client_conn")]),
    P("timeseries", "PgBouncer transactions and average wait",
      [(f"sum by (target, datname) (rate(pgvigil_pgbouncer_transactions_total{{{TD}}}[{RI}]))", "{{target}} {{datname}} transactions/s"),
       (f"sum by (target, datname) (rate(pgvigil_pgbouncer_client_wait_time_seconds_total{{{TD}}}[{RI}]))", "{{target}} {{datname}} clients waiting (avg)")],
      unit="short"),
    ROW("Application pools (pgvigil-timing)"),
    P("timeseries", "App pool connections by state",
      [("sum by (job, db_client_connection_pool_name, db_client_connection_state) (db_client_connection_count)",
        "{{job}} {{db_client_connection_pool_name}} {{db_client_connection_state}}"),
       ("sum by (job, db_client_connection_pool_name) (db_client_connection_max)", "{{job}} {{db_client_connection_pool_name}} max")],
      desc="From applications instrumented with pgvigil-timing (scrape them too)."),
    P("timeseries", "App pool pending requests",
      [("sum by (job, db_client_connection_pool_name) (db_client_connection_pending_requests)", "{{job}} {{db_client_connection_pool_name}}")],
      th=thresholds((1, "orange")), desc="Requests waiting for a pooled connection in the application."),
    P("timeseries", "App query latency p95 by statement",
      [(f"histogram_quantile(0.95, sum by (job, db_query_summary, le) (rate(db_client_operation_duration_seconds_bucket[{RI}])))",
        "{{job}} {{db_query_summary}}")], unit="s", w=24,
      desc="Latency as the application sees it, pool wait excluded; compare with the server-side mean on the Queries dashboard."),
]

TABLES = [
    ROW("Row counts"),
    P("timeseries", "Live rows by table", [(f"pgvigil_table_live_rows{{{T}}}", "{{target}} {{table}}")], unit="short"),
    P("timeseries", "Row count change over 5m",
      [(f"delta(pgvigil_table_live_rows{{{T}}}[5m])", "{{target}} {{table}}")], unit="short",
      desc="A deep negative dip is a mass DELETE or TRUNCATE: TableRowsDropped fires at -50% within a poll."),
    P("timeseries", "Rows written per second",
      [(f"sum by (target, table) (rate(pgvigil_table_rows_inserted_total{{{T}}}[{RI}]))", "{{table}} inserted"),
       (f"sum by (target, table) (rate(pgvigil_table_rows_updated_total{{{T}}}[{RI}]))", "{{table}} updated"),
       (f"sum by (target, table) (rate(pgvigil_table_rows_deleted_total{{{T}}}[{RI}]))", "{{table}} deleted")], unit="short"),
    P("timeseries", "Rolled-back inserts (estimate, 5m)",
      [(f"clamp_min(increase(pgvigil_table_rows_inserted_total{{{T}}}[5m]) - clamp_min(delta(pgvigil_table_live_rows{{{T}}}[5m]), 0), 0)",
        "{{target}} {{table}}")], unit="short", th=thresholds((1000, "red")),
      desc="Inserts that did not become live rows: an import that rolled back or never committed. RolledBackInserts fires at 1000 rows."),
    P("timeseries", "Dead rows", [(f"pgvigil_table_dead_rows{{{T}}}", "{{target}} {{table}}")], unit="short"),
    P("timeseries", "Table size", [(f"pgvigil_table_size_bytes{{{T}}}", "{{target}} {{table}}")], unit="bytes"),
    P("table", "Exact row counts", [(f"pgvigil_table_exact_rows{{{T}}}", "", {"instant": True, "format": "table"})], unit="short",
      desc="count(*) of the allow-listed tables ([targets.tables] exact_count)."),
    P("timeseries", "Time since last vacuum or analyze",
      [(f"time() - pgvigil_table_last_maintenance_timestamp_seconds{{{T}}}", "{{table}} {{operation}}")], unit="s"),
    ROW("Imports"),
    P("timeseries", "Imports by verdict", [(f"sum by (target, verdict) (pgvigil_import_verdicts{{{T}}})", "{{target}} {{verdict}}")],
      desc="shortfall: rows missing after commit; mismatch/surplus: counts disagree; stalled: no heartbeat; aborted: rolled back."),
    P("timeseries", "Rows missing after imports, by table",
      [(f"pgvigil_import_missing_rows{{{T}}}", "{{target}} {{table}}")], unit="short", th=thresholds((1, "red")),
      desc="ImportRowShortfall fires from 1 row."),
    P("timeseries", "Imports by audit status", [(f"sum by (target, status) (pgvigil_imports{{{T}}})", "{{target}} {{status}}")]),
    P("timeseries", "Time since an import was last verified complete",
      [(f"time() - pgvigil_import_last_verified_timestamp_seconds{{{T}}}", "{{target}} {{table}}")], unit="s"),
    P("stat", "Audit tables read", [(f"pgvigil_import_audit_tables{{{T}}}", "{{target}}")], w=8, h=5,
      desc="0 means no import is checked: create the import_audit table (deploy/sql/import_audit.sql).",
      th=thresholds() | {"steps": [{"color": "orange", "value": None}, {"color": "green", "value": 1}]}),
    P("stat", "Tables exported / omitted",
      [(f"sum(pgvigil_tables_exported{{{T}}})", "exported"), (f"sum(pgvigil_tables_omitted{{{T}}})", "omitted (raise max_tables)")],
      w=8, h=5),
    P("timeseries", "Exact counts by result",
      [(f"sum by (target, result) (rate(pgvigil_table_exact_counts_total{{{T}}}[{RI}]))", "{{target}} {{result}}")], unit="ops", w=8, h=5),
]

SELF = [
    ROW("Polling"),
    P("timeseries", "Poll duration p95 by collector",
      [(f"histogram_quantile(0.95, sum by (target, collector, le) (rate(pgvigil_poll_duration_seconds_bucket{{{T}}}[{RI}])))",
        "{{target}} {{collector}}")], unit="s"),
    P("timeseries", "Poll errors per second by collector",
      [(f"sum by (target, collector) (rate(pgvigil_poll_errors_total{{{T}}}[{RI}]))", "{{target}} {{collector}}")], unit="ops",
      th=thresholds((0.001, "red")), desc="The status page (/status) says why a collector fails."),
    P("timeseries", "Time since last successful poll",
      [(f"time() - pgvigil_last_successful_poll_timestamp_seconds{{{T}}}", "{{target}} {{collector}}")], unit="s"),
    P("timeseries", "Connection attempts by result",
      [(f"sum by (target, result) (rate(pgvigil_connection_attempts_total{{{T}}}[{RI}]))", "{{target}} {{result}}")], unit="ops"),
    ROW("Alerting"),
    P("timeseries", "Alerts held", [("sum by (alertname, severity, state) (pgvigil_alerts)", "{{alertname}} {{severity}} {{state}}")]),
    P("timeseries", "Notifications by sink and result",
      [("sum by (sink, result) (rate(pgvigil_notifications_total[$__rate_interval]))", "{{sink}} {{result}}")], unit="ops",
      desc="failed: an attempt that will be retried."),
    P("timeseries", "Alert observations dropped",
      [(f"sum by (target) (rate(pgvigil_alert_observations_dropped_total{{{T}}}[{RI}]))", "{{target}}")], unit="ops",
      th=thresholds((0.001, "red"))),
    P("table", "pgvigil version", [("pgvigil_build_info", "", {"instant": True, "format": "table"})]),
]

DASHBOARDS = [
    ("pgvigil-overview", "pgvigil / Overview", OVERVIEW, True),
    ("pgvigil-queries", "pgvigil / Queries", QUERIES, True),
    ("pgvigil-pools", "pgvigil / Connections & pools", POOLS, True),
    ("pgvigil-tables", "pgvigil / Tables & data integrity", TABLES, False),
    ("pgvigil-self", "pgvigil / pgvigil itself", SELF, False),
]

DS = {"type": "prometheus", "uid": "${datasource}"}


def variables(with_datname):
    out = [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
        {"name": "target", "label": "Target", "type": "query", "datasource": DS,
         "query": {"query": "label_values(pgvigil_up, target)", "refId": "target"},
         "definition": "label_values(pgvigil_up, target)", "refresh": 2, "multi": True, "includeAll": True,
         "allValue": ".+", "current": {}, "sort": 1, "hide": 0, "options": [], "regex": ""},
    ]
    if with_datname:
        q = 'label_values(pgvigil_connections{target=~"$target"}, datname)'
        out.append({"name": "datname", "label": "Database", "type": "query", "datasource": DS,
                    "query": {"query": q, "refId": "datname"}, "definition": q, "refresh": 2, "multi": True,
                    "includeAll": True, "allValue": ".+", "current": {}, "sort": 1, "hide": 0, "options": [], "regex": ""})
    return out


def panel_json(p, pid, x, y):
    targets = []
    for i, t in enumerate(p["targets"]):
        expr, legend = t[0], t[1]
        opts = t[2] if len(t) > 2 else {}
        tj = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": chr(ord("A") + i),
              "range": not opts.get("instant", False), "instant": opts.get("instant", False)}
        if "format" in opts:
            tj["format"] = opts["format"]
        targets.append(tj)
    defaults = {"unit": p["unit"], "thresholds": p["th"] or thresholds()}
    defaults.update(p["extra"])
    if p["mappings"]:
        defaults["mappings"] = p["mappings"]
    if p["kind"] == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": False,
                              "thresholdsStyle": {"mode": "line" if p["th"] else "off"}}
        defaults["color"] = {"mode": "palette-classic"}
        options = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["lastNotNull", "max"]},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif p["kind"] == "stat":
        defaults["color"] = {"mode": "thresholds"}
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "background", "graphMode": "none", "textMode": "auto", "orientation": "auto", "justifyMode": "auto"}
    elif p["kind"] == "gauge":
        defaults["color"] = {"mode": "thresholds"}
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "showThresholdMarkers": True, "showThresholdLabels": False}
    else:  # table
        options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    out = {"id": pid, "type": p["kind"], "title": p["title"], "description": p["desc"], "datasource": DS,
           "gridPos": {"h": p["h"], "w": p["w"], "x": x, "y": y}, "targets": targets,
           "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options}
    if p["kind"] == "table":
        out["transformations"] = [{"id": "merge", "options": {}},
                                  {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True, "job": True}}}]
    return out


def dashboard(uid, title, panels, with_datname):
    out, pid, x, y, row_h = [], 1, 0, 0, 0
    for p in panels:
        if p["kind"] == "row":
            if x:
                y, x = y + row_h, 0
            out.append({"id": pid, "type": "row", "title": p["title"], "collapsed": False, "panels": [],
                        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
            pid, y, row_h = pid + 1, y + 1, 0
            continue
        if x + p["w"] > 24:
            y, x, row_h = y + row_h, 0, 0
        out.append(panel_json(p, pid, x, y))
        pid, x, row_h = pid + 1, x + p["w"], max(row_h, p["h"])
    links = [{"type": "dashboards", "tags": ["pgvigil"], "asDropdown": True, "title": "pgvigil", "includeVars": True, "keepTime": True}]
    return {"uid": uid, "title": title, "tags": ["pgvigil", "postgresql"], "timezone": "", "editable": True,
            "graphTooltip": 1, "schemaVersion": 39, "version": 1, "refresh": "30s", "fiscalYearStartMonth": 0,
            "time": {"from": "now-3h", "to": "now"}, "timepicker": {}, "links": links, "liveNow": False,
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                                      "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                                      "type": "dashboard"}]},
            "templating": {"list": variables(with_datname)}, "panels": out}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for uid, title, panels, with_datname in DASHBOARDS:
        text = json.dumps(dashboard(uid, title, panels, with_datname), indent=2, sort_keys=True) + "\n"
        path = os.path.join(HERE, uid.removeprefix("pgvigil-") + ".json")
        if check:
            try:
                with open(path) as f:
                    if f.read() != text:
                        stale.append(path)
            except FileNotFoundError:
                stale.append(path)
        else:
            with open(path, "w") as f:
                f.write(text)
    if stale:
        print("stale, run python3 dashboards/generate.py: " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
