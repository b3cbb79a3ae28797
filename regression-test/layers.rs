//! The map kept true: the layer rules of `doc/ARCHITECTURE.md`, read from
//! the paths `src/` names (`crate::…`), directly and through any chain of
//! modules; the metadata SQL only in `store`; HTTP served only by `api`,
//! the agent and the minder's parties; every file of `src/` placed in the
//! codemap, no file over 800 lines and no function of the data path over
//! 110. No server needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

/// The longest a function of the data path (`change`, `source`, `dest`,
/// `sync`) may be, its tests aside.
const MAX_FN_LINES: usize = 110;
const DATA_PATH: &[&str] = &["change", "source", "dest", "sync"];

/// For each layer (the top module a file is in), the top modules it must
/// never name directly, beyond what [`DEEP_RULES`] forbids through any
/// chain (which covers the foundation, `source`, `dest` and `sync`).
const RULES: &[(&str, &[&str])] = &[
    // The control plane knows no HTTP.
    ("job", &["api", "app"]),
    ("store", &["api", "app", "sync", "source", "dest"]),
    ("group", &["api", "app", "sync", "source", "dest"]),
    // The Galera minder is a program of its own beside the CCR service.
    ("cluster", &["job", "api", "app", "minder", "agent", "ctl"]),
    (
        "agent",
        &[
            "job", "api", "app", "minder", "cluster", "group", "store", "ctl",
        ],
    ),
    (
        "minder",
        &[
            "job",
            "sync",
            "source",
            "dest",
            "api",
            "store",
            "group",
            "app",
            "preflight",
        ],
    ),
];

const ABOVE_FOUNDATION: &[&str] = &[
    "source",
    "dest",
    "sync",
    "job",
    "api",
    "store",
    "group",
    "app",
    "preflight",
    "ctl",
];

/// For each layer, the top modules it must not reach through any chain of
/// modules (a path `sync → x → job` breaks `sync`'s rule as much as
/// `sync → job`).
const DEEP_RULES: &[(&str, &[&str])] = &[
    ("change", ABOVE_FOUNDATION),
    ("position", ABOVE_FOUNDATION),
    ("error", ABOVE_FOUNDATION),
    ("db", ABOVE_FOUNDATION),
    ("tls", ABOVE_FOUNDATION),
    ("secret", ABOVE_FOUNDATION),
    ("redact", ABOVE_FOUNDATION),
    ("hostmap", ABOVE_FOUNDATION),
    ("fields", ABOVE_FOUNDATION),
    ("protocol", ABOVE_FOUNDATION),
    (
        "source",
        &[
            "dest",
            "sync",
            "job",
            "api",
            "store",
            "group",
            "app",
            "preflight",
            "cluster",
            "metrics",
        ],
    ),
    (
        "dest",
        &[
            "source",
            "sync",
            "job",
            "api",
            "store",
            "group",
            "app",
            "preflight",
            "cluster",
            "metrics",
        ],
    ),
    // The data path is a library: nothing of the control plane, the
    // store, the service's metrics or HTTP, by any way round.
    (
        "sync",
        &[
            "job",
            "api",
            "store",
            "group",
            "app",
            "preflight",
            "cluster",
            "metrics",
        ],
    ),
    (
        "minder",
        &[
            "job",
            "api",
            "store",
            "group",
            "app",
            "preflight",
            "cluster",
            "metrics",
        ],
    ),
    ("agent", &["job", "api", "store", "group", "app", "cluster"]),
    (
        "config",
        &["job", "api", "store", "group", "app", "cluster"],
    ),
];

/// Words of a statement on the metadata tables: only `store` has them.
const META_TABLES: &[&str] = &[
    "cm_",
    "ccr_jobs",
    "ccr_members",
    "ccr_leader",
    "ccr_switches",
];

