//! Finding and killing agent processes by the marks in their environment: the ones dead
//! runners left behind, and every process of one attempt.
//!
//! Every agent gets `WF_RUNNER_ID` in its environment, and its children inherit it. When a
//! runner starts, it kills the process groups of processes that carry the id of a runner known
//! to be dead (the previous runner of this state directory, or the holder of a lease that the
//! embedded store proves dead). Only processes carrying such an id are touched: they were
//! started by a wf runner of this store, never by anyone else.

use std::collections::HashSet;
use std::path::Path;

/// A process found carrying a dead runner's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// Process id.
    pub pid: u32,
    /// Its process group.
    pub pgid: u32,
}

/// Processes (readable by us) whose environment has `WF_RUNNER_ID` in `dead`.
pub fn find_orphans(dead: &HashSet<String>) -> Vec<Orphan> {
    if dead.is_empty() {
        return Vec::new();
    }
    find(|vars| {
        vars.iter()
            .find_map(|v| v.strip_prefix(b"WF_RUNNER_ID="))
            .is_some_and(|r| dead.contains(String::from_utf8_lossy(r).as_ref()))
    })
}

/// Processes (readable by us, other than this one) whose environment has every one of
/// `marker`'s `NAME=value` pairs: the processes of one attempt, whatever session or process
/// group they moved to (the CLIs' shell tools start commands in sessions of their own).
pub fn find_marked(marker: &[(String, String)]) -> Vec<Orphan> {
    if marker.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<Vec<u8>> = marker
        .iter()
        .map(|(k, v)| format!("{k}={v}").into_bytes())
        .collect();
    find(|vars| wanted.iter().all(|w| vars.contains(&w.as_slice())))
}

/// Processes whose environment (`NAME=value` entries) satisfies `pred`.
fn find(pred: impl Fn(&[&[u8]]) -> bool) -> Vec<Orphan> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if !pred(&vars) {
            continue;
        }
        if let Some(pgid) = pgid_of(&entry.path()) {
            found.push(Orphan { pid, pgid });
        }
    }
    found
}

/// Field 5 of `/proc/<pid>/stat`; the command name (field 2) may contain spaces and ')'.
fn pgid_of(proc_dir: &Path) -> Option<u32> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(2)?.parse().ok()
}

/// Kills the process groups of `orphans` and returns how many groups were signalled.
pub fn kill_orphans(orphans: &[Orphan]) -> usize {
    let groups: HashSet<u32> = orphans.iter().map(|o| o.pgid).collect();
    for pgid in &groups {
        crate::process::signal_group(*pgid, libc::SIGKILL);
    }
    // Processes that left their group still carry the id: kill them one by one.
    for o in orphans {
        crate::process::signal_pid(o.pid, libc::SIGKILL);
    }
    groups.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_process_group_even_with_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stat"),
            "123 (we ird) name)) S 1 456 456 0 -1",
        )
        .unwrap();
        assert_eq!(pgid_of(dir.path()), Some(456));
    }

    #[test]
    fn finds_nothing_for_unknown_runners() {
        let dead: HashSet<String> = ["no-such-runner-id".to_string()].into();
        assert!(find_orphans(&dead).is_empty());
        assert!(find_orphans(&HashSet::new()).is_empty());
    }
}
