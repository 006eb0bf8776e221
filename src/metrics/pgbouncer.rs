//! PgBouncer, from its admin console (collectors `pgbouncer_*`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    PGBOUNCER_METRICS;

    // `datname` and `usename` carry PgBouncer's database and user names, under the names
    // pgvigil_connections uses, so a PgBouncer pool and its server connections join on them.

    PGBOUNCER_INFO, Gauge, "pgvigil_pgbouncer_info", ["target", "version"],
        "PgBouncer version of the instance (SHOW VERSION); always 1.";
    PGBOUNCER_CLIENTS, Gauge, "pgvigil_pgbouncer_clients", ["target", "datname", "usename", "state"],
        "Client connections of a PgBouncer pool by state: active (linked to a server or idle), waiting (queued for a server), active_cancel_req, waiting_cancel_req.";
    PGBOUNCER_SERVERS, Gauge, "pgvigil_pgbouncer_servers", ["target", "datname", "usename", "state"],
        "Server connections of a PgBouncer pool by state: active, idle, used, tested, login, active_cancel, being_canceled.";
    PGBOUNCER_MAX_WAIT, Gauge, "pgvigil_pgbouncer_max_wait_seconds", ["target", "datname", "usename"],
        "How long the oldest client waiting in a PgBouncer pool has waited (0 when none wait).";
    PGBOUNCER_TRANSACTIONS, Counter, "pgvigil_pgbouncer_transactions_total", ["target", "datname"],
        "Transactions PgBouncer pooled, by database (SHOW STATS total_xact_count).";
    PGBOUNCER_QUERIES, Counter, "pgvigil_pgbouncer_queries_total", ["target", "datname"],
        "Queries PgBouncer pooled, by database (SHOW STATS total_query_count).";
    PGBOUNCER_RECEIVED_BYTES, Counter, "pgvigil_pgbouncer_received_bytes_total", ["target", "datname"],
        "Bytes PgBouncer received from clients, by database.";
    PGBOUNCER_SENT_BYTES, Counter, "pgvigil_pgbouncer_sent_bytes_total", ["target", "datname"],
        "Bytes PgBouncer sent to clients, by database.";
    PGBOUNCER_XACT_TIME, Counter, "pgvigil_pgbouncer_transaction_time_seconds_total", ["target", "datname"],
        "Time spent in transactions (server connection linked to a client), by database.";
    PGBOUNCER_QUERY_TIME, Counter, "pgvigil_pgbouncer_query_time_seconds_total", ["target", "datname"],
        "Time spent actively running queries on servers, by database.";
    PGBOUNCER_WAIT_TIME, Counter, "pgvigil_pgbouncer_client_wait_time_seconds_total", ["target", "datname"],
        "Time clients spent waiting for a server connection, by database: its rate is the average number of waiting clients.";
    PGBOUNCER_LIST_ITEMS, Gauge, "pgvigil_pgbouncer_list_items", ["target", "list"],
        "Items in PgBouncer's internal lists (SHOW LISTS: databases, users, pools, free_clients, used_clients, login_clients, free_servers, used_servers, dns_*).";
    PGBOUNCER_CLIENT_CONNECTIONS, Gauge, "pgvigil_pgbouncer_client_connections", ["target"],
        "Client connections open to the instance, pgvigil included (SHOW LISTS used_clients): compare with pgvigil_pgbouncer_max_client_connections.";
    PGBOUNCER_MAX_CLIENT_CONN, Gauge, "pgvigil_pgbouncer_max_client_connections", ["target"],
        "The instance's max_client_conn setting.";
    PGBOUNCER_DEFAULT_POOL_SIZE, Gauge, "pgvigil_pgbouncer_default_pool_size", ["target"],
        "The instance's default_pool_size setting.";
    PGBOUNCER_POOL_SIZE, Gauge, "pgvigil_pgbouncer_pool_size", ["target", "datname"],
        "Server connections a PgBouncer pool may open per user (SHOW DATABASES pool_size).";
    PGBOUNCER_DB_MAX_CONNECTIONS, Gauge, "pgvigil_pgbouncer_database_max_connections", ["target", "datname"],
        "Server connections PgBouncer may open to a database over all users (max_db_connections; 0 means no limit).";
    PGBOUNCER_DB_CURRENT_CONNECTIONS, Gauge, "pgvigil_pgbouncer_database_current_connections", ["target", "datname"],
        "Server connections PgBouncer has open to a database over all users.";
    PGBOUNCER_DB_PAUSED, Gauge, "pgvigil_pgbouncer_database_paused", ["target", "datname"],
        "1 if the database is PAUSEd in PgBouncer.";
    PGBOUNCER_DB_DISABLED, Gauge, "pgvigil_pgbouncer_database_disabled", ["target", "datname"],
        "1 if the database is DISABLEd in PgBouncer (new clients are rejected).";
    PGBOUNCER_DB_INFO, Gauge, "pgvigil_pgbouncer_database_info", ["target", "datname", "server_datname", "host", "port"],
        "Where a PgBouncer database points: the server database name, host and port; always 1.";
}
