//! Tidy checks: the invariants of ARCHITECTURE.md that a reading of the
//! repository can decide, each one a test whose failure names every
//! offending `file:line`.
//!
//! What is read: every file under the repository root except `.git`, any
//! directory named `target`, and what a `.gitignore` names (build output,
//! installed tools, the examples' generated code, local state). Only the
//! plain names of a `.gitignore` are understood (`name`, `/name`, `name/`,
//! with `*` and `?`), which is all orderflow's hold.
//!
//! The rules, one test each:
//!
//! * Only `orderflow-eventbus` uses async-nats in production code. The
//!   identifier `async_nats` (so `use async_nats`, `async_nats::` paths and
//!   `extern crate`) appears in the code, comments and strings aside, only
//!   under the eventbus's source, under the bench, the nemesis and the
//!   testkit (the bench measures the broker alone; the nemesis reads the
//!   streams as an outside checker; the testkit is test-only), and in any
//!   directory named `tests`. No `Cargo.toml` elsewhere lists `async-nats`
//!   outside `[dev-dependencies]`.
//! * No domain module imports transport or wire types: the code of each
//!   `services/*/src/domain.rs` and of `libs/money/src/` names none of
//!   `tonic`, `async_nats`, `orderflow_proto`, `prost` and
//!   `orderflow_platform` (validation comes from `orderflow-validation`).
//! * Crates depend only downward: a package's `[dependencies]` and
//!   `[build-dependencies]` name only the crates of ours that `CRATE_GRAPH`
//!   (the graph of ARCHITECTURE.md) allows it.
//! * Only libs/platform reads the environment in production code:
//!   `env::var` and its kin, `set_var`, `remove_var` and `dotenvy` appear,
//!   comments and strings aside, only in the files of `ENVIRONMENT_READERS`
//!   (and in the bench, the testkit and `tests` directories).
//! * Every `.rs` file starts with a `//!` header: its first non-empty line.
//! * Nothing cites a file that is not in the repository. Read are whole
//!   markdown files, and the comments of the other files: `//` and `/* */`
//!   in `.rs`, `.proto` and `.ts`; `#` (at a line's start or after a space,
//!   outside quotes) in `.sh`, `.py`, `.toml`, `.yaml`, `.yml`, `.conf`,
//!   `Dockerfile` and scripts that start with `#!`. A citation is
//!   - a markdown link's target that is not a URL (`scheme://`, `mailto:`),
//!     an anchor (`#x`) or a Rust path (`a::b`), and holds a `/` or ends in
//!     a cited extension; it is resolved against the citing file's
//!     directory and names a file or a directory;
//!   - a token made of letters, digits and `_ - . / *` (and `{a,b}`
//!     groups) that holds a `/`, does not start with one, ends in a cited
//!     extension (`CITED_EXTENSIONS`), and does not follow `$`, `:`, `/`,
//!     `@` or `~` (shell variables, URLs, absolute and home paths). It names
//!     a file relative to the citing file's directory or any directory above
//!     it up to the root, and a `.proto` also relative to `proto/` (its import
//!     path). `*` matches within one segment, and every `{a,b}` alternative
//!     must name a file. Exempt are paths through a `target` or
//!     `node_modules` directory (build output) and `google/` protos (the
//!     well-known types, outside by design).
//!
//!   Prose seldom looks like that, so a failure is nearly always a path that
//!   is wrong, and a false one is fixed by writing the path out. The names of the three design notes that once lived outside the
//!   repository are refused in every file, whatever the context
//!   (`FOREIGN_DOCUMENTS`, spelled in pieces so this file does not name them).
//! * A markdown link to an anchor (`page.md#heading`, `#heading`) names a
//!   heading of that page, by GitHub's rule: lower case, spaces to `-`,
//!   everything but letters, digits, `-` and `_` dropped.
//! * No import cycle between the top-level modules of a crate (the files and
//!   directories of its `src/` other than `lib.rs` and `main.rs`). A module
//!   uses another when its code, `#[cfg(test)]` modules aside, names it as
//!   `crate::other`, in a `crate::{…, other, …}` group, or as `super::other`
//!   from the module's top level; the crate root, which declares every
//!   module, is not part of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Extensions of the files a plain token may cite.
const CITED_EXTENSIONS: &[&str] = &[
    "md", "rs", "sh", "py", "toml", "yaml", "yml", "proto", "json", "conf", "ts", "svg", "lock",
    "txt",
];

