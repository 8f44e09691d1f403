//! Finding and reading the config file.

use std::path::{Path, PathBuf};

use super::{parse_raw, resolve, Config, ConfigError, RawConfig, STATE_DIR_NAME};

/// The project root for a config file: the parent of `.wf/` when the file lives there, else the
/// file's own directory.
pub fn root_of(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new("/"));
    if dir.file_name().is_some_and(|n| n == STATE_DIR_NAME) {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Finds and loads the configuration (see the module docs for the order).
pub fn load(explicit: Option<&Path>, cwd: &Path) -> Result<Config, ConfigError> {
    let file = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => match std::env::var_os("WF_CONFIG").filter(|v| !v.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None => cwd
                .ancestors()
                .map(|d| d.join(STATE_DIR_NAME).join("config.json"))
                .find(|p| p.is_file()),
        },
    };
    match file {
        None => resolve(RawConfig::default(), None, cwd),
        Some(path) => {
            let path = if path.is_absolute() {
                path
            } else {
                cwd.join(path)
            };
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let raw = parse_raw(&text, &path.display().to_string())?;
            let root = root_of(&path);
            resolve(raw, Some(path), &root)
        }
    }
}
