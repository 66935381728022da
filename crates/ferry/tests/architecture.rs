//! The architecture is checked, not only written: ARCHITECTURE.md's "Dependency rules"
//! table says which project crates each crate may depend on and what it must never reach;
//! this test reads the workspace's manifests with `cargo metadata` and fails on any edge the
//! table forbids, and on any crate the table does not name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One row of the rules table.
#[derive(Debug)]
struct Rule {
    /// Project crates it may depend on (normal and build dependencies); `None`: any.
    may_use: Option<BTreeSet<String>>,
    /// Crates (of the project or not) it must not reach through normal dependencies.
    never: BTreeSet<String>,
}

/// The backquoted names of a table cell.
fn names(cell: &str) -> BTreeSet<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The "Dependency rules" table of ARCHITECTURE.md, by crate.
fn rules(text: &str) -> BTreeMap<String, Rule> {
    let section =
        text.split("\n## Dependency rules").nth(1).expect("ARCHITECTURE.md has a \"Dependency rules\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rules = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "a rules row has three cells: {line}");
        let krate = names(cells[0]).into_iter().next().expect("a crate name");
        let may_use = (cells[1] != "any").then(|| names(cells[1]));
        rules.insert(krate, Rule { may_use, never: names(cells[2]) });
    }
    rules
}

/// Each workspace crate's dependencies: (name, is it normal or build).
fn workspace() -> BTreeMap<String, Vec<(String, bool)>> {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let mut crates = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .map(|d| (d["name"].as_str().unwrap_or_default().to_owned(), d["kind"].as_str() != Some("dev")))
            .collect();
        crates.insert(package["name"].as_str().expect("a name").to_owned(), deps);
    }
    crates
}

/// Every crate `start` reaches through normal and build dependencies, itself excluded
/// (through the project's crates; the external crates are their direct dependencies).
fn reach(crates: &BTreeMap<String, Vec<(String, bool)>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_owned()];
    while let Some(krate) = todo.pop() {
        for (dep, normal) in crates.get(&krate).into_iter().flatten() {
            if *normal && seen.insert(dep.clone()) && crates.contains_key(dep) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

/// What breaks the rules: a crate the table does not name, a project dependency it does
/// not allow, a crate reached that it must never reach.
fn violations(rules: &BTreeMap<String, Rule>, crates: &BTreeMap<String, Vec<(String, bool)>>) -> Vec<String> {
    let mut found = Vec::new();
    for (krate, deps) in crates {
        let Some(rule) = rules.get(krate) else {
            found.push(format!("{krate} is not in ARCHITECTURE.md's dependency rules"));
            continue;
        };
        if let Some(allowed) = &rule.may_use {
            for (dep, normal) in deps {
                if *normal && crates.contains_key(dep) && !allowed.contains(dep) {
                    found.push(format!("{krate} depends on {dep}, which the rules do not allow"));
                }
            }
        }
        for reached in reach(crates, krate).intersection(&rule.never) {
            found.push(format!("{krate} reaches {reached}, which the rules forbid"));
        }
    }
    found
}

#[test]
fn the_crates_depend_on_each_other_only_as_architecture_md_allows() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md at the repository root");
    let rules = rules(&text);
    let crates = workspace();
    assert!(crates.len() >= 12, "cargo metadata lists the workspace: {:?}", crates.keys());
    let found = violations(&rules, &crates);
    assert!(found.is_empty(), "the dependency rules are broken:\n{}", found.join("\n"));
    for krate in rules.keys() {
        assert!(crates.contains_key(krate), "ARCHITECTURE.md's rules name {krate}, which is not a crate");
    }
}

/// The check itself catches what it is for: an edge the table forbids, directly or
/// through another crate, and a crate the table misses.
#[test]
fn a_forbidden_edge_is_caught() {
    let rules = rules(
        "\n## Dependency rules\n\n| crate | may use | never |\n|---|---|---|\n\
         | `leaf` | – | |\n| `mid` | `leaf` | `sqlite` |\n| `top` | any | |\n",
    );
    let crates = |edges: &[(&str, &[&str])]| -> BTreeMap<String, Vec<(String, bool)>> {
        edges.iter().map(|(k, deps)| (k.to_string(), deps.iter().map(|d| (d.to_string(), true)).collect())).collect()
    };
    let fine = crates(&[("leaf", &[]), ("mid", &["leaf", "serde"]), ("top", &["mid", "leaf"])]);
    assert!(violations(&rules, &fine).is_empty(), "{:?}", violations(&rules, &fine));
    let wrong = crates(&[("leaf", &["mid"]), ("mid", &["leaf"]), ("top", &[])]);
    assert_eq!(violations(&rules, &wrong), ["leaf depends on mid, which the rules do not allow"]);
    let through = crates(&[("leaf", &["sqlite"]), ("mid", &["leaf"]), ("top", &[])]);
    assert_eq!(violations(&rules, &through), ["mid reaches sqlite, which the rules forbid"]);
    let unnamed = crates(&[("leaf", &[]), ("mid", &[]), ("top", &[]), ("new", &[])]);
    assert_eq!(violations(&rules, &unnamed), ["new is not in ARCHITECTURE.md's dependency rules"]);
    let dev_only: BTreeMap<String, Vec<(String, bool)>> =
        [("leaf".to_owned(), vec![("mid".to_owned(), false)]), ("mid".to_owned(), vec![]), ("top".to_owned(), vec![])]
            .into_iter()
            .collect();
    assert!(violations(&rules, &dev_only).is_empty(), "dev-dependencies are free");
}
