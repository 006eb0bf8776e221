//! Test support: the README's generated tables (metrics, alert rules) must match the code.

/// Assert that the README block between `<!-- {name}:start -->` and `<!-- {name}:end -->` is
/// `expected`; with `PGVIGIL_BLESS=1` set, rewrite it instead.
pub(crate) fn assert_generated_block(name: &str, expected: &str, source: &str) {
    let start_marker = format!("<!-- {name}:start -->\n");
    let end_marker = format!("<!-- {name}:end -->");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let start = readme
        .find(&start_marker)
        .unwrap_or_else(|| panic!("README lacks the {name} start marker"))
        + start_marker.len();
    let end = readme
        .find(&end_marker)
        .unwrap_or_else(|| panic!("README lacks the {name} end marker"));
    if readme[start..end] == *expected {
        return;
    }
    if std::env::var_os("PGVIGIL_BLESS").is_some() {
        let updated = format!("{}{expected}{}", &readme[..start], &readme[end..]);
        std::fs::write(path, updated).expect("rewrite README.md");
        return;
    }
    panic!(
        "README.md's {name} is out of date with {source}; rerun this test with PGVIGIL_BLESS=1 to rewrite it"
    );
}
