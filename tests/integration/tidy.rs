//! Checks on the source tree itself: the crate boundaries that carry the invariants
//! (ARCHITECTURE.md, "Crate map"), and the habits CI cannot see from clippy alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// The crates in `package`'s normal (non-dev) dependency tree, build dependencies included.
fn dependency_tree(package: &str) -> BTreeSet<String> {
    cargo(&[
        "tree",
        "-p",
        package,
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ])
    .lines()
    .filter_map(|l| l.split_whitespace().next())
    .map(str::to_string)
    .collect()
}

/// Each workspace package's direct dependencies, by kind ("normal", "dev", "build").
fn direct_dependencies() -> BTreeMap<String, Vec<(String, String)>> {
    let meta: Value =
        serde_json::from_str(&cargo(&["metadata", "--format-version", "1", "--no-deps"]))
            .expect("cargo metadata is JSON");
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .map(|d| {
                    (
                        d["name"].as_str().unwrap_or_default().to_string(),
                        d["kind"].as_str().unwrap_or("normal").to_string(),
                    )
                })
                .collect();
            (p["name"].as_str().unwrap_or_default().to_string(), deps)
        })
        .collect()
}

#[test]
fn the_pure_core_has_no_runtime_no_libc_and_no_store_in_its_tree() {
    let tree = dependency_tree("wf-core");
    assert!(tree.contains("wf-core"), "{tree:?}");
    for banned in [
        "tokio",
        "libc",
        "sled",
        "async-nats",
        "wf-store",
        "wf-runner",
    ] {
        assert!(
            !tree.contains(banned),
            "wf-core's dependency tree contains {banned}: the pure domain must stay free of \
             I/O runtimes and stores (tree: {tree:?})"
        );
    }
}

#[test]
fn only_the_store_depends_on_sled_and_nats() {
    let deps = direct_dependencies();
    assert!(deps.contains_key("wf-store"), "{deps:?}");
    for (package, deps) in &deps {
        for (dep, kind) in deps {
            if ["sled", "async-nats"].contains(&dep.as_str()) {
                assert_eq!(
                    package, "wf-store",
                    "{package} depends on {dep} ({kind}); only wf-store may name a backend"
                );
            }
        }
    }
}

/// Every Rust file of the workspace, tests and tools included.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable source dir") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["core", "store", "runner", "cli", "tests"] {
        walk(&workspace_root().join(dir), &mut files);
    }
    files
}

#[test]
fn every_rust_file_says_what_it_is_for() {
    let files = rust_files();
    assert!(files.len() > 30, "{files:?}");
    let undocumented: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("readable");
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "files without a //! comment: {undocumented:?}"
    );
}

#[test]
fn every_ignored_result_says_why() {
    let mut missing = Vec::new();
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).expect("readable");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with("let _ =") {
                continue;
            }
            // A `// Why:` comment on one of the lines just above (or ending this one).
            let above = lines[i.saturating_sub(4)..i]
                .iter()
                .any(|l| l.trim_start().starts_with("//"));
            if !above && !line.contains("// Why") {
                missing.push(format!("{}:{}", file.display(), i + 1));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "`let _ =` without a comment saying why the result may be ignored: {missing:#?}"
    );
}
