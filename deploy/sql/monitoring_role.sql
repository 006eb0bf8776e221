-- The least privilege pgvigil needs. Run as a superuser (or a role with CREATEROLE and the
-- grants below), in each database pgvigil watches; replace the password, or use
-- password_file / dsn_env in pgvigil's config.
--
--   psql -d app -v ON_ERROR_STOP=1 -f deploy/sql/monitoring_role.sql

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgvigil') THEN
    CREATE ROLE pgvigil LOGIN PASSWORD 'change-me' CONNECTION LIMIT 3;
  END IF;
END
$$;

-- What each collector needs is listed in the README's collectors reference (and tested
-- against this file).

-- pg_stat_activity with other users' queries, pg_stat_statements, pg_locks, table statistics.
-- The server-health collectors need nothing more: pending_restart settings (pg_read_all_settings),
-- pg_database_size of every database and pg_stat_replication.backend_xmin (pg_read_all_stats).
GRANT pg_monitor TO pgvigil;

-- Import reconciliation reads the audit table and counts each import's rows in its target table
-- (by the import id column): SELECT ON import_audit, and SELECT ON <import target tables>.
GRANT SELECT ON import_audit TO pgvigil;
-- GRANT SELECT ON contacts TO pgvigil;

-- The migrations collector reads the migration tools' tables it finds (schema_migrations,
-- flyway_schema_history, _sqlx_migrations, alembic_version): SELECT ON <migration tables>.
-- GRANT SELECT ON schema_migrations, flyway_schema_history TO pgvigil;

-- Exact counts ([targets.tables] exact_count_tables) need SELECT ON <exact_count_tables> too.
-- GRANT SELECT ON orders, invoices TO pgvigil;

-- pgvigil never writes. To make that a guarantee, not a promise:
ALTER ROLE pgvigil SET default_transaction_read_only = on;