/// The design notes no file may mention, in pieces (see the module doc).
const FOREIGN_DOCUMENTS: &[(&str, &str)] =
    &[("DESIGN", ".md"), ("STYLE", ".md"), ("JETSTREAM", ".md")];

/// One file of the repository: its path from the root (with `/`), and its
/// text when it is UTF-8.
struct RepoFile {
    path: String,
    text: Option<String>,
}

impl RepoFile {
    fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    fn extension(&self) -> &str {
        match self.name().rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => ext,
            _ => "",
        }
    }

    fn dir(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(dir, _)| dir)
    }

    fn text(&self) -> &str {
        self.text.as_deref().unwrap_or("")
    }
}

/// A `.gitignore` rule: a name (with `*` and `?`), where it applies, and
/// whether it names directories only.
struct Ignore {
    base: String,
    anchored: bool,
    dir_only: bool,
    name: String,
}

impl Ignore {
    fn matches(&self, parent: &str, name: &str, is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        let under = if self.anchored {
            parent == self.base
        } else {
            self.base.is_empty()
                || parent == self.base
                || parent.starts_with(&format!("{}/", self.base))
        };
        under && wildcard(&self.name, name)
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file of the repository, sorted by path.
fn repo_files() -> Vec<RepoFile> {
    let mut files = Vec::new();
    let mut rules = Vec::new();
    walk("", &mut rules, &mut files);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

fn walk(dir: &str, rules: &mut Vec<Ignore>, files: &mut Vec<RepoFile>) {
    let abs = repo().join(dir);
    let rules_before = rules.len();
    if let Ok(text) = fs::read_to_string(abs.join(".gitignore")) {
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let dir_only = line.ends_with('/');
            let line = line.trim_end_matches('/');
            let anchored = line.starts_with('/');
            let name = line.trim_start_matches('/');
            if name.contains('/') {
                // Not a plain name: never used by orderflow's .gitignore files.
                continue;
            }
            rules.push(Ignore {
                base: dir.to_owned(),
                anchored,
                dir_only,
                name: name.to_owned(),
            });
        }
    }
    let mut entries: Vec<_> = match fs::read_dir(&abs) {
        Ok(entries) => entries.filter_map(Result::ok).collect(),
        Err(error) => panic!("cannot read {}: {error}", abs.display()),
    };
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && (name == ".git" || name == "target") {
            continue;
        }
        if name == ".git" || rules.iter().any(|r| r.matches(dir, &name, is_dir)) {
            continue;
        }
        let path = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        if is_dir {
            walk(&path, rules, files);
        } else {
            let text = fs::read(entry.path())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            files.push(RepoFile { path, text });
        }
    }
    rules.truncate(rules_before);
}

/// `*` and `?` matching within one path segment.
fn wildcard(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Which part of a source text a character belongs to.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    Code,
    Comment,
    Literal,
}

/// Classifies every character of C-family source (Rust, protobuf,
/// TypeScript): `//` and nested `/* */` comments, string, raw string and
/// character literals, and the rest, code.
fn c_family_parts(src: &str) -> Vec<Part> {
    let chars: Vec<char> = src.chars().collect();
    let mut parts = vec![Part::Code; chars.len()];
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let part = if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            Part::Comment
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            Part::Comment
        } else if c == 'r'
            && (at(i + 1) == '"' || at(i + 1) == '#')
            && (i == 0
                || !is_ident(chars[i - 1])
                || (chars[i - 1] == 'b' && (i < 2 || !is_ident(chars[i - 2]))))
        {
            let mut hashes = 0;
            let mut j = i + 1;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) != '"' {
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
            Part::Literal
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            Part::Literal
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                Part::Literal
            } else if at(i + 2) == '\'' {
                i += 3;
                Part::Literal
            } else {
                // A lifetime or a label.
                i += 1;
                Part::Code
            }
        } else {
            i += 1;
            Part::Code
        };
        let end = i.min(chars.len());
        for p in &mut parts[start..end] {
            *p = part;
        }
    }
    parts
}

/// `src` with every character outside `keep` blanked (newlines stay, so
/// lines keep their numbers).
fn only(src: &str, parts: &[Part], keep: Part) -> String {
    src.chars()
        .zip(parts)
        .map(|(c, &p)| if c == '\n' || p == keep { c } else { ' ' })
        .collect()
}

