//! The SQL of the locks collector, per server version: `pg_locks.waitstart` exists from
//! PostgreSQL 14 on; on 13 the wait ages are NULL (absent series) and waiters are examined in
//! pid order instead of longest first.

/// Waiters examined with `pg_blocking_pids` in one poll, longest first: each call takes the
/// lock manager's partition locks, so a pile-up of hundreds of waiters is not made worse by
/// asking about every one of them.
pub const MAX_EXAMINED_WAITERS: i64 = 10;

/// Longest query text kept per session (for alert annotations).
pub const QUERY_TEXT_LIMIT: i32 = 300;

/// Whether the server's `pg_locks` has `waitstart`.
pub fn has_waitstart(version_num: i32) -> bool {
    version_num >= 140000
}

/// Locks by database, mode and granted, with the longest wait of each group; pgvigil's own
/// sessions (`$1`) left out. Locks of prepared transactions have no pid and are counted.
pub fn counts_sql(version_num: i32) -> String {
    let wait = if has_waitstart(version_num) {
        "max(extract(epoch FROM clock_timestamp() - l.waitstart))::float8"
    } else {
        "NULL::float8"
    };
    format!(
        "SELECT coalesce(d.datname::text, ''), l.mode, l.granted, count(*)::int8, {wait}
  FROM pg_locks l LEFT JOIN pg_database d ON d.oid = l.database
 WHERE l.pid IS NULL OR NOT l.pid = ANY($1)
 GROUP BY 1, 2, 3"
    )
}

/// Waiting backends by the database of their session (of the lock if the session is gone),
/// with the longest wait; pgvigil's own sessions (`$1`) left out. Every waiter, not only the
/// examined ones, and no `pg_blocking_pids`.
pub fn blocked_sql(version_num: i32) -> String {
    let wait = if has_waitstart(version_num) {
        "max(extract(epoch FROM clock_timestamp() - l.waitstart))::float8"
    } else {
        "NULL::float8"
    };
    format!(
        "SELECT coalesce(a.datname::text, d.datname::text, ''), count(DISTINCT l.pid)::int8, {wait}
  FROM pg_locks l
  LEFT JOIN pg_stat_activity a ON a.pid = l.pid
  LEFT JOIN pg_database d ON d.oid = l.database
 WHERE NOT l.granted AND l.pid IS NOT NULL AND NOT l.pid = ANY($1)
 GROUP BY 1"
    )
}

/// The longest waiters (at most `$1`), what they wait for, and who blocks them. The relation
/// is named when it is in the connected database (`regclass` resolves names there only, from
/// the catalog cache, without a lock), else shown as its oid. The LIMIT sits in a subquery so
/// that `pg_blocking_pids` runs for the examined waiters only.
pub fn waiters_sql(version_num: i32) -> String {
    let (wait, order) = if has_waitstart(version_num) {
        (
            "extract(epoch FROM clock_timestamp() - w.waitstart)::float8",
            "waitstart NULLS LAST, pid",
        )
    } else {
        ("NULL::float8", "pid")
    };
    format!(
        "SELECT w.pid, coalesce(d.datname::text, ''), w.locktype, w.mode,
       CASE WHEN w.relation IS NULL THEN NULL
            WHEN d.datname = current_database() THEN w.relation::regclass::text
            ELSE 'oid ' || w.relation::text END,
       {wait},
       pg_blocking_pids(w.pid)
  FROM (SELECT * FROM pg_locks
         WHERE NOT granted AND pid IS NOT NULL
         ORDER BY {order}
         LIMIT $1) w
  LEFT JOIN pg_database d ON d.oid = w.database"
    )
}

