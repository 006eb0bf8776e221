//! What the catalog queries return, as plain data, and the reading of it (the only I/O of
//! the indexes collector besides [`super::Indexes`] itself).

use tokio_postgres::Client;

use super::sql;
use crate::collect::CollectError;

/// One valid index of a user table ([`sql::INDEXES_SQL`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexDef {
    /// pg_index.indexrelid.
    pub oid: u32,
    /// The table's oid.
    pub table_oid: u32,
    /// `schema.index`, quoted where needed.
    pub name: String,
    /// `schema.table`, quoted where needed.
    pub table: String,
    /// Access method (`btree`, `hash`, `gin`, ...).
    pub method: String,
    /// Column numbers: the key columns then the INCLUDE ones; 0 for an expression.
    pub columns: Vec<i16>,
    /// How many of `columns` are key columns.
    pub key_columns: usize,
    /// Operator classes of the key columns.
    pub opclasses: Vec<u32>,
    /// Collations of the key columns.
    pub collations: Vec<u32>,
    /// The expressions' node tree without locations ('' if none).
    pub expressions: String,
    /// The predicate's node tree without locations ('' if not partial).
    pub predicate: String,
    /// UNIQUE.
    pub unique: bool,
    /// PRIMARY KEY.
    pub primary: bool,
    /// An exclusion constraint's.
    pub exclusion: bool,
    /// The constraint it backs, if any.
    pub constraint: Option<String>,
    /// relpages x block_size.
    pub bytes: i64,
    /// Names of `columns` ('' for an expression).
    pub column_names: Vec<String>,
    /// A partition's index attached to its parent's (it cannot be dropped alone).
    pub attached: bool,
}

impl IndexDef {
    /// Whether it enforces something (dropping it would change what the table accepts).
    pub fn enforces(&self) -> bool {
        self.unique || self.primary || self.exclusion || self.constraint.is_some()
    }

    /// The key column names, expressions shown as `(expression)`.
    pub fn key_names(&self) -> Vec<String> {
        self.column_names
            .iter()
            .take(self.key_columns)
            .map(|n| {
                if n.is_empty() {
                    "(expression)".to_owned()
                } else {
                    n.clone()
                }
            })
            .collect()
    }
}

/// One index's scans ([`sql::usage_sql`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexUsage {
    /// pg_stat_user_indexes.indexrelid.
    pub oid: u32,
    /// idx_scan.
    pub scans: i64,
    /// Seconds since last_idx_scan (16+; `None` before 16 or if never scanned).
    pub since_last_scan: Option<f64>,
    /// Seconds since the index's catalog row was committed, when commit timestamps are
    /// tracked.
    pub age: Option<f64>,
}

/// One foreign key ([`sql::FOREIGN_KEYS_SQL`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    /// The referencing table's oid.
    pub table_oid: u32,
    /// The referencing table.
    pub table: String,
    /// The constraint's name.
    pub name: String,
    /// The referenced table.
    pub references: String,
    /// The referencing columns' numbers.
    pub columns: Vec<i16>,
    /// Their names.
    pub column_names: Vec<String>,
    /// The referencing table's size (relpages x block_size).
    pub table_bytes: i64,
    /// Whether the referencing table is partitioned.
    pub partitioned: bool,
}

/// One sequence and the column it feeds ([`sql::SEQUENCES_SQL`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceDef {
    /// `schema.sequence`.
    pub name: String,
    /// The table of the column it feeds, if any.
    pub table: Option<String>,
    /// The column it feeds, if any.
    pub column: Option<String>,
    /// That column's type (`integer`, `bigint`, `numeric`, ...).
    pub column_type: Option<String>,
    /// The sequence's own type (`integer`, `bigint`, `smallint`).
    pub sequence_type: String,
    /// START.
    pub start: i64,
    /// INCREMENT.
    pub increment: i64,
    /// MAXVALUE.
    pub max: i64,
    /// MINVALUE.
    pub min: i64,
    /// CYCLE.
    pub cycle: bool,
    /// The last value handed out (`None`: never used, or not readable).
    pub last_value: Option<i64>,
    /// Whether the role may read it.
    pub readable: bool,
    /// `a` (ALWAYS) or `d` (BY DEFAULT) for an identity column; `None` for any other
    /// (`attidentity` is empty then).
    pub identity: Option<String>,
}

