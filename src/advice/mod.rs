//! The schema guard's findings and the one-shot `pgvigil advise` report built from them.

pub mod finding;

pub use finding::{Finding, Severity};
