//! Workflows: reusable, parameterised TOML files that instantiate into an assignment's jobs.
//!
//! A workflow names its parameters (with description, required, default, enum, pattern), its
//! defaults, and its tasks (job type, instructions, acceptance criteria, `depends_on`,
//! harness and model, `verify` commands, a human or command `gate`, `retry`, `on_failure`, a
//! bounded `loop` with a mandatory `max`, a required `verdict`, a forge `publish`).
//!
//! `raw` is the file as written; [`parse`] checks it (`check`), [`instantiate`] binds the
//! parameters and renders every template once (`plan`); `spec` holds what the stored
//! documents keep of a workflow; [`find`] and [`list`] look files up in the project
//! (`.wf/workflows/`), then the user's config directory, then the ones built into wf.

use std::path::{Path, PathBuf};

mod check;
mod plan;
mod raw;
mod spec;

pub use self::check::*;
pub use self::plan::*;
pub use self::raw::*;
pub use self::spec::*;

/// The workflows built into wf: `(name, text)`.
pub const BUILTIN: [(&str, &str); 7] = [
    (
        "feature",
        include_str!("../../../templates/workflows/feature.toml"),
    ),
    (
        "bugfix",
        include_str!("../../../templates/workflows/bugfix.toml"),
    ),
    (
        "issue",
        include_str!("../../../templates/workflows/issue.toml"),
    ),
    (
        "review-pr",
        include_str!("../../../templates/workflows/review-pr.toml"),
    ),
    (
        "triage",
        include_str!("../../../templates/workflows/triage.toml"),
    ),
    (
        "release-notes",
        include_str!("../../../templates/workflows/release-notes.toml"),
    ),
    (
        "plan-issues",
        include_str!("../../../templates/workflows/plan-issues.toml"),
    ),
];

/// A workflow file that does not check out, naming the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("workflow {file}: {message}")]
pub struct WorkflowError {
    /// The file (or `builtin:<name>`).
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// Where a workflow was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The project's `.wf/workflows/`.
    Project(PathBuf),
    /// The user's config directory.
    User(PathBuf),
    /// Built into wf.
    Builtin,
    /// A file named on the command line (`wf workflow check FILE`).
    File(PathBuf),
}

impl Source {
    /// `project`, `user`, `builtin` or `file`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Project(_) => "project",
            Source::User(_) => "user",
            Source::Builtin => "builtin",
            Source::File(_) => "file",
        }
    }

    /// The file, or `builtin:<name>`.
    pub fn describe(&self, name: &str) -> String {
        match self {
            Source::Project(p) | Source::User(p) | Source::File(p) => p.display().to_string(),
            Source::Builtin => format!("builtin:{name}"),
        }
    }
}

/// A template error as one line, with its line number.
pub(crate) fn describe_template_error(e: &minijinja::Error) -> String {
    let what = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    match e.line() {
        Some(line) => format!("{what} (line {line})"),
        None => what,
    }
}

/// The directories searched before the built-in workflows: the project's, then the user's.
pub fn search_dirs(project_root: &Path) -> Vec<(PathBuf, bool)> {
    let mut dirs = vec![(project_root.join(".wf").join("workflows"), true)];
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = config_home {
        dirs.push((c.join("wf").join("workflows"), false));
    }
    dirs
}

/// Reads and checks the workflow called `name`: `<project>/.wf/workflows/<name>.toml`, else
/// the user's `~/.config/wf/workflows/<name>.toml`, else the built-in one.
pub fn find(name: &str, project_root: &Path) -> Result<Workflow, WorkflowError> {
    let not_found = |message: String| WorkflowError {
        file: name.to_string(),
        message,
    };
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(not_found(
            "a workflow name is a file name without .toml (to check a file, use `wf workflow check FILE`)".into(),
        ));
    }
    for (dir, project) in search_dirs(project_root) {
        let path = dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let source = if project {
                    Source::Project(path.clone())
                } else {
                    Source::User(path.clone())
                };
                return parse(&text, &path.display().to_string(), source);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(WorkflowError {
                    file: path.display().to_string(),
                    message: format!("cannot read it: {e}"),
                })
            }
        }
    }
    match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => parse(text, &format!("builtin:{n}"), Source::Builtin),
        None => Err(not_found(format!(
            "no such workflow: looked for {name}.toml in {}, and among the built-in ones ({})",
            search_dirs(project_root)
                .iter()
                .map(|(d, _)| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" and "),
            BUILTIN.map(|(n, _)| n).join(", ")
        ))),
    }
}

/// Reads and checks the workflow in `path`.
pub fn check_file(path: &Path) -> Result<Workflow, WorkflowError> {
    let text = std::fs::read_to_string(path).map_err(|e| WorkflowError {
        file: path.display().to_string(),
        message: format!("cannot read it: {e}"),
    })?;
    parse(
        &text,
        &path.display().to_string(),
        Source::File(path.to_path_buf()),
    )
}

/// Every workflow that [`find`] can see, by name (a project's file hides a user's, which hides
/// a built-in one), each checked: those that do not check out come back as errors.
pub fn list(project_root: &Path) -> Vec<(String, Result<Workflow, WorkflowError>)> {
    let mut names: std::collections::BTreeSet<String> =
        BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
    for (dir, _) in search_dirs(project_root) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    names.insert(stem.to_string());
                }
            }
        }
    }
    names
        .into_iter()
        .map(|n| {
            let found = find(&n, project_root);
            (n, found)
        })
        .collect()
}

/// The verdict in an agent's final message: the last `VERDICT: pass` or `VERDICT: fail`
/// (any case, markdown emphasis allowed). `None`: there is none, which counts as a fail.
pub fn verdict(text: &str) -> Option<bool> {
    text.lines().rev().find_map(|line| {
        let clean: String = line
            .chars()
            .filter(|c| !matches!(c, '*' | '_' | '`' | '#' | '>'))
            .collect();
        let upper = clean.trim().to_ascii_uppercase();
        let rest = upper.strip_prefix("VERDICT")?.trim_start();
        let rest = rest.strip_prefix(':')?.trim();
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        match word.as_str() {
            "PASS" | "PASSED" => Some(true),
            "FAIL" | "FAILED" => Some(false),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests;
