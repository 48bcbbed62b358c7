//! A directory written the way the kubelet writes Secret, ConfigMap and projected
//! ServiceAccount volumes (its `AtomicWriter`): the files live in a timestamped directory,
//! `..data` is a symlink to it, and each visible name is a symlink through `..data`. An
//! update writes a new timestamped directory and renames a fresh `..data_tmp` symlink onto
//! `..data`, so a reader sees the old set or the new one, never a mix. The visible names
//! of files that stay never change: a watcher of the files sees nothing. Names new in an
//! update get their symlink after the swap, names gone lose theirs (an optional Secret that
//! does not exist yet is an empty volume, and its files appear this way).

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

/// A kubelet-style volume directory.
#[derive(Debug)]
pub struct Projected {
    dir: PathBuf,
    version: u32,
    names: Vec<String>,
}

impl Projected {
    /// Writes `files` into `dir` (created if missing).
    pub fn create(dir: &Path, files: &[(&str, &[u8])]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut volume = Self {
            dir: dir.to_owned(),
            version: 0,
            names: Vec::new(),
        };
        volume.update(files)?;
        Ok(volume)
    }

    /// Replaces the contents with `files`, atomically.
    pub fn update(&mut self, files: &[(&str, &[u8])]) -> anyhow::Result<()> {
        let old = self.data_dir();
        self.version += 1;
        let new = self.data_dir();
        std::fs::create_dir(&new)?;
        for (name, content) in files {
            std::fs::write(new.join(name), content)?;
        }
        let tmp = self.dir.join("..data_tmp");
        symlink(new.file_name().expect("a name"), &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data"))?;
        let names: Vec<String> = files.iter().map(|(name, _)| (*name).to_owned()).collect();
        for name in &names {
            if !self.names.contains(name) {
                symlink(Path::new("..data").join(name), self.dir.join(name))?;
            }
        }
        for gone in self.names.iter().filter(|name| !names.contains(name)) {
            std::fs::remove_file(self.dir.join(gone))?;
        }
        self.names = names;
        if self.version > 1 {
            std::fs::remove_dir_all(old)?;
        }
        Ok(())
    }

    /// The directory `..data` points to now. Writing a file there in place changes what
    /// readers get without any change to the volume's own directory, as no kubelet would:
    /// what a reader that has not noticed an update yet sees.
    pub fn data_dir(&self) -> PathBuf {
        self.dir
            .join(format!("..2026_11_25_00_00_00.{:09}", self.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_through_data_and_updates_swap_everything() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sa");
        let mut volume = Projected::create(&root, &[("token", b"one"), ("ca.crt", b"CA")]).unwrap();
        assert_eq!(std::fs::read(root.join("token")).unwrap(), b"one");
        assert!(root.join("token").is_symlink());
        volume
            .update(&[("token", b"two"), ("ca.crt", b"CA")])
            .unwrap();
        assert_eq!(std::fs::read(root.join("token")).unwrap(), b"two");
        let mut entries: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            [
                "..2026_11_25_00_00_00.000000002",
                "..data",
                "ca.crt",
                "token"
            ]
        );
    }

    #[test]
    fn names_come_and_go_with_updates() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("config");
        let mut volume = Projected::create(&root, &[]).unwrap();
        assert!(!root.join("config.yaml").exists());
        volume
            .update(&[("config.yaml", b"a"), ("east.token", b"t")])
            .unwrap();
        assert_eq!(std::fs::read(root.join("config.yaml")).unwrap(), b"a");
        volume.update(&[("config.yaml", b"b")]).unwrap();
        assert_eq!(std::fs::read(root.join("config.yaml")).unwrap(), b"b");
        assert!(std::fs::symlink_metadata(root.join("east.token")).is_err());
    }
}
