//! Record one import with `ImportAudit`, the way an application does, from the command line.
//!
//! ```text
//! cargo run -p pgvigil-timing --example record_import -- \
//!     --dsn "host=127.0.0.1 user=postgres dbname=app" --table contacts --source contacts.csv \
//!     --expected 3 --rows 3 [--rejected 1] [--skipped 1] [--fail "message"] [--import-id UUID]
//! ```
//!
//! It starts the audit row on an autocommit connection of its own, opens the import transaction
//! on a second connection, attaches it (`xact_id`), inserts `--rows` rows stamped with the import
//! id into `--table` (which needs an `email text` and an `import_id uuid` column), records the
//! rejected and skipped counts, heartbeats, then either commits and finishes with `--rows`
//! reported, or rolls back and fails with `--fail`'s message (in which `\0` stands for a NUL
//! character, which a command line cannot hold). It prints the import id.
//!
//! The Python client's tests run it to check that both writers produce identical rows.

use std::collections::HashMap;

use pgvigil_timing::ImportAudit;
use tokio_postgres::NoTls;
use uuid::Uuid;

type Error = Box<dyn std::error::Error>;

fn args() -> Result<HashMap<String, String>, Error> {
    let mut out = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(key) = it.next() {
        let name = key
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {key:?}; see the example's docs"))?;
        let value = it.next().ok_or_else(|| format!("{key} needs a value"))?;
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}

async fn connect(dsn: &str) -> Result<tokio_postgres::Client, Error> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let a = args()?;
    let get = |k: &str| a.get(k).ok_or_else(|| format!("--{k} is required"));
    let count = |k: &str| -> Result<u64, Error> {
        Ok(a.get(k).map(|v| v.parse()).transpose()?.unwrap_or(0))
    };
    let dsn = get("dsn")?;
    let table = get("table")?;
    let rows = count("rows")?;

    let audit_conn = connect(dsn).await?;
    let mut builder =
        ImportAudit::builder(table.as_str(), get("source")?.as_str(), count("expected")?);
    if let Some(id) = a.get("import-id") {
        builder = builder.import_id(Uuid::parse_str(id)?);
    }
    let mut audit = builder.start(audit_conn).await?;
    let id = audit.import_id();

    let mut db = connect(dsn).await?;
    let tx = db.transaction().await?;
    audit.attach_transaction(&tx).await?;
    let insert = format!(
        "INSERT INTO {table} (email, import_id) \
         SELECT 'rust' || g || '@example.com', $1 FROM generate_series(1, $2::int8) g"
    );
    tx.execute(&insert, &[&id, &(rows as i64)]).await?;
    audit.record_rejected(count("rejected")?);
    audit.record_skipped(count("skipped")?);
    audit.heartbeat().await?;
    match a.get("fail") {
        None => {
            tx.commit().await?;
            audit.finish(rows).await?;
        }
        Some(message) => {
            tx.rollback().await?;
            audit
                .fail_with_message(message.replace("\\0", "\0"))
                .await?;
        }
    }
    println!("{id}");
    Ok(())
}