/// Everything one run reads of a database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// Seconds of statistics (since stats_reset, else since the server started).
    pub window: f64,
    /// Whether index ages are known (track_commit_timestamp).
    pub commit_timestamps: bool,
    /// The role pgvigil runs as (for GRANT fixes).
    pub role: String,
    /// Every valid index of a user table.
    pub indexes: Vec<IndexDef>,
    /// Scans per index.
    pub usage: Vec<IndexUsage>,
    /// Foreign keys.
    pub foreign_keys: Vec<ForeignKey>,
    /// Sequences and what they feed.
    pub sequences: Vec<SequenceDef>,
}

impl Catalog {
    /// Read a database's catalog: five queries, each under the session's `statement_timeout`
    /// and `lock_timeout`.
    pub async fn read(client: &Client, version_num: i32) -> Result<Catalog, CollectError> {
        let row = client.query_one(sql::WINDOW_SQL, &[]).await?;
        let mut catalog = Catalog {
            window: row.try_get(0)?,
            commit_timestamps: row.try_get(1)?,
            role: row.try_get(2)?,
            ..Catalog::default()
        };
        for row in client.query(sql::INDEXES_SQL, &[]).await? {
            catalog.indexes.push(IndexDef {
                oid: row.try_get(0)?,
                table_oid: row.try_get(1)?,
                name: row.try_get(2)?,
                table: row.try_get(3)?,
                method: row.try_get(4)?,
                columns: row.try_get(5)?,
                key_columns: row.try_get::<_, i32>(6)?.max(0) as usize,
                opclasses: row.try_get(7)?,
                collations: row.try_get(8)?,
                expressions: row.try_get(9)?,
                predicate: row.try_get(10)?,
                unique: row.try_get(11)?,
                primary: row.try_get(12)?,
                exclusion: row.try_get(13)?,
                constraint: row.try_get(14)?,
                bytes: row.try_get(15)?,
                column_names: row.try_get(16)?,
                attached: row.try_get(17)?,
            });
        }
        let usage = sql::usage_sql(version_num);
        for row in client.query(usage, &[&catalog.commit_timestamps]).await? {
            catalog.usage.push(IndexUsage {
                oid: row.try_get(0)?,
                scans: row.try_get(1)?,
                since_last_scan: row.try_get(2)?,
                age: row.try_get(3)?,
            });
        }
        for row in client.query(sql::FOREIGN_KEYS_SQL, &[]).await? {
            catalog.foreign_keys.push(ForeignKey {
                table_oid: row.try_get(0)?,
                table: row.try_get(1)?,
                name: row.try_get(2)?,
                references: row.try_get(3)?,
                columns: row.try_get(4)?,
                column_names: row.try_get(5)?,
                table_bytes: row.try_get(6)?,
                partitioned: row.try_get(7)?,
            });
        }
        for row in client.query(sql::SEQUENCES_SQL, &[]).await? {
            catalog.sequences.push(SequenceDef {
                name: row.try_get(0)?,
                table: row.try_get(1)?,
                column: row.try_get(2)?,
                column_type: row.try_get(3)?,
                sequence_type: row.try_get(4)?,
                start: row.try_get(5)?,
                increment: row.try_get(6)?,
                max: row.try_get(7)?,
                min: row.try_get(8)?,
                cycle: row.try_get(9)?,
                last_value: row.try_get(10)?,
                readable: row.try_get(11)?,
                identity: row
                    .try_get::<_, Option<String>>(12)?
                    .filter(|i| !i.is_empty()),
            });
        }
        Ok(catalog)
    }
}
