//! Where runner files live: the control socket, transcripts, the runner id file.

use std::path::{Path, PathBuf};

/// Unix socket paths must fit in `sun_path` (108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 100;

/// The control socket of the runner that owns `state_dir`.
///
/// Normally `<state_dir>/runner.sock`. When that path is too long for a Unix socket, a path
/// under `/tmp/wf-<uid>/` derived from the state directory is used instead.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    let direct = state_dir.join("runner.sock");
    if direct.as_os_str().len() <= MAX_SOCKET_PATH {
        return direct;
    }
    // FNV-1a: stable across runs and platforms, which is all this needs.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    short_socket_dir().join(format!("{hash:016x}.sock"))
}

/// The private directory for sockets whose natural path is too long.
pub fn short_socket_dir() -> PathBuf {
    // Why: getuid cannot fail.
    #[expect(unsafe_code, reason = "getuid(2) has no std wrapper")]
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/wf-{uid}"))
}

/// Where the raw stdout of one attempt is kept.
pub fn transcript_path(state_dir: &Path, assignment: &str, job: &str, attempt: u32) -> PathBuf {
    state_dir
        .join("transcripts")
        .join(assignment)
        .join(format!("{job}-{attempt}.jsonl"))
}

/// The file recording the id of the last runner that used `state_dir`.
pub fn runner_id_path(state_dir: &Path) -> PathBuf {
    state_dir.join("runner.id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_state_dirs_get_a_short_socket() {
        let short = socket_path(Path::new("/p/.wf"));
        assert_eq!(short, PathBuf::from("/p/.wf/runner.sock"));
        let deep = PathBuf::from(format!("/{}/.wf", "d".repeat(120)));
        let sock = socket_path(&deep);
        assert!(sock.as_os_str().len() < 108, "{}", sock.display());
        assert_eq!(sock, socket_path(&deep), "stable");
    }
}
