//! `cargo xtask image`: MCA's image written as an OCI archive, without a container engine.
//!
//! The image is what `deploy/Dockerfile` builds: the static `mca` and `mca-sidecar`, an
//! `/etc/passwd` and `/etc/group` naming the non-root user (65532) the image runs as, and
//! nothing else, in one layer. The archive is an OCI image layout in a tar (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) that also carries Docker's `manifest.json`, the shape
//! `docker save` writes since Docker 25, because each loader reads a different one of the
//! two: `skopeo copy oci-archive:` reads the index, containerd's importer (`ctr images
//! import`, and `kind load image-archive`, which runs it on each node) reads either.
//!
//! Byte for byte reproducible: entries in a fixed order, every timestamp the commit's
//! (`SOURCE_DATE_EPOCH` when set, as reproducible-builds.org defines it), owners numeric,
//! JSON written by one code path. The same binaries give the same digest.

use std::{
    io::{self, Write},
    path::Path,
};

use anyhow::Context;
use serde_json::{Value, json};

/// The non-root user and group the image runs as (distroless's `nonroot`).
pub const NONROOT: u32 = 65532;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What goes into the image.
pub struct Image<'a> {
    /// The full reference it is tagged with (`registry.local/mca:0.1.0`).
    pub reference: &'a str,
    /// The programs, installed as `/usr/local/bin/<name>`.
    pub binaries: Vec<(&'a str, Vec<u8>)>,
    /// Every timestamp, in seconds since the epoch.
    pub epoch: u64,
}

/// The archive written, and its image's manifest digest (what a registry or `ctr` names it by).
pub struct Written {
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// The archive's size in bytes.
    pub size: u64,
}

impl Image<'_> {
    /// Writes the archive to `out` (through a temporary file beside it, renamed into place).
    pub fn write(&self, out: &Path) -> anyhow::Result<Written> {
        let (archive, digest) = self.archive()?;
        let partial = out.with_extension("partial");
        std::fs::write(&partial, &archive)
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, out).with_context(|| format!("writing {}", out.display()))?;
        Ok(Written {
            digest,
            size: archive.len() as u64,
        })
    }

    /// The archive's bytes and the manifest's digest.
    fn archive(&self) -> anyhow::Result<(Vec<u8>, String)> {
        let (_, tag) = self
            .reference
            .rsplit_once(':')
            .filter(|(name, tag)| !name.is_empty() && !tag.contains('/'))
            .with_context(|| format!("{:?} is not NAME:TAG", self.reference))?;
        let layer = self.layer()?;
        let config = to_json(&json!({
            "architecture": "amd64",
            "os": "linux",
            "created": rfc3339(self.epoch),
            "config": {
                "User": format!("{NONROOT}:{NONROOT}"),
                "Env": ["PATH=/usr/local/bin"],
                "Entrypoint": ["/usr/local/bin/mca"],
                "Cmd": ["run"],
            },
            "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        }));
        let manifest = to_json(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": descriptor(CONFIG, &config),
            "layers": [descriptor(LAYER, &layer)],
        }));
        let digest = sha256(&manifest);
        let mut manifest_entry = descriptor(MANIFEST, &manifest);
        manifest_entry["annotations"] = json!({
            // containerd names an imported image after this, as the kubelet will ask for it;
            // the OCI name is the tag alone.
            "io.containerd.image.name": normalized(self.reference),
            "org.opencontainers.image.ref.name": tag,
        });
        let index = to_json(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [manifest_entry],
        }));
        let docker = to_json(&json!([{
            "Config": blob_path(&config),
            "RepoTags": [self.reference],
            "Layers": [blob_path(&layer)],
        }]));

        let mut tar = Tar::new(self.epoch);
        tar.file("oci-layout", 0o644, 0, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        tar.dir("blobs/", 0o755, 0)?;
        tar.dir("blobs/sha256/", 0o755, 0)?;
        let mut blobs = [&config, &layer, &manifest];
        blobs.sort_by_cached_key(|blob| sha256(blob));
        for blob in blobs {
            tar.file(&blob_path(blob), 0o644, 0, blob)?;
        }
        tar.file("index.json", 0o644, 0, &index)?;
        tar.file("manifest.json", 0o644, 0, &docker)?;
        Ok((tar.finish(), digest))
    }

    /// The one layer: the root file system.
    fn layer(&self) -> anyhow::Result<Vec<u8>> {
        let passwd = format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
        );
        let group = format!("root:x:0:\nnonroot:x:{NONROOT}:\n");
        let mut tar = Tar::new(self.epoch);
        tar.dir("etc/", 0o755, 0)?;
        tar.file("etc/group", 0o644, 0, group.as_bytes())?;
        tar.file("etc/passwd", 0o644, 0, passwd.as_bytes())?;
        tar.dir("home/", 0o755, 0)?;
        tar.dir("home/nonroot/", 0o700, NONROOT)?;
        tar.dir("usr/", 0o755, 0)?;
        tar.dir("usr/local/", 0o755, 0)?;
        tar.dir("usr/local/bin/", 0o755, 0)?;
        let mut binaries: Vec<_> = self.binaries.iter().collect();
        binaries.sort_by_key(|(name, _)| *name);
        for (name, contents) in binaries {
            tar.file(&format!("usr/local/bin/{name}"), 0o755, 0, contents)?;
        }
        Ok(tar.finish())
    }
}