/// The whole queue behind each examined waiter for a strong lock (`$1`: their pids): the
/// other backends waiting for a lock on the same relation that began waiting after it (on 14+;
/// a NULL `waitstart` has just begun), or on 13, which records no wait start, every other
/// backend waiting on that relation. PostgreSQL queues a lock request behind a conflicting
/// earlier one, and a strong mode conflicts with what the application asks for, so these are
/// the sessions stuck behind the DDL, however many: one pass over `pg_locks`, no
/// `pg_blocking_pids`, so the queue is counted exactly while only
/// [`MAX_EXAMINED_WAITERS`] are examined. The pids come back as one array per waiter.
pub fn queues_sql(version_num: i32) -> String {
    let (waitstart, after) = if has_waitstart(version_num) {
        (
            "waitstart",
            " AND (q.waitstart IS NULL OR q.waitstart > w.waitstart)",
        )
    } else {
        ("NULL::timestamptz AS waitstart", "")
    };
    format!(
        "WITH l AS MATERIALIZED (
  SELECT pid, database, relation, {waitstart} FROM pg_locks
   WHERE NOT granted AND locktype = 'relation' AND pid IS NOT NULL)
SELECT w.pid, array_agg(DISTINCT q.pid)
  FROM l w
  JOIN l q ON q.database = w.database AND q.relation = w.relation AND q.pid <> w.pid{after}
 WHERE w.pid = ANY($1)
 GROUP BY w.pid"
    )
}

/// The prepared transactions holding a lock that an examined waiter (`$1`: those blocked by
/// pid 0) waits for, oldest first. A prepared transaction's locks have no pid; they are told
/// apart by their `virtualtransaction`, found through the lock on its own transaction id
/// (the format of `virtualtransaction` differs between versions, so it is only compared).
/// The waiter's lock tag is matched against them, and the transaction named from
/// `pg_prepared_xacts` (its `gid`, owner, database and when it was prepared): it has no
/// session to show, and only `COMMIT PREPARED` or `ROLLBACK PREPARED` with its gid ends it.
pub const PREPARED_SQL: &str = "
WITH l AS MATERIALIZED (SELECT * FROM pg_locks)
SELECT p.gid, p.owner::text, p.database::text,
       extract(epoch FROM clock_timestamp() - p.prepared)::float8
  FROM pg_prepared_xacts p
  JOIN l x ON x.pid IS NULL AND x.locktype = 'transactionid' AND x.transactionid = p.transaction
 WHERE EXISTS (
   SELECT 1 FROM l w JOIN l h
       ON h.pid IS NULL AND h.granted AND h.virtualtransaction = x.virtualtransaction
      AND h.locktype = w.locktype
      AND h.database IS NOT DISTINCT FROM w.database AND h.relation IS NOT DISTINCT FROM w.relation
      AND h.page IS NOT DISTINCT FROM w.page AND h.tuple IS NOT DISTINCT FROM w.tuple
      AND h.virtualxid IS NOT DISTINCT FROM w.virtualxid
      AND h.transactionid IS NOT DISTINCT FROM w.transactionid
      AND h.classid IS NOT DISTINCT FROM w.classid AND h.objid IS NOT DISTINCT FROM w.objid
      AND h.objsubid IS NOT DISTINCT FROM w.objsubid
    WHERE NOT w.granted AND w.pid = ANY($1))
 ORDER BY p.prepared";

/// The sessions of the examined waiters and their blockers (`$1`), for the alert's text.
pub const SESSIONS_SQL: &str = "
SELECT pid,
       coalesce(datname::text, ''),
       coalesce(usename::text, ''),
       coalesce(application_name, ''),
       coalesce(state, ''),
       extract(epoch FROM clock_timestamp() - xact_start)::float8,
       left(query, $2)
  FROM pg_stat_activity
 WHERE pid = ANY($1)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waitstart_only_from_14() {
        assert!(!counts_sql(130022).contains("waitstart"));
        assert!(counts_sql(140000).contains("l.waitstart"));
        let w13 = waiters_sql(130022);
        assert!(
            !w13.contains("waitstart") && w13.contains("ORDER BY pid"),
            "{w13}"
        );
        let w18 = waiters_sql(180004);
        assert!(w18.contains("ORDER BY waitstart NULLS LAST"), "{w18}");
        assert!(w18.contains("pg_blocking_pids(w.pid)"), "{w18}");
        assert!(!blocked_sql(130022).contains("waitstart"));
        assert!(blocked_sql(140000).contains("l.waitstart"));
        assert!(!blocked_sql(180004).contains("pg_blocking_pids"));
        let q13 = queues_sql(130022);
        assert!(q13.contains("NULL::timestamptz AS waitstart") && !q13.contains("w.waitstart"));
        let q18 = queues_sql(180004);
        assert!(q18.contains("q.waitstart > w.waitstart"), "{q18}");
        assert!(!q18.contains("pg_blocking_pids"), "{q18}");
    }
}
