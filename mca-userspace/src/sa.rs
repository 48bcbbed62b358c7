//! The fake ServiceAccount directory the application mounts instead of the real one.
//!
//! In-cluster clients read three files from `/var/run/secrets/kubernetes.io/serviceaccount`:
//! `ca.crt` to verify the API server, `token` to authenticate, `namespace` as their default
//! namespace. MCA writes its own CA, a placeholder token and the real namespace there. Every
//! file is written to a temporary name and renamed into place, so a client never reads a
//! half-written file even if it starts while MCA is (re)writing them.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// The placeholder token. It must not be empty: several client libraries (the Python
/// `kubernetes` client among them) treat an empty token file as "no in-cluster config".
/// MCA strips it from every request, so its value carries no authority.
pub const PLACEHOLDER_TOKEN: &str = "mca-placeholder-token";

/// Errors while provisioning the fake ServiceAccount.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct Error {
    path: PathBuf,
    source: std::io::Error,
}

/// Writes `ca.crt`, `token` and `namespace` into `dir`, creating it if needed.
///
/// `ca.crt` is written last: clients that wait for it (as a sign the directory is complete)
/// then find the other two already in place.
pub fn provision(dir: &Path, ca_pem: &str, namespace: &str) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error {
        path: dir.to_owned(),
        source,
    })?;
    write_atomically(&dir.join("namespace"), namespace.as_bytes(), 0o644)?;
    write_atomically(&dir.join("token"), PLACEHOLDER_TOKEN.as_bytes(), 0o644)?;
    write_atomically(&dir.join("ca.crt"), ca_pem.as_bytes(), 0o644)
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;

    let err = |source| Error {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.mca-tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_all_three_files_and_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let sa = dir.path().join("sa");
        provision(&sa, "CA", "team-a").unwrap();
        // A second provision (e.g. after a CA change) replaces the files in place.
        provision(&sa, "CA2", "team-a").unwrap();
        let read = |f: &str| std::fs::read_to_string(sa.join(f)).unwrap();
        assert_eq!(read("ca.crt"), "CA2");
        assert_eq!(read("namespace"), "team-a");
        assert_eq!(read("token"), PLACEHOLDER_TOKEN);
        let mut names: Vec<_> = std::fs::read_dir(&sa)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["ca.crt", "namespace", "token"]);
    }

    #[test]
    fn reports_the_path_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let error = provision(&file, "CA", "ns").unwrap_err();
        assert!(error.to_string().contains("not-a-dir"), "{error}");
    }
}
