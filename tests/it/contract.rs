//! What users configure is one table: the README's configuration table and
//! the constants of `sqs_worker::config::var`.

/// The variable names `config::var` defines, read from its source.
fn var_constants() -> Vec<String> {
    let source = include_str!("../../crates/sqs-worker-core/src/config.rs");
    let start = source.find("pub mod var {").expect("the var module");
    let end = start + source[start..].find("\n}\n").expect("the var module's end");
    // `pub const NAME: &str = "VALUE";`, on one line or two.
    source[start..end]
        .split("pub const ")
        .skip(1)
        .filter_map(|item| item.split(';').next()?.split('"').nth(1))
        .map(str::to_owned)
        .collect()
}

/// The first column of the README's configuration table.
fn readme_rows(readme: &str) -> Vec<String> {
    let header = "| variable | unit | default | read by | meaning |";
    let start = readme
        .find(header)
        .expect("the README's configuration table");
    readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .map(|c| c.trim().trim_matches('`').to_owned())
        .collect()
}

/// Every variable the code reads has a row in the README's table, and every
/// row is a variable the code reads. The exceptions are named: the renamed
/// variables (listed under the table) and the function name Lambda sets
/// (the default of `SQS_WORKER_SERVICE`, in its row).
#[test]
fn the_readme_configuration_table_is_config_var() {
    let readme = include_str!("../../README.md");
    let rows = readme_rows(readme);
    let constants = var_constants();
    assert!(constants.len() > 30, "read the var module: {constants:?}");
    let renamed = readme
        .split("Renamed, still read for this release")
        .nth(1)
        .and_then(|r| r.split("\n\n").next())
        .expect("the README's list of renamed variables");
    for name in &constants {
        let documented = rows.contains(name)
            || renamed.contains(&format!("`{name}`"))
            || (name == "AWS_LAMBDA_FUNCTION_NAME"
                && readme.contains("the function name (`AWS_LAMBDA_FUNCTION_NAME`)"));
        assert!(
            documented,
            "{name} is read (config::var) but not in the README's configuration table"
        );
    }
    for row in &rows {
        assert!(
            constants.contains(row),
            "{row} is in the README's configuration table but not a config::var constant"
        );
    }
    let mut unique = rows.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), rows.len(), "a variable with two rows");
}