/// The code of a Rust file, comments and literals blanked.
fn rust_code(src: &str) -> String {
    only(src, &c_family_parts(src), Part::Code)
}

/// The comments of a `#`-commented file, everything else blanked.
fn hash_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for (n, line) in src.split('\n').enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let (mut single, mut double) = (false, false);
        let mut prev = ' ';
        let mut from = None;
        for (i, c) in line.char_indices() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                '#' if !single && !double && prev.is_whitespace() => {
                    from = Some(i);
                    break;
                }
                _ => {}
            }
            prev = c;
        }
        match from {
            Some(i) => {
                out.extend(line[..i].chars().map(|_| ' '));
                out.push_str(&line[i..]);
            }
            None => out.extend(line.chars().map(|_| ' ')),
        }
    }
    out
}

/// The text of `file` that documents or comments something: all of a
/// markdown file, the comments of source and configuration files, nothing of
/// other files.
fn prose(file: &RepoFile) -> Option<String> {
    let text = file.text.as_deref()?;
    match file.extension() {
        "md" => Some(text.to_owned()),
        "rs" | "proto" | "ts" => Some(only(text, &c_family_parts(text), Part::Comment)),
        "sh" | "py" | "toml" | "yaml" | "yml" | "conf" => Some(hash_comments(text)),
        _ if file.name() == "Dockerfile" || text.starts_with("#!") => Some(hash_comments(text)),
        _ => None,
    }
}

/// Line numbers (from 1) of the whole-word occurrences of `word` in `text`.
fn word_lines(text: &str, word: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(i) = line[from..].find(word).map(|i| i + from) {
            let before = line[..i].chars().next_back();
            let after = line[i + word.len()..].chars().next();
            if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
                lines.push(n + 1);
                break;
            }
            from = i + word.len();
        }
    }
    lines
}

fn fail_with(what: &str, offences: &[String]) {
    assert!(
        offences.is_empty(),
        "{what}:\n  {}\n({} found; the rules are in tests/tidy.rs's header)",
        offences.join("\n  "),
        offences.len()
    );
}

#[test]
fn only_the_eventbus_uses_async_nats_in_production_code() {
    let allowed = |path: &str| {
        path.starts_with("libs/eventbus/src/")
            || path.starts_with("tools/bench/")
            || path.starts_with("tools/nemesis/")
            || path.starts_with("libs/testkit/")
            || path.split('/').any(|segment| segment == "tests")
    };
    let mut offences = Vec::new();
    for file in repo_files() {
        if file.extension() == "rs" && !allowed(&file.path) {
            for line in word_lines(&rust_code(file.text()), "async_nats") {
                offences.push(format!("{}:{line}: async_nats", file.path));
            }
        }
        if file.name() == "Cargo.toml" {
            let package = file.dir();
            if [
                "libs/eventbus",
                "tools/bench",
                "tools/nemesis",
                "libs/testkit",
            ]
            .contains(&package)
            {
                continue;
            }
            let mut section = String::new();
            for (n, line) in file.text().lines().enumerate() {
                let line = line.trim();
                if let Some(header) = line.strip_prefix('[') {
                    section = header.trim_end_matches(']').trim().to_owned();
                    if section.ends_with("dependencies.async-nats")
                        && !section.contains("dev-dependencies")
                        && !section.starts_with("workspace.")
                    {
                        offences.push(format!("{}:{}: [{section}]", file.path, n + 1));
                    }
                    continue;
                }
                let runtime = section == "dependencies"
                    || section == "build-dependencies"
                    || (section.ends_with(".dependencies") && !section.starts_with("workspace."))
                    || section.ends_with(".build-dependencies");
                let key = line.split(['=', '.', ' ']).next().unwrap_or("");
                if runtime && key == "async-nats" {
                    offences.push(format!(
                        "{}:{}: async-nats in [{section}]",
                        file.path,
                        n + 1
                    ));
                }
            }
        }
    }
    fail_with(
        "async-nats used outside libs/eventbus (allowed only there, in tools/bench, tools/nemesis, libs/testkit and tests/ directories)",
        &offences,
    );
}

