//! Putting MCA into pods: the mutation ([`pod`]) that `mca inject` applies to manifests
//! ([`manifest`]) and `mca webhook` to pods at admission.

pub mod lost;
pub mod manifest;
pub mod pod;
pub mod pod_security;
pub mod sidecar;

pub use self::pod::{Outcome, Refusal, Settings};

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

/// Why `mca inject` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Read {
        /// What was being read (`-` for stdin).
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A manifest could not be injected.
    #[error("{path}: {source}")]
    Manifest {
        /// Its file.
        path: String,
        /// What stopped the injection.
        source: manifest::Error,
    },
}

/// `mca inject`: reads manifests from `paths` (files, directories of `.yaml`/`.yml`/`.json`
/// files, `-` for stdin; stdin when empty) and returns them with MCA injected, as YAML
/// documents, plus one line per object saying what was done. All or nothing: if any
/// workload cannot be injected safely, nothing is returned, so a pipeline into
/// `kubectl apply -f -` never applies half a set.
pub fn run(paths: &[PathBuf], settings: &Settings) -> Result<(String, Vec<String>), Error> {
    let stdin = [PathBuf::from("-")];
    let paths = if paths.is_empty() { &stdin[..] } else { paths };
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files)?;
    }
    let mut documents = Vec::new();
    let mut lines = Vec::new();
    for path in files {
        let shown = path.display().to_string();
        let text = read(&path).map_err(|source| Error::Read {
            path: shown.clone(),
            source,
        })?;
        let (yaml, reports) =
            manifest::inject_yaml(&text, settings).map_err(|source| Error::Manifest {
                path: shown.clone(),
                source,
            })?;
        if !yaml.trim().is_empty() {
            documents.push(yaml);
        }
        lines.extend(reports.into_iter().map(|report| {
            let what = match report.outcome {
                Some(Outcome::Injected) => "injected",
                Some(Outcome::AlreadyInjected) => "already injected",
                Some(Outcome::OptedOut) => "skipped (mca.io/inject: disabled)",
                None => "skipped (no pod template)",
            };
            format!("{} {what}", report.object)
        }));
    }
    Ok((join_documents(&documents), lines))
}

/// YAML streams joined into one, each document after a `---`.
fn join_documents(streams: &[String]) -> String {
    let mut out = String::new();
    for stream in streams {
        if !stream.starts_with("---") {
            out.push_str("---\n");
        }
        out.push_str(stream);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn read(path: &Path) -> std::io::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
    }
}

/// `path` itself, or the manifest files under it (sorted, recursively).
fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), Error> {
    let error = |source| Error::Read {
        path: path.display().to_string(),
        source,
    };
    if path == Path::new("-") || !path.is_dir() {
        files.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(error)?;
    entries.sort();
    for entry in entries {
        let manifest = entry
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
        if entry.is_dir() || manifest {
            collect(&entry, files)?;
        }
    }
    Ok(())
}
