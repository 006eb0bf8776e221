-- The recommended import audit table (DESIGN.md). pgvigil finds a table named import_audit by
-- itself; other names and column layouts are configured under [targets.imports].
--
-- The application writes it on a separate autocommit connection, so a rolled-back import keeps
-- its audit row, and stamps every imported row with the import id (an `import_id` column in the
-- target table, indexed, so pgvigil's per-import count is an index scan):
--
--   ALTER TABLE contacts ADD COLUMN import_id uuid;
--   CREATE INDEX ON contacts (import_id);
--
-- pgvigil-timing's ImportAudit writes this table (ImportAudit::ensure_table creates it).
CREATE TABLE IF NOT EXISTS import_audit (
  import_id     uuid PRIMARY KEY,
  target_table  regclass NOT NULL,
  id_column     name NOT NULL DEFAULT 'import_id',
  source_name   text NOT NULL,
  expected_rows bigint NOT NULL CHECK (expected_rows >= 0),
  rejected_rows bigint NOT NULL DEFAULT 0,
  skipped_rows  bigint NOT NULL DEFAULT 0,
  reported_rows bigint,
  xact_id       xid8,
  status        text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending','running','committed','failed','cancelled')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz, heartbeat_at timestamptz, finished_at timestamptz,
  error_message text
);

-- pgvigil reads running imports and those finished within its re-check window.
CREATE INDEX IF NOT EXISTS import_audit_recent ON import_audit (coalesce(finished_at, created_at));
