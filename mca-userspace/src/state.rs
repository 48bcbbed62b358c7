//! What must survive MCA's restart for the pod's life: its CAs (keys included) and the client
//! tokens it handed out, kept in `--state-dir`.
//!
//! An application loads `ca.crt` and the token once and keeps them; a sidecar restarts (a
//! crash, an OOM kill, a failed liveness probe) while the application runs on. A restarted
//! MCA restores both from here, so the application never notices. The directory must be a
//! volume only MCA's container mounts (injection adds an in-memory `emptyDir`, `mca-state`):
//! it holds what mints certificates the application trusts. The directory is made `0700`,
//! the file `0600`. A directory MCA does not own (an `emptyDir`'s root is the kubelet's,
//! mode `0777`, and MCA runs as a non-root user in env mode, so it may not change it) gets a
//! private subdirectory, `mca/`, owned by MCA and `0700`, where the file is kept.

use std::path::{Path, PathBuf};

use crate::{client_auth::SavedTokens, sa, tls::SavedAuthority};

/// The file in the state directory.
const FILE: &str = "state.json";
/// The private subdirectory used when the state directory is not MCA's own.
const PRIVATE: &str = "mca";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or file could not be made, read or written.
    #[error("--state-dir {path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The operating system's error.
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
        let dir = private_dir(dir)?;
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

/// `dir` made private (`0700`, made if missing) when MCA owns it, else its subdirectory
/// [`PRIVATE`], which must be MCA's (made if missing).
fn private_dir(dir: &Path) -> Result<PathBuf, Error> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let me = nix::unistd::geteuid().as_raw();
    let private = |dir: &Path| -> Result<bool, Error> {
        let io = |source| Error::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        if std::fs::metadata(dir).map_err(io)?.uid() != me {
            return Ok(false);
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(true)
    };
    if private(dir)? {
        return Ok(dir.to_owned());
    }
    let sub = dir.join(PRIVATE);
    if private(&sub)? {
        return Ok(sub);
    }
    Err(Error::Io {
        path: sub,
        source: std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("owned by another user than MCA's ({me})"),
        ),
    })
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

    /// As an `emptyDir`'s root, owned by root with mode 0777, is to MCA running as 65532 (the
    /// test runs as root, so the directory is given to someone else instead).
    #[test]
    fn a_directory_owned_by_someone_else_keeps_the_state_in_a_private_subdirectory() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("volume");
        std::fs::create_dir(&volume).unwrap();
        std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o777)).unwrap();
        let other = nix::unistd::geteuid().as_raw() + 4242;
        std::os::unix::fs::chown(&volume, Some(other), Some(other)).unwrap();
        let (store, _) = Store::open(&volume).unwrap();
        store
            .save(&State {
                authorities: Vec::new(),
                tokens: None,
            })
            .unwrap();
        let sub = volume.join(PRIVATE);
        let meta = std::fs::metadata(&sub).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        assert!(sub.join(FILE).exists());
        // The volume itself is left as it was, and the next run finds the state again.
        assert_eq!(
            std::fs::metadata(&volume).unwrap().permissions().mode() & 0o777,
            0o777
        );
        assert!(Store::open(&volume).unwrap().1.is_some());
        // A subdirectory someone else made is not trusted.
        std::os::unix::fs::chown(&sub, Some(other), Some(other)).unwrap();
        let error = Store::open(&volume).unwrap_err();
        assert!(
            error.to_string().contains("owned by another user"),
            "{error}"
        );
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
