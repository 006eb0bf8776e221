//! The databases of the cluster, as one query over `pg_database` and `pg_stat_database` reads
//! them from any database: which accept connections, which pgvigil's role may enter, and how
//! far their write counters have moved (what tells a changed database from an idle one).

use tokio_postgres::Client;

use super::plan::WriteCounters;
use crate::config::DatabasesConfig;

/// Every database that accepts connections and is not a template, with its write counters.
/// `pg_stat_database` is a cluster-wide view: no per-database session is needed to read it.
const LIST_SQL: &str = "
SELECT d.datname::text,
       has_database_privilege(d.datname, 'CONNECT'),
       (s.tup_inserted + s.tup_updated + s.tup_deleted)::int8,
       extract(epoch FROM s.stats_reset)::float8
  FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
 WHERE d.datallowconn AND NOT d.datistemplate
 ORDER BY 1";

/// One database as listed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Listed {
    /// Its name.
    pub(crate) datname: String,
    /// Whether pgvigil's role has the CONNECT privilege on it.
    pub(crate) may_connect: bool,
    /// Its write counters, if `pg_stat_database` has a row for it yet.
    pub(crate) counters: Option<WriteCounters>,
}

/// Read the list over `client` (a session on any database of the cluster).
pub(crate) async fn list(client: &Client) -> Result<Vec<Listed>, tokio_postgres::Error> {
    let rows = client.query(LIST_SQL, &[]).await?;
    rows.iter()
        .map(|row| {
            let writes: Option<i64> = row.try_get(2)?;
            Ok(Listed {
                datname: row.try_get(0)?,
                may_connect: row.try_get(1)?,
                counters: writes.map(|writes| WriteCounters {
                    writes,
                    stats_reset: row.try_get(3).ok().flatten(),
                }),
            })
        })
        .collect()
}

/// The listed databases `config` selects, in name order.
pub(crate) fn selected<'l>(listed: &'l [Listed], config: &DatabasesConfig) -> Vec<&'l Listed> {
    listed
        .iter()
        .filter(|l| config.selects(&l.datname))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str) -> Listed {
        Listed {
            datname: name.to_owned(),
            may_connect: true,
            counters: None,
        }
    }

    #[test]
    fn the_selection_filters_by_name() {
        let all = [listed("app_eu"), listed("app_test"), listed("postgres")];
        let mut config = DatabasesConfig::every();
        assert_eq!(selected(&all, &config).len(), 3);
        config.selection = crate::config::Selection::Matching {
            include: vec!["app_*".into()],
            exclude: vec!["*_test".into()],
        };
        let names: Vec<&str> = selected(&all, &config)
            .iter()
            .map(|l| l.datname.as_str())
            .collect();
        assert_eq!(names, ["app_eu"]);
        let only = DatabasesConfig::only("postgres");
        assert_eq!(selected(&all, &only)[0].datname, "postgres");
    }
}