/// `reference` as container runtimes spell it in full: a name without a registry is on
/// `docker.io`, and a single-component name there is in `library/` (so the kubelet's
/// `mca:0.1.0` finds the `docker.io/library/mca:0.1.0` containerd imported).
fn normalized(reference: &str) -> String {
    let registry = reference.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost"
    });
    match (registry, reference.contains('/')) {
        (true, _) => reference.to_owned(),
        (false, true) => format!("docker.io/{reference}"),
        (false, false) => format!("docker.io/library/{reference}"),
    }
}

/// `docker save`'s path of a blob inside the archive.
fn blob_path(blob: &[u8]) -> String {
    format!("blobs/sha256/{}", &sha256(blob)["sha256:".len()..])
}

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(blob), "size": blob.len()})
}

fn to_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialize")
}

fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// `seconds` since the epoch as RFC 3339 UTC (the config's `created`).
fn rfc3339(seconds: u64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// A POSIX ustar archive of directories and regular files, written in the order given, every
/// entry with the same timestamp and numeric owners (no user or group names).
struct Tar {
    out: Vec<u8>,
    mtime: u64,
}

impl Tar {
    fn new(mtime: u64) -> Self {
        Self {
            out: Vec::new(),
            mtime,
        }
    }

    fn dir(&mut self, path: &str, mode: u32, owner: u32) -> io::Result<()> {
        self.entry(path, b'5', mode, owner, &[])
    }

    fn file(&mut self, path: &str, mode: u32, owner: u32, contents: &[u8]) -> io::Result<()> {
        self.entry(path, b'0', mode, owner, contents)
    }

    fn entry(
        &mut self,
        path: &str,
        kind: u8,
        mode: u32,
        owner: u32,
        contents: &[u8],
    ) -> io::Result<()> {
        let mut header = [0u8; 512];
        let name = path.as_bytes();
        if name.len() > 100 {
            return Err(io::Error::other(format!("{path}: longer than 100 bytes")));
        }
        header[..name.len()].copy_from_slice(name);
        octal(&mut header[100..108], u64::from(mode))?;
        octal(&mut header[108..116], u64::from(owner))?;
        octal(&mut header[116..124], u64::from(owner))?;
        octal(&mut header[124..136], contents.len() as u64)?;
        octal(&mut header[136..148], self.mtime)?;
        header[156] = kind;
        header[257..265].copy_from_slice(b"ustar\x0000");
        // The checksum is computed with its own field as spaces.
        header[148..156].fill(b' ');
        let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
        octal(&mut header[148..155], sum)?;
        header[155] = b' ';
        self.out.write_all(&header)?;
        self.out.write_all(contents)?;
        self.pad();
        Ok(())
    }

    /// Zeros up to the next 512-byte block.
    fn pad(&mut self) {
        let over = self.out.len() % 512;
        if over != 0 {
            self.out.resize(self.out.len() + 512 - over, 0);
        }
    }

    /// The archive, closed by two zero blocks.
    fn finish(mut self) -> Vec<u8> {
        self.out.resize(self.out.len() + 1024, 0);
        self.out
    }
}

/// `value` as zero-padded octal filling `field` but its last byte, which stays NUL.
fn octal(field: &mut [u8], value: u64) -> io::Result<()> {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return Err(io::Error::other(format!(
            "{value} does not fit a tar field"
        )));
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn image(binary: &[u8]) -> Image<'static> {
        Image {
            reference: "registry.local/mca:test",
            binaries: vec![
                ("mca-sidecar", b"sidecar".to_vec()),
                ("mca", binary.to_vec()),
            ],
            epoch: 1_796_169_221,
        }
    }

    /// The members of a tar archive, as (path, contents), read by hand.
    fn members(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at + 512 <= archive.len() && archive[at] != 0 {
            let header = &archive[at..at + 512];
            let name = String::from_utf8(
                header[..100]
                    .iter()
                    .copied()
                    .take_while(|&b| b != 0)
                    .collect(),
            )
            .unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&header[124..135]).unwrap(), 8).unwrap();
            at += 512;
            out.push((name, archive[at..at + size].to_vec()));
            at += size.div_ceil(512) * 512;
        }
        out
    }

    fn member<'a>(members: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
        &members.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_and_other_binaries_another_digest() {
        let (first, digest) = image(b"mca one").archive().unwrap();
        let (second, again) = image(b"mca one").archive().unwrap();
        assert_eq!(first, second);
        assert_eq!(digest, again);
        let (_, other) = image(b"mca two").archive().unwrap();
        assert_ne!(digest, other);
    }

    #[test]
    fn every_blob_is_named_by_its_digest_and_the_index_leads_to_the_layer() {
        let (archive, digest) = image(b"the mca binary").archive().unwrap();
        let members = members(&archive);
        for (name, contents) in &members {
            if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(sha256(contents), format!("sha256:{hex}"), "{name}");
            }
        }
        let index: Value = serde_json::from_slice(member(&members, "index.json")).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(entry["digest"], digest.as_str());
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            "registry.local/mca:test"
        );
        let path = |digest: &Value| format!("blobs/sha256/{}", &digest.as_str().unwrap()[7..]);
        let manifest: Value =
            serde_json::from_slice(member(&members, &path(&entry["digest"]))).unwrap();
        let config: Value =
            serde_json::from_slice(member(&members, &path(&manifest["config"]["digest"]))).unwrap();
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["created"], "2026-12-01T23:53:41Z");
        let layer = member(&members, &path(&manifest["layers"][0]["digest"]));
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256(layer).as_str());
        let files = super::tests::members(layer);
        assert_eq!(member(&files, "usr/local/bin/mca"), b"the mca binary");
        assert!(
            std::str::from_utf8(member(&files, "etc/passwd"))
                .unwrap()
                .contains("nonroot:x:65532:65532:")
        );
        let docker: Value = serde_json::from_slice(member(&members, "manifest.json")).unwrap();
        assert_eq!(docker[0]["RepoTags"][0], "registry.local/mca:test");
        assert_eq!(
            docker[0]["Layers"][0],
            path(&manifest["layers"][0]["digest"])
        );
    }

    /// GNU tar reads the layer as the file system the image should have: owners, modes, the
    /// timestamp, nothing else.
    #[test]
    fn gnu_tar_lists_the_layer_as_written() {
        let layer = image(b"mca").layer().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer.tar");
        std::fs::write(&path, layer).unwrap();
        let listing = Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvf"])
            .arg(&path)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert!(listing.status.success());
        let listing = String::from_utf8(listing.stdout).unwrap();
        let lines: Vec<Vec<&str>> = listing
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let names: Vec<&str> = lines.iter().map(|l| l[5]).collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/group",
                "etc/passwd",
                "home/",
                "home/nonroot/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/mca",
                "usr/local/bin/mca-sidecar"
            ]
        );
        let line = |name: &str| lines.iter().find(|l| l[5] == name).unwrap();
        assert_eq!(line("usr/local/bin/mca")[..2], ["-rwxr-xr-x", "0/0"]);
        assert_eq!(line("home/nonroot/")[..2], ["drwx------", "65532/65532"]);
        assert_eq!(line("etc/passwd")[3..5], ["2026-12-01", "23:53:41"]);
    }

    /// skopeo (what registries and CI pipelines copy images with) reads the archive as one
    /// image with the manifest digest written, and copies it to an OCI layout.
    #[test]
    fn skopeo_reads_and_copies_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("mca.tar");
        let written = image(b"mca").write(&archive).unwrap();
        let skopeo = |args: &[&str]| {
            let output = Command::new("skopeo")
                .args(args)
                .output()
                .expect("skopeo is installed (cargo xtask setup installs it)");
            assert!(output.status.success(), "skopeo {args:?}: {output:?}");
            String::from_utf8(output.stdout).unwrap()
        };
        let source = format!("oci-archive:{}", archive.display());
        let inspected: Value = serde_json::from_str(&skopeo(&["inspect", &source])).unwrap();
        assert_eq!(inspected["Digest"], written.digest.as_str());
        assert_eq!(inspected["Architecture"], "amd64");
        let copy = format!("oci:{}:copied", dir.path().join("layout").display());
        skopeo(&["copy", "--quiet", "--preserve-digests", &source, &copy]);
        let copied: Value = serde_json::from_str(&skopeo(&["inspect", &copy])).unwrap();
        assert_eq!(copied["Digest"], written.digest.as_str());
    }

    #[test]
    fn references_are_normalized_as_the_kubelet_asks_for_them() {
        assert_eq!(normalized("mca:0.1.0"), "docker.io/library/mca:0.1.0");
        assert_eq!(normalized("me/mca:1"), "docker.io/me/mca:1");
        assert_eq!(normalized("registry.local/mca:1"), "registry.local/mca:1");
        assert_eq!(normalized("localhost:5000/mca:1"), "localhost:5000/mca:1");
        assert_eq!(normalized("localhost/mca:1"), "localhost/mca:1");
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn a_reference_needs_a_tag() {
        for reference in ["mca", ":tag", "localhost:5000/mca"] {
            let image = Image {
                reference,
                ..image(b"")
            };
            assert!(image.archive().is_err(), "{reference}");
        }
    }
}
