//! Finding cgroups: the cgroup v2 mount (wherever it is: `/sys/fs/cgroup`,
//! `/sys/fs/cgroup/unified` on hybrid hosts, ...) and the cgroup a process runs in.

use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`; `except` is a
/// mount to pass over (the host's hierarchy mounted into a container, which is not the one
/// this process's cgroup path is relative to).
pub fn cgroup2_mount(except: Option<&Path>) -> io::Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    parse_cgroup2_mount(&mountinfo, except)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 filesystem is mounted"))
}

/// The mount point of the first `cgroup2` entry in a mountinfo table that is not `except`.
fn parse_cgroup2_mount(mountinfo: &str, except: Option<&Path>) -> Option<PathBuf> {
    let except = except.map(|path| path.components().collect::<PathBuf>());
    mountinfo.lines().find_map(|line| {
        // `id parent major:minor root mountpoint options [optional...] - fstype source super`
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mountpoint =
            (fstype == "cgroup2").then(|| left.split_whitespace().nth(4).map(unescape))??;
        (Some(&mountpoint) != except.as_ref()).then_some(mountpoint)
    })
}

/// mountinfo escapes spaces and the like as `\ooo` octal.
fn unescape(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// This process's cgroup v2 directory (the `0::` line of `/proc/self/cgroup`, under `mount`).
pub fn own_cgroup(mount: &Path) -> io::Result<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/cgroup")?;
    let relative = table
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not in a cgroup v2 hierarchy"))?;
    Ok(mount.join(relative.trim_start_matches('/')))
}

/// The directory under `root` whose cgroup id is `id`, searched breadth-first at most
/// `depth` levels down. A container with a cgroup namespace of its own sees its cgroup as
/// the root of its cgroup mount; the same cgroup, by id, is found in the host's hierarchy
/// mounted into it, and with it the pod's cgroup (its parent).
pub fn find_by_id(root: &Path, id: u64, depth: usize) -> io::Result<Option<PathBuf>> {
    let mut level = vec![root.to_owned()];
    for _ in 0..=depth {
        let mut next = Vec::new();
        for dir in level {
            if cgroup_id(&dir)? == id {
                return Ok(Some(dir));
            }
            // A cgroup that went away meanwhile is simply not it.
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(entry.path());
                }
            }
        }
        level = next;
    }
    Ok(None)
}

/// Whether `path` is named as the kubelet names a pod's cgroup: `pod<uid>` (cgroupfs driver)
/// or `kubepods[-<qos>]-pod<uid with _ for ->.slice` (systemd driver). MCA attaches its
/// programs to its container's parent only when that is a pod's: on a node without pod
/// cgroups (`cgroupsPerQOS: false`), the parent holds every pod's containers, and the
/// redirect would hand MCA's credentials to all of them.
pub fn is_pod_cgroup(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let name = name.strip_suffix(".slice").unwrap_or(name);
    let Some(at) = name.rfind("pod") else {
        return false;
    };
    let uid = &name[at + 3..];
    let prefix_ok = at == 0 || name[..at].ends_with('-');
    prefix_ok
        && uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-' || b == b'_',
            _ => b.is_ascii_hexdigit() && !b.is_ascii_uppercase(),
        })
}

/// A cgroup's id, as `bpf_get_current_cgroup_id()` reports it: its directory's inode.
pub fn cgroup_id(path: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_wherever_it_is_mounted() {
        let hybrid = "\
25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,name=systemd";
        assert_eq!(
            parse_cgroup2_mount(hybrid, None),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let escaped = "40 1 0:35 / /mnt/my\\040cgroups rw - cgroup2 none rw";
        assert_eq!(
            parse_cgroup2_mount(escaped, None),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
        assert_eq!(
            parse_cgroup2_mount("25 30 0:22 / /sys rw - sysfs sysfs rw", None),
            None
        );
        // A container: the host's hierarchy mounted (first) beside its own.
        let container = "\
50 40 0:29 /../.. /host/sys/fs/cgroup ro - cgroup2 cgroup2 rw
51 40 0:29 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw";
        assert_eq!(
            parse_cgroup2_mount(container, Some(Path::new("/host/sys/fs/cgroup/"))),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn a_directory_is_found_by_its_id_within_the_depth() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join("kubepods.slice/burstable/pod-1234");
        let container = pod.join("cri-containerd-abcd.scope");
        std::fs::create_dir_all(&container).unwrap();
        std::fs::create_dir_all(root.path().join("system.slice/other")).unwrap();
        let id = cgroup_id(&container).unwrap();
        let found = find_by_id(root.path(), id, 8).unwrap();
        assert_eq!(found.as_deref(), Some(container.as_path()));
        assert_eq!(found.unwrap().parent(), Some(pod.as_path()));
        assert_eq!(
            find_by_id(root.path(), id, 2).unwrap(),
            None,
            "deeper than 2"
        );
        assert_eq!(find_by_id(root.path(), u64::MAX, 8).unwrap(), None);
    }

    #[test]
    fn pod_cgroups_are_told_from_the_slices_above_them() {
        let uid = "0f3c2a1b-9d8e-4f70-a1b2-c3d4e5f60718";
        for pod in [
            format!("/sys/fs/cgroup/kubepods/besteffort/pod{uid}"),
            format!("/sys/fs/cgroup/kubepods/pod{uid}"),
            format!(
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                uid.replace('-', "_")
            ),
            format!(
                "/sys/fs/cgroup/kubepods.slice/kubepods-pod{}.slice",
                uid.replace('-', "_")
            ),
        ] {
            assert!(is_pod_cgroup(Path::new(&pod)), "{pod}");
        }
        for other in [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/kubepods",
            "/sys/fs/cgroup/kubepods/besteffort",
            "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice",
            "/sys/fs/cgroup/system.slice/containerd.service",
            "/sys/fs/cgroup/k8s.io",
            "/sys/fs/cgroup/user.slice/user-0.slice/session-3.scope",
        ] {
            assert!(!is_pod_cgroup(Path::new(other)), "{other}");
        }
        let short = format!("/sys/fs/cgroup/kubepods/pod{}", &uid[..35]);
        let upper = format!("/sys/fs/cgroup/kubepods/pod{}", uid.to_uppercase());
        let glued = format!("/sys/fs/cgroup/kubepods/xpod{uid}");
        for odd in [short, upper, glued] {
            assert!(!is_pod_cgroup(Path::new(&odd)), "{odd}");
        }
    }

    #[test]
    fn this_process_has_a_cgroup_with_an_id() {
        let own = own_cgroup(&cgroup2_mount(None).unwrap()).unwrap();
        assert!(cgroup_id(&own).unwrap() > 0, "{}", own.display());
    }
}