#[test]
fn domain_modules_import_no_transport_or_wire_types() {
    let domain = |path: &str| {
        path.starts_with("libs/money/src/")
            || (path.starts_with("services/")
                && path.ends_with("/src/domain.rs")
                && path.split('/').count() == 4)
    };
    let mut offences = Vec::new();
    let mut checked = 0;
    for file in repo_files() {
        if file.extension() != "rs" || !domain(&file.path) {
            continue;
        }
        checked += 1;
        let code = rust_code(file.text());
        for word in [
            "tonic",
            "async_nats",
            "orderflow_proto",
            "prost",
            "orderflow_platform",
        ] {
            for line in word_lines(&code, word) {
                offences.push(format!("{}:{line}: {word}", file.path));
            }
        }
    }
    assert!(
        checked >= 3,
        "found only {checked} domain files; did they move?"
    );
    fail_with("a domain module names a transport or wire crate", &offences);
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut offences = Vec::new();
    for file in repo_files() {
        if file.extension() != "rs" {
            continue;
        }
        let first = file
            .text()
            .lines()
            .enumerate()
            .find(|(_, line)| !line.trim().is_empty());
        match first {
            Some((_, line)) if line.starts_with("//!") => {}
            Some((n, line)) => offences.push(format!("{}:{}: {}", file.path, n + 1, line.trim())),
            None => offences.push(format!("{}:1: empty file", file.path)),
        }
    }
    fail_with(
        "a .rs file whose first non-empty line is not a //! header",
        &offences,
    );
}

/// The crates of ours each package may list in `[dependencies]` and
/// `[build-dependencies]` (ARCHITECTURE.md's crate graph); dev-dependencies
/// are free.
const CRATE_GRAPH: &[(&str, &[&str])] = &[
    ("orderflow-proto", &[]),
    ("orderflow-money", &[]),
    ("orderflow-validation", &[]),
    ("orderflow-eventbus", &["orderflow-validation"]),
    (
        "orderflow-platform",
        &[
            "orderflow-eventbus",
            "orderflow-proto",
            "orderflow-validation",
        ],
    ),
    (
        "order-service",
        &[
            "orderflow-eventbus",
            "orderflow-money",
            "orderflow-platform",
            "orderflow-proto",
            "orderflow-validation",
        ],
    ),
    (
        "payment-service",
        &[
            "orderflow-eventbus",
            "orderflow-money",
            "orderflow-platform",
            "orderflow-proto",
        ],
    ),
    (
        "orderflow-testkit",
        &["orderflow-eventbus", "orderflow-proto"],
    ),
    (
        "orderflow-e2e",
        &[
            "order-service",
            "orderflow-platform",
            "orderflow-proto",
            "orderflow-testkit",
            "payment-service",
        ],
    ),
    ("orderflow-bench", &["orderflow-proto"]),
    (
        "orderflow-nemesis",
        &[
            "orderflow-gateway-sim",
            "orderflow-money",
            "orderflow-proto",
        ],
    ),
    // The outside world: payment-service's HTTP gateway knows none of ours.
    ("orderflow-gateway-sim", &[]),
];

#[test]
fn crates_depend_only_downward() {
    let ours: BTreeSet<&str> = CRATE_GRAPH.iter().map(|(name, _)| *name).collect();
    let mut offences = Vec::new();
    let mut packages = 0;
    for file in repo_files().iter().filter(|f| f.name() == "Cargo.toml") {
        let mut section = String::new();
        let mut package = None;
        for (n, line) in file.text().lines().enumerate() {
            let line = line.trim();
            if let Some(header) = line.strip_prefix('[') {
                section = header.trim_end_matches(']').trim().to_owned();
                continue;
            }
            let key = line.split(['=', '.', ' ']).next().unwrap_or("");
            if section == "package" && key == "name" {
                let name = line.split('"').nth(1).unwrap_or("").to_owned();
                if !ours.contains(name.as_str()) {
                    offences.push(format!(
                        "{}:{}: package {name} is not in tests/tidy.rs's CRATE_GRAPH (nor ARCHITECTURE.md's)",
                        file.path,
                        n + 1
                    ));
                }
                package = Some(name);
                packages += 1;
                continue;
            }
            let runtime = section == "dependencies"
                || section == "build-dependencies"
                || (section.ends_with(".dependencies") && !section.starts_with("workspace."))
                || section.ends_with(".build-dependencies");
            let Some(package) = package.as_deref() else {
                continue;
            };
            if !runtime || !ours.contains(key) {
                continue;
            }
            let allowed = CRATE_GRAPH
                .iter()
                .find(|(name, _)| *name == package)
                .is_some_and(|(_, deps)| deps.contains(&key));
            if !allowed {
                offences.push(format!(
                    "{}:{}: {package} depends on {key}",
                    file.path,
                    n + 1
                ));
            }
        }
    }
    assert!(packages >= CRATE_GRAPH.len(), "found {packages} packages");
    fail_with(
        "a crate depends on one of ours that the crate graph does not allow",
        &offences,
    );
}

