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

/// Makes sure `dir`, the fallback socket directory, is this user's own: created 0700 if it is
/// missing, and refused — never used, never chmod-ed — if it is a link, belongs to another user,
/// or can be written by others (another local user could otherwise listen on the socket path
/// that `wf` trusts, or keep the runner from starting).
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // Why: getuid cannot fail.
    #[expect(unsafe_code, reason = "getuid(2) has no std wrapper")]
    let uid = unsafe { libc::getuid() };
    let refuse = |why: &str| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} {why}; remove it or fix it (it must be yours, mode 0700)",
                dir.display()
            ),
        ))
    };
    if !meta.file_type().is_dir() {
        return refuse("is not a directory");
    }
    if meta.uid() != uid {
        return refuse(&format!(
            "belongs to uid {}, not to you (uid {uid})",
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return refuse(&format!("has mode {:o}", meta.permissions().mode() & 0o777));
    }
    Ok(())
}

/// Whether the socket at `path` may be trusted: its directory is private, or the socket
/// belongs to this user.
pub fn trusted_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let Some(dir) = path.parent() {
        if dir == short_socket_dir() {
            return ensure_private_dir(dir);
        }
    }
    let meta = std::fs::symlink_metadata(path)?;
    // Why: getuid cannot fail.
    #[expect(unsafe_code, reason = "getuid(2) has no std wrapper")]
    let uid = unsafe { libc::getuid() };
    if meta.uid() != uid {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "the control socket {} belongs to uid {}, not to you (uid {uid}); not talking to it",
                path.display(),
                meta.uid()
            ),
        ));
    }
    Ok(())
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
    fn a_fallback_directory_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("wf-x");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("has mode 777"), "{err}");
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }

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
