//! docs/configuration.md against the variables each binary reads. `--help`
//! is printed from the same `Var` list the binary parses, so it cannot
//! drift; the doc is written by hand, so this test is what keeps its names
//! and defaults true.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use orderflow_platform::{config::Var, service_config::ServiceConfig};

const DOC: &str = include_str!("../../../docs/configuration.md");
const README: &str = include_str!("../../../README.md");

/// Which binaries a table of the doc speaks for, by its `## ` heading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Both,
    Service(&'static str),
    /// Variables of the scripts, which no binary reads.
    Scripts,
}

/// One table row of the doc whose first cell is a variable's name.
#[derive(Debug)]
struct Row {
    line: usize,
    name: String,
    default: Option<String>,
    scope: Scope,
}

/// Whether `word` looks like an environment variable's name.
fn is_variable_name(word: &str) -> bool {
    word.len() > 1
        && word.contains('_')
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The variable rows of the doc, or every row the test cannot place.
fn doc_rows() -> Result<Vec<Row>, Vec<String>> {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut heading = String::new();
    let mut scope = None;
    for (index, line) in DOC.lines().enumerate() {
        let line_no = index + 1;
        if let Some(title) = line.strip_prefix("## ") {
            heading = title.trim().to_owned();
            scope = match heading.as_str() {
                "Both services" => Some(Scope::Both),
                "order-service" => Some(Scope::Service("order-service")),
                "payment-service" => Some(Scope::Service("payment-service")),
                "Variables of the scripts" => Some(Scope::Scripts),
                _ => None,
            };
            continue;
        }
        let Some(cells) = line.trim().strip_prefix('|') else {
            continue;
        };
        let cells: Vec<&str> = cells.split('|').map(str::trim).collect();
        let Some(name) = cells
            .first()
            .and_then(|c| c.strip_prefix('`'))
            .and_then(|c| c.strip_suffix('`'))
            .filter(|c| is_variable_name(c))
        else {
            continue;
        };
        let Some(scope) = scope else {
            problems.push(format!(
                "docs/configuration.md line {line_no}: `{name}` is in a table under \
                 \"## {heading}\", which says for neither binary; put it under \
                 \"## Both services\", \"## order-service\" or \"## payment-service\""
            ));
            continue;
        };
        // The second column of the scripts' table says who reads a variable.
        let cell = match scope {
            Scope::Scripts => "",
            _ => cells.get(1).copied().unwrap_or_default(),
        };
        let default = match cell.matches('`').count() {
            0 => None,
            2 if cell.starts_with('`') && cell.ends_with('`') => {
                Some(cell.trim_matches('`').to_owned())
            }
            _ => {
                problems.push(format!(
                    "docs/configuration.md line {line_no}: the default of `{name}` is {cell:?}; \
                     write one `value` in backticks, or plain words when there is none"
                ));
                continue;
            }
        };
        rows.push(Row {
            line: line_no,
            name: name.to_owned(),
            default,
            scope,
        });
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

fn shown(default: Option<&str>) -> String {
    default.map_or_else(|| String::from("no default"), |d| format!("`{d}`"))
}

#[test]
fn the_configuration_doc_lists_every_variable_of_each_binary_with_its_default() {
    let rows = doc_rows().unwrap_or_else(|problems| panic!("{}", problems.join("\n")));
    let mut problems = Vec::new();
    check_binary(
        "order-service",
        &order_service::Config::vars(),
        &rows,
        &mut problems,
    );
    check_binary(
        "payment-service",
        &payment_service::Config::vars(),
        &rows,
        &mut problems,
    );
    assert!(
        problems.is_empty(),
        "docs/configuration.md disagrees with the binaries' variables:\n  - {}",
        problems.join("\n  - ")
    );
}

/// What `rows` get wrong about the variables `code` of binary `service`.
fn check_binary(service: &str, code: &[Var], rows: &[Row], problems: &mut Vec<String>) {
    // The rows that speak for this binary, each variable once.
    let mut documented: BTreeMap<&str, &Row> = BTreeMap::new();
    for row in rows {
        match row.scope {
            Scope::Both => {}
            Scope::Service(named) if named == service => {}
            Scope::Scripts => {
                if code.iter().any(|var| var.name == row.name) {
                    problems.push(format!(
                        "docs/configuration.md line {}: `{}` is listed as a script's variable, \
                         but {service} reads it",
                        row.line, row.name
                    ));
                }
                continue;
            }
            Scope::Service(_) => continue,
        }
        if let Some(first) = documented.insert(&row.name, row) {
            problems.push(format!(
                "docs/configuration.md lines {} and {}: `{}` has two rows for {service}",
                first.line, row.line, row.name
            ));
        }
    }

    for var in code {
        match documented.get(var.name) {
            None => problems.push(format!(
                "docs/configuration.md has no row for `{}` ({}), which {service} reads; add it \
                 under \"## Both services\" or \"## {service}\"",
                var.name,
                shown(var.default)
            )),
            Some(row) if row.default.as_deref() != var.default => problems.push(format!(
                "docs/configuration.md line {}: `{}` has {}, but {service} has {}",
                row.line,
                var.name,
                shown(row.default.as_deref()),
                shown(var.default)
            )),
            Some(_) => {}
        }
    }
    for (name, row) in &documented {
        if !code.iter().any(|var| var.name == *name) {
            problems.push(format!(
                "docs/configuration.md line {}: `{name}` is documented for {service}, which does \
                 not read it",
                row.line
            ));
        }
    }
}

#[test]
fn the_readme_names_only_documented_variables() {
    let rows = doc_rows().unwrap_or_else(|problems| panic!("{}", problems.join("\n")));
    let section: Vec<(usize, &str)> = README
        .lines()
        .enumerate()
        .skip_while(|(_, line)| *line != "## Configuration")
        .skip(1)
        .take_while(|(_, line)| !line.starts_with("## "))
        .collect();
    assert!(
        !section.is_empty(),
        "README.md has no \"## Configuration\" section to check"
    );
    // The section's list items name variables; its prose may name other
    // upper-case things (`NOT_SERVING`), so only the items are checked.
    let mut unknown = Vec::new();
    let items = section.into_iter().filter(|(_, line)| {
        let line = line.trim_start();
        line.starts_with("- ") || line.starts_with("* ")
    });
    for (index, line) in items {
        for name in line.split('`').skip(1).step_by(2) {
            if is_variable_name(name) && !rows.iter().any(|row| row.name == name) {
                unknown.push(format!("README.md line {}: `{name}`", index + 1));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "README.md's Configuration section names variables docs/configuration.md does not \
         document:\n  - {}",
        unknown.join("\n  - ")
    );
}