/// The production files that may read or write the process environment,
/// and why (ARCHITECTURE.md, `libs/platform`).
const ENVIRONMENT_READERS: &[(&str, &str)] = &[
    (
        "libs/platform/src/config.rs",
        "ProcessEnv, the reader of every Var",
    ),
    (
        "libs/platform/src/main_loop.rs",
        "dotenvy, and the probe's address",
    ),
    (
        "libs/platform/src/telemetry.rs",
        "a service.instance.id in OTEL_RESOURCE_ATTRIBUTES",
    ),
    ("build.rs", "cargo's OUT_DIR"),
];

#[test]
fn only_the_platform_configuration_reads_the_environment() {
    let production = |path: &str| {
        !path.starts_with("libs/testkit/")
            && !path.starts_with("tools/bench/")
            && !path.split('/').any(|segment| segment == "tests")
    };
    let mut offences = Vec::new();
    for file in repo_files() {
        if file.extension() != "rs"
            || !production(&file.path)
            || ENVIRONMENT_READERS
                .iter()
                .any(|(path, _)| *path == file.path)
        {
            continue;
        }
        let code = rust_code(file.text());
        for call in [
            "env::var",
            "env::var_os",
            "env::vars",
            "env::vars_os",
            "set_var",
            "remove_var",
            "dotenvy",
        ] {
            for line in word_lines(&code, call) {
                offences.push(format!("{}:{line}: {call}", file.path));
            }
        }
    }
    fail_with(
        "the environment read outside libs/platform's configuration (ENVIRONMENT_READERS)",
        &offences,
    );
}

/// Every file path and every directory path of the repository.
struct Tree {
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
}

impl Tree {
    fn of(files: &[RepoFile]) -> Self {
        let files: BTreeSet<String> = files.iter().map(|f| f.path.clone()).collect();
        let mut dirs = BTreeSet::from([String::new()]);
        for file in &files {
            let mut path = file.as_str();
            while let Some((dir, _)) = path.rsplit_once('/') {
                dirs.insert(dir.to_owned());
                path = dir;
            }
        }
        Tree { files, dirs }
    }

    /// Whether `pattern` (`*` within a segment, `{a,b}` alternatives) names
    /// at least one file for each alternative.
    fn names_files(&self, pattern: &str) -> bool {
        expand_braces(pattern).iter().all(|alternative| {
            if !alternative.contains(['*', '?']) {
                return self.files.contains(alternative);
            }
            let wanted: Vec<&str> = alternative.split('/').collect();
            self.files.iter().any(|file| {
                let segments: Vec<&str> = file.split('/').collect();
                segments.len() == wanted.len()
                    && wanted.iter().zip(&segments).all(|(p, s)| wildcard(p, s))
            })
        })
    }
}

fn expand_braces(pattern: &str) -> Vec<String> {
    match (pattern.find('{'), pattern.find('}')) {
        (Some(open), Some(close)) if open < close => pattern[open + 1..close]
            .split(',')
            .flat_map(|alternative| {
                expand_braces(&format!(
                    "{}{alternative}{}",
                    &pattern[..open],
                    &pattern[close + 1..]
                ))
            })
            .collect(),
        _ => vec![pattern.to_owned()],
    }
}

/// `dir/rel` with `.` and `..` resolved, or `None` when it leaves the
/// repository.
fn join(dir: &str, rel: &str) -> Option<String> {
    let mut segments: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for segment in rel.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            s => segments.push(s),
        }
    }
    Some(segments.join("/"))
}

