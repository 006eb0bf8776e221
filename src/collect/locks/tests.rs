use super::*;

fn count(datname: &str, mode: &str, granted: bool, n: i64, wait: Option<f64>) -> LockCount {
    LockCount {
        datname: datname.into(),
        mode: mode.into(),
        granted,
        count: n,
        max_wait_seconds: wait,
    }
}

fn waiter(pid: i32, blocked_by: &[i32], wait: Option<f64>) -> LockWaiter {
    LockWaiter {
        pid,
        datname: String::new(),
        locktype: "relation".into(),
        mode: "AccessExclusiveLock".into(),
        relation: Some("contacts".into()),
        wait_seconds: wait,
        blocked_by: blocked_by.to_vec(),
    }
}

fn session(pid: i32, state: &str) -> LockSession {
    LockSession {
        pid,
        datname: "shop".into(),
        state: state.into(),
        ..LockSession::default()
    }
}

#[test]
fn waiting_locks_are_counted_and_aged() {
    let (snap, report) = summarise(
        vec![
            count("shop", "AccessShareLock", true, 4, None),
            count("shop", "AccessExclusiveLock", false, 1, Some(12.5)),
            count("", "ExclusiveLock", true, 3, None),
            count("", "ShareLock", false, 2, Some(3.0)),
        ],
        Examined {
            waiters: vec![waiter(20, &[10], Some(12.5))],
            sessions: vec![session(20, "active"), session(10, "idle in transaction")],
            ..Examined::default()
        },
        true,
    );
    assert_eq!(snap.get(&metrics::LOCK_WAITING_BACKENDS)[0].value, 3.0);
    assert_eq!(snap.get(&metrics::LOCK_WAIT_MAX_AGE)[0].value, 12.5);
    assert_eq!(snap.get(&metrics::LOCK_BLOCKERS)[0].value, 1.0);
    let waiting: Vec<_> = snap
        .get(&metrics::LOCKS)
        .iter()
        .filter(|s| s.labels[2] == "waiting")
        .map(|s| (s.labels[0].as_str(), s.labels[1].as_str(), s.value))
        .collect();
    assert_eq!(
        waiting,
        [("shop", "AccessExclusiveLock", 1.0), ("", "ShareLock", 2.0)]
    );
    assert_eq!(report.waiting_backends, 3);
    // The waiter takes its session's database.
    assert_eq!(report.waiters[0].datname, "shop");
    assert_eq!(report.sessions[&10].state, "idle in transaction");
}

#[test]
fn nothing_waiting_is_zero_and_13_has_no_age() {
    let counts = || vec![count("shop", "AccessShareLock", true, 1, None)];
    let (snap, report) = summarise(counts(), Examined::default(), true);
    assert_eq!(snap.get(&metrics::LOCK_WAITING_BACKENDS)[0].value, 0.0);
    assert_eq!(snap.get(&metrics::LOCK_WAIT_MAX_AGE)[0].value, 0.0);
    assert_eq!(snap.get(&metrics::LOCK_BLOCKERS)[0].value, 0.0);
    assert!(report.waiters.is_empty() && report.chains.is_empty());
    assert_eq!(snap.get(&metrics::LOCK_CHAIN_MAX_DEPTH)[0].value, 0.0);
    assert!(snap.get(&metrics::LOCK_BLOCKED_SESSIONS).is_empty());
    assert!(snap.get(&metrics::LOCK_QUEUE_SESSIONS).is_empty());
    let (snap, _) = summarise(counts(), Examined::default(), false);
    assert!(snap.get(&metrics::LOCK_WAIT_MAX_AGE).is_empty());
}

#[test]
fn root_blockers_follow_the_queue() {
    // 30 waits for 20 (the ALTER TABLE), which waits for 10 (idle in transaction) and 0 (a
    // prepared transaction); 40 waits for 50, not examined.
    let report = LocksReport {
        waiting_backends: 3,
        waiters: vec![
            waiter(20, &[10, 0], Some(9.0)),
            waiter(30, &[20], Some(5.0)),
            waiter(40, &[50], Some(1.0)),
        ],
        sessions: BTreeMap::new(),
        ..LocksReport::default()
    };
    assert_eq!(report.root_blockers(&report.waiters[1]), [0, 10]);
    assert_eq!(report.root_blockers(&report.waiters[0]), [0, 10]);
    assert_eq!(report.root_blockers(&report.waiters[2]), [50]);
}

#[test]
fn a_cycle_names_its_members() {
    let report = LocksReport {
        waiting_backends: 2,
        waiters: vec![waiter(1, &[2], Some(1.0)), waiter(2, &[1], Some(1.0))],
        sessions: BTreeMap::new(),
        ..LocksReport::default()
    };
    assert_eq!(report.root_blockers(&report.waiters[0]), [2]);
}

