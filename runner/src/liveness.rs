//! Which runners of a state directory are alive, proven rather than assumed.
//!
//! Each runner holds an exclusive `flock` on `<state_dir>/runners/<id>.lock` for its whole life
//! (the kernel releases it when the process dies, however it dies). A starting runner tries to
//! take the lock of every other file there: if it can, that runner is dead — its agents are
//! reaped and its leases expired; if it cannot, that runner is alive, and nothing of it is
//! touched. So a rolling restart (`kill -TERM $old; wf-runner &`) or a second `wf-runner` on a
//! NATS store shares the directory safely; with the embedded store, where only one runner can
//! hold the database, a second live runner on the directory is refused with a clear error.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// This runner's lock; held until dropped (or the process ends).
#[derive(Debug)]
pub struct RunnerLock {
    path: PathBuf,
    // Why: the lock lives as long as the open file.
    _file: File,
}

/// Another runner that used the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherRunner {
    /// Its id.
    pub id: String,
    /// Its pid, as it wrote it.
    pub pid: Option<u32>,
    /// Whether it still holds its lock.
    pub alive: bool,
    /// Its lock file (gone from a runner written by an older wf).
    pub path: Option<PathBuf>,
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("runners")
}

impl RunnerLock {
    /// Takes the lock of runner `id` in `state_dir`.
    pub fn acquire(state_dir: &Path, id: &str) -> std::io::Result<Self> {
        let dir = dir(state_dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{id}.lock"));
        // Locked under a temporary name, then renamed: no other runner can ever find the file
        // unlocked while this one lives (the lock stays with the open file across the rename).
        let tmp = dir.join(format!(".{id}.lock.tmp"));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)?;
        file.try_lock().map_err(|e| match e {
            TryLockError::WouldBlock => {
                std::io::Error::other(format!("{} is locked by another process", tmp.display()))
            }
            TryLockError::Error(e) => e,
        })?;
        writeln!(file, "{id} {}", std::process::id())?;
        file.flush()?;
        std::fs::rename(&tmp, &path)?;
        Ok(Self { path, _file: file })
    }
}

impl Drop for RunnerLock {
    fn drop(&mut self) {
        // Why: a leftover file is harmless: the next runner finds it unlocked, dead.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Every other runner that used `state_dir`, and whether it is alive. `me` is this runner.
/// A `runner.id` file left by a wf from before the locks names a runner that held no lock; it
/// is reported dead, as that wf assumed.
pub fn other_runners(state_dir: &Path, me: &str) -> Vec<OtherRunner> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir(state_dir)) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".lock"))
                .map(str::to_string)
            else {
                continue;
            };
            if id == me {
                continue;
            }
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            let alive = match file.try_lock() {
                Ok(()) => false,
                Err(TryLockError::WouldBlock) => true,
                Err(TryLockError::Error(_)) => continue,
            };
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.split_whitespace().nth(1).and_then(|p| p.parse().ok()));
            found.push(OtherRunner {
                id,
                pid,
                alive,
                path: Some(path),
            });
        }
    }
    let legacy = state_dir.join("runner.id");
    if let Some(id) = std::fs::read_to_string(&legacy)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != me && !found.iter().any(|o| o.id == *s))
    {
        found.push(OtherRunner {
            id,
            pid: None,
            alive: false,
            path: Some(legacy),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_alive_and_a_released_one_dead() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunnerLock::acquire(dir.path(), "aaaaaaaaaaaa").unwrap();
        let others = other_runners(dir.path(), "bbbbbbbbbbbb");
        assert_eq!(others.len(), 1);
        assert!(others[0].alive, "{others:?}");
        assert_eq!(others[0].pid, Some(std::process::id()));
        // A process that died leaves its file unlocked: simulate with a file nobody holds.
        drop(a);
        std::fs::write(
            dir.path().join("runners/cccccccccccc.lock"),
            "cccccccccccc 1\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("runner.id"), "dddddddddddd\n").unwrap();
        let mut others = other_runners(dir.path(), "bbbbbbbbbbbb");
        others.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(
            others
                .iter()
                .map(|o| (o.id.as_str(), o.alive))
                .collect::<Vec<_>>(),
            [("cccccccccccc", false), ("dddddddddddd", false)]
        );
    }
}