/// Where HTTP is served (a listener with a router): the API, the node
/// agent's server and the minder's parties.
const SERVERS: &[&str] = &["api/", "agent/mod.rs", "minder/net.rs", "app.rs", "main.rs"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `src/` file, by its path under `src/` (`sync/full.rs`).
fn files() -> BTreeMap<String, String> {
    let mut paths = Vec::new();
    rust_files(&src_dir(), &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(src_dir())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The code of a file without its comments (doc comments name other
/// modules in links).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top modules a file names: `crate::x`, and `super::…` resolved from
/// its place.
fn named(rel: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let code = code(text);
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        out.push(rest[..end].to_string());
    }
    // `super::…` resolved from the file's own module path.
    let mut module: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    if module.last() == Some(&"mod") {
        module.pop();
    }
    let mut rest = code.as_str();
    while let Some(i) = rest.find("super::") {
        // Only a path's start: not the `super::` of `super::super::`.
        let before = &code[code.len() - rest.len()..][..i];
        rest = &rest[i..];
        if before.ends_with("::") {
            rest = &rest["super::".len()..];
            continue;
        }
        let mut ups = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            ups += 1;
            rest = r;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let base = &module[..module.len().saturating_sub(ups)];
        out.push(match base.first() {
            Some(top) => top.to_string(),
            None => rest[..end].to_string(),
        });
    }
    out
}

fn layer(rel: &str) -> &str {
    let first = rel.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first)
}

#[test]
fn layer_rules_hold() {
    let mut broken = Vec::new();
    for (rel, text) in files() {
        let direct = RULES
            .iter()
            .chain(DEEP_RULES)
            .filter(|(l, _)| *l == layer(&rel));
        for (_, forbidden) in direct {
            for m in named(&rel, &text) {
                if forbidden.contains(&m.as_str()) {
                    broken.push(format!("src/{rel} names crate::{m}"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rules of doc/ARCHITECTURE.md broken:\n{}",
        broken.join("\n")
    );
}

/// Top module → the top modules its files name.
fn graph() -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut g: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files() {
        let from = layer(&rel).to_string();
        let to: Vec<String> = named(&rel, &text)
            .into_iter()
            .filter(|m| *m != from)
            .collect();
        g.entry(from).or_default().extend(to);
    }
    g
}

/// The chain from `from` to `to`, if `to` can be reached.
fn path(
    g: &BTreeMap<String, std::collections::BTreeSet<String>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from.to_string()]);
    while let Some(m) = queue.pop_front() {
        if m == to {
            let mut chain = vec![m.clone()];
            while let Some(p) = parent.get(chain.last().unwrap()) {
                chain.push(p.clone());
            }
            chain.reverse();
            return Some(chain);
        }
        for next in g.get(&m).into_iter().flatten() {
            if next != from && !parent.contains_key(next) {
                parent.insert(next.clone(), m.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

#[test]
fn layer_rules_hold_through_every_chain() {
    let g = graph();
    let mut broken = Vec::new();
    for (layer, forbidden) in DEEP_RULES {
        for f in *forbidden {
            if let Some(chain) = path(&g, layer, f) {
                broken.push(chain.join(" → "));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rules of doc/ARCHITECTURE.md broken through other modules:\n{}",
        broken.join("\n")
    );
    // The measure itself: a chain the service has is found.
    assert!(path(&g, "api", "sync").is_some());
}

#[test]
fn the_metadata_sql_is_only_in_store() {
    let mut offenders = Vec::new();
    for (rel, text) in files() {
        if layer(&rel) == "store" {
            continue;
        }
        let code = code(&text);
        for verb in ["FROM ", "INTO ", "UPDATE ", "TABLE ", "JOIN "] {
            for table in META_TABLES {
                if code.contains(&format!("{verb}{table}")) {
                    offenders.push(format!("src/{rel}: {verb}{table}…"));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "metadata SQL outside src/store: {offenders:?}"
    );
}

#[test]
fn http_is_served_only_where_the_map_says() {
    let offenders: Vec<String> = files()
        .into_iter()
        .filter(|(rel, text)| {
            let code = code(text);
            (code.contains("warp::serve")
                || code.contains("warp::Filter")
                || code.contains("hyper_util::server"))
                && !SERVERS.iter().any(|s| rel.starts_with(s))
        })
        .map(|(rel, _)| format!("src/{rel}"))
        .collect();
    assert!(
        offenders.is_empty(),
        "HTTP served outside api, the agent and the minder's net: {offenders:?}"
    );
}

#[test]
fn the_environment_is_read_only_in_config() {
    let offenders: Vec<String> = files()
        .into_iter()
        .filter(|(rel, text)| rel != "config.rs" && code(text).contains("env::"))
        .map(|(rel, _)| format!("src/{rel}"))
        .collect();
    assert!(
        offenders.is_empty(),
        "the environment is read outside src/config.rs: {offenders:?}"
    );
}

#[test]
fn no_file_is_over_800_lines() {
    let long: Vec<String> = files()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > MAX_LINES)
        .map(|(rel, text)| format!("src/{rel}: {} lines", text.lines().count()))
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

/// The functions of a file's code before its tests, as (name, first line,
/// lines): a `fn` line at some indentation up to the `}` at the same one.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let rest = [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "async ",
            "const ",
            "unsafe ",
        ]
        .iter()
        .fold(t, |r, p| r.strip_prefix(p).unwrap_or(r));
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let Some(sig) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = sig
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // A declaration without a body (in a trait) ends with `;`.
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = (open + 1..lines.len()).find(|&j| {
            let l = lines[j];
            l.len() > indent && l[..indent].trim().is_empty() && l[indent..].starts_with('}')
        });
        if let Some(close) = close {
            out.push((name, i + 1, close - i + 1));
        }
    }
    out
}

#[test]
fn no_data_path_function_is_over_the_limit() {
    let mut long = Vec::new();
    for (rel, text) in files() {
        if !DATA_PATH.contains(&layer(&rel)) || rel.ends_with("tests.rs") {
            continue;
        }
        for (name, line, n) in functions(&text) {
            if n > MAX_FN_LINES {
                long.push(format!("src/{rel}:{line} fn {name}: {n} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "data path functions over {MAX_FN_LINES} lines (split them by what they do):\n{}",
        long.join("\n")
    );
    // The measure itself: this test's own longest function is found.
    let own = functions(include_str!("layers.rs"));
    assert!(
        own.iter().any(|(n, _, l)| n == "functions" && *l > 20),
        "{own:?}"
    );
}

/// A file `src/a/b/c.rs` is placed when a bullet of the codemap names
/// `src/a/` and `b/c.rs` (or, for `mod.rs`, `b/`), or names
/// `src/a/b/c.rs` whole; a top-level `src/x.rs` by `src/x.rs` (and its
/// child `src/x/y.rs` by `src/x.rs` with `x/y.rs`).
#[test]
fn every_file_is_in_the_codemap() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("doc/ARCHITECTURE.md"))
            .unwrap();
    let codemap = doc
        .split("## Codemap")
        .nth(1)
        .expect("doc/ARCHITECTURE.md has a Codemap section");
    let codemap = codemap.split("\n## ").next().unwrap();
    let mut bullets: Vec<String> = Vec::new();
    for line in codemap.lines() {
        if line.starts_with("- ") {
            bullets.push(line.to_string());
        } else if let Some(last) = bullets.last_mut() {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    let mut missing = Vec::new();
    for rel in files().keys() {
        let whole = format!("src/{rel}");
        let placed = match rel.split_once('/') {
            None => bullets.iter().any(|b| b.contains(&format!("`{whole}`"))),
            Some((top, inner)) => {
                let folder = format!("`src/{top}/`");
                let inner_name = match inner.strip_suffix("mod.rs") {
                    Some("") => "mod.rs".to_string(),
                    Some(dir) => dir.to_string(),
                    None => inner.to_string(),
                };
                // A file module's own folder (`src/config.rs` and
                // `config/tests.rs`).
                let file_module = format!("`src/{top}.rs`");
                let nested = format!("`{top}/{inner}`");
                bullets.iter().any(|b| {
                    b.contains(&format!("`{whole}`"))
                        || b.contains(&folder) && b.contains(&format!("`{inner_name}`"))
                        || b.contains(&file_module) && b.contains(&nested)
                })
            }
        };
        if !placed {
            missing.push(whole);
        }
    }
    assert!(
        missing.is_empty(),
        "files missing from the codemap of doc/ARCHITECTURE.md: {missing:?}"
    );
}