/// The markdown link targets of one line: `[text](target)`, without any
/// `#anchor`, and the anchor.
fn link_targets(line: &str) -> Vec<(String, Option<String>)> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let end = rest.find([')', ' ', '\t']).unwrap_or(rest.len());
        let target = &rest[..end];
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor.to_owned())),
            None => (target, None),
        };
        if !target.is_empty()
            && !target.contains("://")
            && !target.starts_with("mailto:")
            && !target.contains("::")
        {
            targets.push((path.to_owned(), anchor));
        }
    }
    targets
}

/// The path-like tokens of one line that the citation rule considers.
fn path_tokens(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let plain = |c: char| c.is_alphanumeric() || "_-./*".contains(c);
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !(plain(chars[i]) || chars[i] == '{') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() {
            if plain(chars[i]) {
                i += 1;
            } else if chars[i] == '{' {
                match chars[i..].iter().position(|&c| c == '}') {
                    Some(len)
                        if chars[i..i + len]
                            .iter()
                            .all(|&c| plain(c) || c == ',' || c == '{') =>
                    {
                        i += len + 1;
                    }
                    _ => break,
                }
            } else {
                break;
            }
        }
        if i == start {
            i += 1;
            continue;
        }
        let token: String = chars[start..i].iter().collect();
        let token = token.trim_end_matches('.');
        let before = start.checked_sub(1).map(|b| chars[b]);
        let extension = token
            .rsplit('/')
            .next()
            .and_then(|name| name.rsplit_once('.'))
            .map(|(_, ext)| ext);
        if token.contains('/')
            && !token.starts_with('/')
            && !token.contains("//")
            && !before.is_some_and(|c| "$:/@~".contains(c))
            && extension.is_some_and(|ext| CITED_EXTENSIONS.contains(&ext))
        {
            tokens.push(token.to_owned());
        }
    }
    tokens
}

/// Whether a token cites something outside the rule: build output, or a
/// protobuf import of the well-known types.
fn exempt(token: &str) -> bool {
    token
        .split('/')
        .any(|segment| segment == "target" || segment == "node_modules")
        || (token.starts_with("google/") && token.ends_with(".proto"))
}

#[test]
fn nothing_cites_a_file_that_is_not_in_the_repository() {
    let files = repo_files();
    let tree = Tree::of(&files);
    let mut offences = Vec::new();
    for file in &files {
        if let Some(text) = file.text.as_deref() {
            for (n, line) in text.lines().enumerate() {
                for (stem, ext) in FOREIGN_DOCUMENTS {
                    let name = format!("{stem}{ext}");
                    if !word_lines(line, &name).is_empty() {
                        offences.push(format!(
                            "{}:{}: {name} (not part of the repository)",
                            file.path,
                            n + 1
                        ));
                    }
                }
            }
        }
        let Some(prose) = prose(file) else { continue };
        for (n, line) in prose.lines().enumerate() {
            let at = format!("{}:{}", file.path, n + 1);
            for (target, _) in link_targets(line) {
                let extension = target
                    .rsplit('/')
                    .next()
                    .and_then(|name| name.rsplit_once('.'))
                    .map(|(_, ext)| ext);
                let looks_like_a_path = target.contains('/')
                    || extension.is_some_and(|ext| CITED_EXTENSIONS.contains(&ext));
                if target.is_empty() || !looks_like_a_path || exempt(&target) {
                    continue;
                }
                let found = join(file.dir(), &target).is_some_and(|path| {
                    let path = path.trim_end_matches('/');
                    tree.files.contains(path) || tree.dirs.contains(path)
                });
                if !found {
                    offences.push(format!("{at}: link to {target}"));
                }
            }
            for token in path_tokens(line) {
                if exempt(&token) {
                    continue;
                }
                let mut bases = Vec::new();
                let mut dir = file.dir();
                loop {
                    bases.push(dir);
                    match dir.rsplit_once('/') {
                        Some((parent, _)) => dir = parent,
                        None if !dir.is_empty() => dir = "",
                        None => break,
                    }
                }
                if token.ends_with(".proto") {
                    bases.push("proto");
                }
                let found = bases
                    .iter()
                    .filter_map(|base| join(base, &token))
                    .any(|path| tree.names_files(&path));
                if !found {
                    offences.push(format!("{at}: {token}"));
                }
            }
        }
    }
    fail_with(
        "a document or comment cites a file that is not in the repository",
        &offences,
    );
}

