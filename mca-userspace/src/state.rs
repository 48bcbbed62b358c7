//! What must survive MCA's restart for the pod's life: its CAs (keys included) and the client
//! tokens it handed out, kept in `--state-dir`.
//!
//! An application loads `ca.crt` and the token once and keeps them; a sidecar restarts (a
//! crash, an OOM kill, a failed liveness probe) while the application runs on. A restarted
//! MCA restores both from here, so the application never notices. The directory must be a
//! volume only MCA's container mounts (injection adds an in-memory `emptyDir`, `mca-state`):
//! it holds what mints certificates the application trusts. The directory is made `0700`,
//! the file `0600`.

use std::path::{Path, PathBuf};

use crate::{client_auth::SavedTokens, sa, tls::SavedAuthority};

/// The file in the state directory.
const FILE: &str = "state.json";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or file could not be made, read or written.
    #[error("--state-dir {path}: {source}")]
    Io {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not MCA's state (nothing is overwritten).
    #[error(
        "--state-dir {path} is not MCA's state ({reason}): refusing to overwrite it; give MCA \
         a directory of its own"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] sa::Error),
}

/// What a run keeps for the next.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The CAs, oldest first.
    pub authorities: Vec<SavedAuthority>,
    /// The client tokens (none with `--client-auth=none`).
    pub tokens: Option<SavedTokens>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    file: PathBuf,
}

impl Store {
    /// Opens `dir` (made if missing, `0700`) and reads what a previous run saved there, if
    /// anything.
    pub fn open(dir: &Path) -> Result<(Self, Option<State>), Error> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let io = |source| Error::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let file = dir.join(FILE);
        let state = match std::fs::read(&file) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|e| Error::Unreadable {
                    path: file.clone(),
                    reason: e.to_string(),
                })?,
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(Error::Io {
                    path: file.clone(),
                    source,
                });
            }
        };
        Ok((Self { file }, state))
    }

    /// Replaces the saved state with `state`, atomically.
    pub fn save(&self, state: &State) -> Result<(), Error> {
        let json = serde_json::to_vec(state).expect("the state serializes");
        Ok(sa::write_atomically(&self.file, &json, 0o600)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_privately_and_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let (store, nothing) = Store::open(&state_dir).unwrap();
        assert!(nothing.is_none());
        store
            .save(&State {
                authorities: Vec::new(),
                tokens: None,
            })
            .unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state_dir), 0o700);
        assert_eq!(mode(&state_dir.join(FILE)), 0o600);
        let (_, again) = Store::open(&state_dir).unwrap();
        assert!(again.unwrap().authorities.is_empty());
    }

    #[test]
    fn a_file_that_is_not_mca_state_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "someone else's").unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("refusing to overwrite"),
            "{error}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            "someone else's"
        );
    }
}
