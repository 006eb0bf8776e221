//! Integration tests of pgvigil-timing against a real PostgreSQL (one binary; see STYLE.md).
//!
//! Every test gets its own database on one cluster shared by the whole binary: a throwaway
//! cluster from `pgvigil-testkit`, or the server named by `PGVIGIL_TEST_DSN`.

mod audit;
mod backends;
mod n_plus_one;
#[cfg(feature = "deadpool")]
mod pool;
mod support;
mod timing;