/// GitHub's anchors of a markdown page's headings.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        if fenced {
            continue;
        }
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|&c| c.is_alphanumeric() || c == '-' || c == '_' || c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let count = seen.entry(slug.clone()).or_default();
        anchors.insert(if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    anchors
}

#[test]
fn markdown_anchors_name_existing_headings() {
    let files = repo_files();
    let pages: BTreeMap<&str, BTreeSet<String>> = files
        .iter()
        .filter(|f| f.extension() == "md")
        .map(|f| (f.path.as_str(), anchors(f.text())))
        .collect();
    let mut offences = Vec::new();
    for file in &files {
        let Some(prose) = prose(file) else { continue };
        for (n, line) in prose.lines().enumerate() {
            for (target, anchor) in link_targets(line) {
                let Some(anchor) = anchor else { continue };
                let page = if target.is_empty() {
                    Some(file.path.clone())
                } else {
                    join(file.dir(), &target)
                };
                let Some(headings) = page.as_deref().and_then(|p| pages.get(p)) else {
                    continue;
                };
                if !headings.contains(&anchor) {
                    offences.push(format!("{}:{}: {target}#{anchor}", file.path, n + 1));
                }
            }
        }
    }
    fail_with(
        "a markdown link names a heading its page does not have",
        &offences,
    );
}

/// The `#[cfg(test)] mod name { … }` blocks of `code`, blanked.
fn without_test_modules(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    let starts = |chars: &[char], i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    let skip_space = |chars: &[char], mut i: usize| {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    };
    let attribute = "#[cfg(test)]";
    let mut start = 0;
    while start < chars.len() {
        if !starts(&chars, start, attribute) {
            start += 1;
            continue;
        }
        let mut i = skip_space(&chars, start + attribute.len());
        for visibility in ["pub(crate)", "pub"] {
            if starts(&chars, i, visibility) {
                i = skip_space(&chars, i + visibility.len());
                break;
            }
        }
        let open = chars[i..]
            .iter()
            .position(|&c| c == '{' || c == ';')
            .map(|k| i + k);
        let Some(open) = open.filter(|&o| starts(&chars, i, "mod ") && chars[o] == '{') else {
            start += 1;
            continue;
        };
        let mut depth = 0;
        let mut end = open;
        while end < chars.len() {
            match chars[end] {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            end += 1;
        }
        let end = end.min(chars.len() - 1);
        for c in &mut chars[start..=end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        start = end + 1;
    }
    chars.into_iter().collect()
}

/// The top-level modules named at the start of `rest` (what follows
/// `crate::`): one name, or the first segment of each item of a group.
fn named_modules(rest: &[char]) -> Vec<String> {
    let ident = |chars: &[char]| -> String { chars.iter().take_while(|&&c| is_ident(c)).collect() };
    if rest.first() != Some(&'{') {
        return vec![ident(rest)];
    }
    let mut names = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (i, &c) in rest.iter().enumerate() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    item_start = true;
                }
                continue;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                item_start = true;
                continue;
            }
            c if c.is_whitespace() => continue,
            _ => {}
        }
        if item_start && depth == 1 && is_ident(c) {
            names.push(ident(&rest[i..]));
        }
        item_start = false;
    }
    names
}

/// The modules `code` (a module's file) uses, each with the line of its
/// first use.
fn uses(code: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut line = 1;
    // For each open brace, whether it opens an inline `mod`.
    let mut braces: Vec<bool> = Vec::new();
    let starts = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => line += 1,
            '{' => braces.push(opens_a_module(&chars[..i])),
            '}' => {
                braces.pop();
            }
            _ => {}
        }
        let boundary =
            i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == '$' || chars[i - 1] == ':');
        if boundary && starts(i, "crate::") {
            for name in named_modules(&chars[i + 7..]) {
                found.push((name, line));
            }
            i += 7;
            continue;
        }
        if boundary && starts(i, "super::") {
            let mut supers = 0;
            let mut j = i;
            while starts(j, "super::") {
                supers += 1;
                j += 7;
            }
            let depth = braces.iter().filter(|&&m| m).count();
            if supers > depth {
                for name in named_modules(&chars[j..]) {
                    found.push((name, line));
                }
            }
            i = j;
            continue;
        }
        i += 1;
    }
    found
}