#[test]
fn chains_become_bounded_series_by_database() {
    // The migration (20, ACCESS EXCLUSIVE) waits for 10, idle in transaction for 300 s;
    // three readers of shop queue behind it; in crm, 40 waits for a row (ShareLock on a
    // transaction id, not a relation) held by 41.
    let reader = |pid| LockWaiter {
        mode: "AccessShareLock".into(),
        ..waiter(pid, &[20], Some(2.0))
    };
    let row = LockWaiter {
        locktype: "transactionid".into(),
        mode: "ShareLock".into(),
        relation: None,
        ..waiter(40, &[41], Some(1.0))
    };
    let mut idle = session(10, "idle in transaction");
    idle.xact_age_seconds = Some(300.0);
    let mut other = session(41, "active");
    other.datname = "crm".into();
    other.xact_age_seconds = Some(7.0);
    let mut row_session = session(40, "active");
    row_session.datname = "crm".into();
    let blocked = vec![
        BlockedDatabase {
            datname: "shop".into(),
            sessions: 4,
            max_wait_seconds: Some(9.0),
        },
        BlockedDatabase {
            datname: "crm".into(),
            sessions: 1,
            max_wait_seconds: Some(1.0),
        },
    ];
    let mut waiters = vec![waiter(20, &[10], Some(9.0))];
    waiters.extend([31, 32, 33].map(reader));
    waiters.push(row);
    let sessions = vec![session(20, "active"), idle, other, row_session];
    let (snap, report) = summarise(
        vec![],
        Examined {
            blocked: blocked.clone(),
            waiters,
            sessions,
            ..Examined::default()
        },
        true,
    );
    let by_db = |def| -> Vec<(String, f64)> {
        snap.get(def)
            .iter()
            .map(|s| (s.labels[0].clone(), s.value))
            .collect()
    };
    let pairs = |v: &[(&str, f64)]| -> Vec<(String, f64)> {
        v.iter().map(|(d, x)| (d.to_string(), *x)).collect()
    };
    assert_eq!(
        by_db(&metrics::LOCK_BLOCKED_SESSIONS),
        pairs(&[("shop", 4.0), ("crm", 1.0)])
    );
    assert_eq!(
        by_db(&metrics::LOCK_BLOCKED_MAX_WAIT),
        pairs(&[("shop", 9.0), ("crm", 1.0)])
    );
    assert_eq!(
        by_db(&metrics::LOCK_ROOT_BLOCKER_AGE),
        pairs(&[("crm", 7.0), ("shop", 300.0)])
    );
    assert_eq!(
        by_db(&metrics::LOCK_QUEUE_SESSIONS),
        pairs(&[("shop", 3.0)]),
        "a row lock's ShareLock is no DDL queue"
    );
    assert_eq!(snap.get(&metrics::LOCK_CHAIN_MAX_DEPTH)[0].value, 2.0);
    assert_eq!(report.chains.len(), 2);
    assert_eq!(report.chains[0].pid, 10);
    assert_eq!(report.blocked_databases, blocked);
    // PostgreSQL 13: no wait ages.
    let (snap, _) = summarise(
        vec![],
        Examined {
            blocked,
            ..Examined::default()
        },
        false,
    );
    assert!(snap.get(&metrics::LOCK_BLOCKED_MAX_WAIT).is_empty());
    assert_eq!(snap.get(&metrics::LOCK_BLOCKED_SESSIONS).len(), 2);
}

#[test]
fn the_whole_queue_behind_a_ddl_is_counted_and_a_prepared_root_has_an_age() {
    // The migration (20) waits for a prepared transaction (pid 0); 12 readers queue behind it,
    // of which only 3 were examined (the cap), and the queue query saw all 12.
    let reader = |pid| LockWaiter {
        mode: "AccessShareLock".into(),
        ..waiter(pid, &[20], Some(2.0))
    };
    let mut waiters = vec![waiter(20, &[0], Some(9.0))];
    waiters.extend([31, 32, 33].map(reader));
    for w in &mut waiters {
        w.datname = "shop".into();
    }
    let queue: Vec<i32> = (31..43).collect();
    let prepared = PreparedXact {
        gid: "it's-42".into(),
        owner: "app".into(),
        database: "shop".into(),
        age_seconds: Some(600.0),
    };
    let (snap, report) = summarise(
        vec![count("shop", "AccessShareLock", false, 13, Some(9.0))],
        Examined {
            waiters,
            queues: [(20, queue.clone())].into(),
            prepared: vec![prepared.clone()],
            ..Examined::default()
        },
        true,
    );
    assert_eq!(report.queued_behind(20), queue.iter().copied().collect());
    assert_eq!(
        report.queued_behind(31).len(),
        0,
        "readers have nobody behind"
    );
    let shop = |def| -> Vec<(String, f64)> {
        snap.get(def)
            .iter()
            .map(|s| (s.labels[0].clone(), s.value))
            .collect()
    };
    assert_eq!(
        shop(&metrics::LOCK_QUEUE_SESSIONS),
        [("shop".to_owned(), 12.0)]
    );
    assert_eq!(report.chains[0].pid, 0);
    assert_eq!(
        shop(&metrics::LOCK_ROOT_BLOCKER_AGE),
        [("shop".to_owned(), 600.0)],
        "the prepared transaction's age"
    );
    assert_eq!(report.oldest_prepared(), Some(&prepared));
    assert_eq!(
        prepared.fix(),
        "COMMIT PREPARED 'it''s-42'; or ROLLBACK PREPARED 'it''s-42'; (in database shop, as app or a superuser)"
    );
}
