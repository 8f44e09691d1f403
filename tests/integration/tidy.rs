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

/// Longest function body without a reason written next to it.
const MAX_FN_LINES: usize = 80;

/// `text` with comments, strings and character literals blanked (newlines kept), so that
/// braces can be counted.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                blank(&mut out, b[i]);
                i += 1;
            }
            out.extend_from_slice(b"  ");
            i += 2;
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) && {
            let hashes = b[i + 1..].iter().take_while(|&&h| h == b'#').count();
            b.get(i + 1 + hashes) == Some(&b'"')
        } {
            let hashes = b[i + 1..].iter().take_while(|&&h| h == b'#').count();
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let start = i + 2 + hashes;
            let end = b[start..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| start + p + close.len());
            for &ch in &b[i..end] {
                blank(&mut out, ch);
            }
            i = end;
        } else if c == b'"' {
            blank(&mut out, c);
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if c == b'\'' {
            // A character literal ('x', '\n', '{'), or a lifetime ('a), which has no closing
            // quote right after one character.
            let len = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..].iter().position(|&q| q == b'\'').map(|p| p + 3)
            } else {
                let ch_len = std::str::from_utf8(&b[i + 1..(i + 5).min(b.len())])
                    .ok()
                    .or_else(|| std::str::from_utf8(&b[i + 1..(i + 2).min(b.len())]).ok())
                    .and_then(|s| s.chars().next())
                    .map_or(1, char::len_utf8);
                (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(ch_len + 2)
            };
            let len = len.unwrap_or(1);
            for &ch in &b[i..(i + len).min(b.len())] {
                blank(&mut out, ch);
            }
            i += len;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every function of `text` longer than [`MAX_FN_LINES`] lines: (name, first line, lines), for
/// the ones without a `// Long:` comment giving the reason just above them.
fn long_functions(text: &str) -> Vec<(String, usize, usize)> {
    let code = code_only(text);
    let lines: Vec<&str> = code.lines().collect();
    let original: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = line.find("fn ") else { continue };
        let before = line[..at].trim();
        let is_item = before.is_empty()
            || before.split_whitespace().all(|w| {
                [
                    "pub",
                    "pub(crate)",
                    "pub(super)",
                    "async",
                    "const",
                    "unsafe",
                ]
                .contains(&w)
            });
        if !is_item {
            continue;
        }
        let name: String = line[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // Find the body: the first `{` before a `;` ends the signature.
        let (mut depth, mut opened, mut end) = (0i32, false, None);
        'scan: for (j, l) in lines.iter().enumerate().skip(i) {
            for ch in l.chars() {
                match ch {
                    ';' if !opened => break 'scan,
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
                if opened && depth == 0 {
                    end = Some(j);
                    break 'scan;
                }
            }
        }
        let Some(end) = end else { continue };
        let len = end - i + 1;
        if len <= MAX_FN_LINES {
            continue;
        }
        // The reason: a `// Long:` line among the comments and attributes right above.
        let mut k = i;
        let mut reasoned = false;
        while k > 0 {
            let above = original[k - 1].trim();
            if above.starts_with("// Long:") {
                reasoned = true;
                break;
            }
            if !(above.starts_with("//") || above.starts_with("#[") || above.ends_with(")]")) {
                break;
            }
            k -= 1;
        }
        if !reasoned {
            found.push((name, i + 1, len));
        }
    }
    found
}

#[test]
fn the_length_checker_sees_through_strings_and_comments() {
    let body = "    let x = 1;\n".repeat(MAX_FN_LINES);
    let long = format!("fn long() {{\n{body}}}\n");
    assert_eq!(
        long_functions(&long),
        [("long".into(), 1, MAX_FN_LINES + 2)]
    );
    let reasoned = format!("// Long: a table of cases.\n#[test]\n{long}");
    assert!(long_functions(&reasoned).is_empty());
    let tricky = format!(
        "fn a() {{ let s = \"}}\"; let c = '}}'; let r = r#\"{{\"#; }} // }}\n{long}fn b<'x>(v: &'x str) {{}}\n"
    );
    assert_eq!(
        long_functions(&tricky),
        [("long".into(), 2, MAX_FN_LINES + 2)]
    );
}

#[test]
fn no_function_is_over_80_lines_without_a_reason() {
    let mut long = Vec::new();
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).expect("readable");
        for (name, line, len) in long_functions(&text) {
            long.push(format!("{}:{line} {name} ({len} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines need a `// Long: <reason>` comment above them, \
         or a split: {long:#?}"
    );
}