/// Whether the `{` after `before` opens an inline module: `mod name {`.
fn opens_a_module(before: &[char]) -> bool {
    let mut i = before.len();
    let mut word = || {
        while i > 0 && before[i - 1].is_whitespace() {
            i -= 1;
        }
        let end = i;
        while i > 0 && is_ident(before[i - 1]) {
            i -= 1;
        }
        before[i..end].iter().collect::<String>()
    };
    let name = word();
    !name.is_empty() && word() == "mod"
}

/// The import cycles between the top-level modules of each crate, each
/// with the lines that close it.
fn import_cycles(files: &[RepoFile]) -> Vec<String> {
    let crates: Vec<&str> = files
        .iter()
        .filter(|f| f.name() == "Cargo.toml")
        .map(RepoFile::dir)
        .collect();
    let mut cycles = Vec::new();
    for krate in crates {
        let src = if krate.is_empty() {
            "src".to_owned()
        } else {
            format!("{krate}/src")
        };
        let module_of = |path: &str| -> Option<String> {
            let rel = path.strip_prefix(&format!("{src}/"))?;
            let first = rel.split('/').next()?;
            if rel == "lib.rs" || rel == "main.rs" || first == "bin" {
                return None;
            }
            Some(first.trim_end_matches(".rs").to_owned())
        };
        let modules: BTreeSet<String> = files
            .iter()
            .filter(|f| f.extension() == "rs")
            .filter_map(|f| module_of(&f.path))
            .collect();
        // module -> used module -> where (file:line), first use only.
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for file in files.iter().filter(|f| f.extension() == "rs") {
            let Some(module) = module_of(&file.path) else {
                continue;
            };
            let code = without_test_modules(&rust_code(file.text()));
            for (used, line) in uses(&code) {
                if used != module && modules.contains(&used) {
                    edges
                        .entry(module.clone())
                        .or_default()
                        .entry(used)
                        .or_insert_with(|| format!("{}:{line}", file.path));
                }
            }
        }
        for cycle in simple_cycles(&modules, &edges) {
            let mut text = format!("{src}: {} -> {}", cycle.join(" -> "), cycle[0]);
            for (k, from) in cycle.iter().enumerate() {
                let to = &cycle[(k + 1) % cycle.len()];
                text.push_str(&format!("\n      {} ({from} uses {to})", edges[from][to]));
            }
            cycles.push(text);
        }
    }
    cycles
}

/// Every elementary cycle of a small graph, each starting at its smallest
/// node.
fn simple_cycles(
    nodes: &BTreeSet<String>,
    edges: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Vec<String>> {
    fn extend(
        start: &str,
        path: &mut Vec<String>,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        cycles: &mut Vec<Vec<String>>,
    ) {
        let Some(last) = path.last().cloned() else {
            return;
        };
        for next in edges.get(&last).into_iter().flat_map(BTreeMap::keys) {
            if next == start {
                cycles.push(path.clone());
            } else if next.as_str() > start && !path.contains(next) && cycles.len() < 100 {
                path.push(next.clone());
                extend(start, path, edges, cycles);
                path.pop();
            }
        }
    }
    let mut cycles = Vec::new();
    for start in nodes {
        extend(start, &mut vec![start.clone()], edges, &mut cycles);
    }
    cycles
}

#[test]
fn no_import_cycle_between_the_modules_of_a_crate() {
    fail_with(
        "import cycles between the modules of a crate",
        &import_cycles(&repo_files()),
    );
}

/// The graph the cycle check reads must see the edges it is meant to see,
/// or an empty answer would prove nothing.
#[test]
fn the_module_graph_sees_uses_groups_and_super() {
    let code = rust_code(
        "//! x\nuse crate::{a::X, b, c::{d, e}};\nfn f() { crate::f::g(); super::h::i(); }\n\
         mod inner { use super::j; fn k() { super::super::l::m(); } }\n\
         #[cfg(test)]\nmod tests { use crate::n; }\n// crate::o\nconst P: &str = \"crate::p\";\n",
    );
    let code = without_test_modules(&code);
    let names: Vec<(String, usize)> = uses(&code);
    let names: Vec<(&str, usize)> = names.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    assert_eq!(
        names,
        [("a", 2), ("b", 2), ("c", 2), ("f", 3), ("h", 3), ("l", 4)],
        "{code}"
    );
}
