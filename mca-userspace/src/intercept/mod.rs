//! eBPF interception: the connect hooks that bring an application's API-server connections
//! to MCA without any change to the application.
//!
//! [`Interception::start`] loads the embedded programs (see `mca-ebpf`), attaches them to the
//! pod's cgroup, and fills their maps: which destinations to redirect, where to (MCA's
//! listener), and who is exempt (MCA's own cgroup, so its upstream connections go out). The
//! attachments are bpf links owned by this process and never pinned: if MCA exits or is
//! killed, the kernel detaches them, so no redirect is left pointing at a dead port.

mod cgroup;
pub mod record;

pub use cgroup::cgroup2_mount;

use std::{
    fs::File,
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    path::PathBuf,
    sync::Mutex,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{CgroupAttachMode, CgroupSockAddr, SockOps},
};
use mca_common::{ClientEnd, Config, Destination, counter};

/// The programs, built for `bpfel-unknown-none` by `build.rs`; empty when built without
/// bpf-linker.
static BYTECODE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mca"));

/// How applications reach MCA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// eBPF where it loads; otherwise env overrides, with one log line saying why.
    Auto,
    /// eBPF or fail.
    Ebpf,
    /// Env overrides only (`KUBERNETES_SERVICE_HOST=127.0.0.1`, `KUBERNETES_SERVICE_PORT`).
    Env,
}

/// Why interception could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This binary has no eBPF programs.
    #[error("this mca binary was built without eBPF programs (MCA_EBPF=stub)")]
    NotBuilt,
    /// The cgroup to attach to could not be found or opened.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup (or cgroup table) involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// MCA's cgroup is the root of its cgroup namespace (a container's own), so the pod's
    /// cgroup is not visible, and no host hierarchy was given to find it in.
    #[error(
        "MCA's cgroup is the root of its cgroup namespace, so the pod's cgroup is not visible: \
         mount the host's cgroup2 hierarchy into MCA and pass --host-cgroup-root (mca inject \
         and the webhook do both)"
    )]
    CgroupNamespace,
    /// The cgroup MCA would attach to (its container's parent) is not a pod's.
    #[error(
        "MCA's container's parent cgroup {cgroup} is not named as a pod's (pod<uid>): \
         interception there could reach other pods; name the pod's cgroup with --cgroup"
    )]
    NotAPod {
        /// The parent cgroup.
        cgroup: PathBuf,
    },
    /// MCA's cgroup was not found in the host hierarchy given.
    #[error("MCA's cgroup (id {id}) is not under {root}")]
    NotInHostHierarchy {
        /// The host hierarchy searched.
        root: PathBuf,
        /// MCA's cgroup id.
        id: u64,
    },
    /// The kernel refused the object (no CAP_BPF/CAP_SYS_ADMIN, no BPF support, ...).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program failed to load or attach.
    #[error("program {name}: {}", with_causes(source))]
    Program {
        /// Program name.
        name: &'static str,
        /// aya's error (for a load, with the verifier's log).
        source: aya::programs::ProgramError,
    },
    /// A map was missing or could not be written.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
}

/// What to intercept and where to send it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cgroup to attach to; by default the parent of MCA's own cgroup (the pod's).
    pub cgroup: Option<PathBuf>,
    /// The host's cgroup2 hierarchy, mounted into MCA's container, where MCA finds its own
    /// cgroup (and so the pod's) when a cgroup namespace hides it.
    pub host_cgroup_root: Option<PathBuf>,
    /// Destinations to redirect (the API server's Service and endpoint addresses).
    pub destinations: Vec<SocketAddr>,
    /// MCA's IPv4 listener.
    pub redirect_v4: SocketAddrV4,
    /// MCA's IPv6 listener, if it has one; IPv6 connects go to `::ffff:<v4>` otherwise.
    pub redirect_v6: Option<SocketAddrV6>,
    /// uids whose connects are never redirected, besides MCA's own cgroup.
    pub exempt_uids: Vec<u32>,
    /// Emit aya-log debug events from the programs.
    pub log: bool,
}

/// Active interception; dropping it detaches the programs.
pub struct Interception {
    cgroup: PathBuf,
    originals: Mutex<HashMap<MapData, ClientEnd, Destination>>,
    counters: PerCpuArray<MapData, u64>,
    // Owns the programs and their links: dropped last.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for Interception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interception")
            .field("cgroup", &self.cgroup)
            .finish_non_exhaustive()
    }
}

const SOCK_ADDR_PROGRAMS: [&str; 4] = ["connect4", "connect6", "getpeername4", "getpeername6"];

/// Loads program `$name` as a `$kind` and links it to `$cgroup`. A bpf link carries no attach
/// flags (the kernel rejects them) and always coexists with other programs on the cgroup, so
/// the mode is `Single` (no flags); the link lives as long as MCA's fd to it.
macro_rules! link {
    ($ebpf:expr, $kind:ty, $name:expr, $cgroup:expr) => {{
        let name: &'static str = $name;
        let program: &mut $kind = program(&mut $ebpf, name)?;
        let error = |source| Error::Program { name, source };
        program.load().map_err(error)?;
        program
            .attach($cgroup, CgroupAttachMode::Single)
            .map_err(error)?;
    }};
}

impl Interception {
    /// Loads, configures and attaches the programs.
    pub fn start(settings: &Settings) -> Result<Self, Error> {
        if BYTECODE.is_empty() {
            return Err(Error::NotBuilt);
        }
        let cgroup_err = |path: PathBuf| move |source| Error::Cgroup { path, source };
        let mount = cgroup::cgroup2_mount(settings.host_cgroup_root.as_deref())
            .map_err(cgroup_err("/proc/self/mountinfo".into()))?;
        let own = cgroup::own_cgroup(&mount).map_err(cgroup_err("/proc/self/cgroup".into()))?;
        let own_id = cgroup::cgroup_id(&own).map_err(cgroup_err(own.clone()))?;
        let target = match &settings.cgroup {
            Some(path) if path.is_absolute() => path.clone(),
            Some(path) => mount.join(path),
            // Our cgroup is the root we see: a cgroup namespace hides the pod's.
            None if own == mount => {
                let root = settings
                    .host_cgroup_root
                    .as_ref()
                    .ok_or(Error::CgroupNamespace)?;
                let found = cgroup::find_by_id(root, own_id, 8)
                    .map_err(cgroup_err(root.clone()))?
                    .ok_or_else(|| Error::NotInHostHierarchy {
                        root: root.clone(),
                        id: own_id,
                    })?;
                found.parent().unwrap_or(root).to_owned()
            }
            None => own.parent().unwrap_or(&mount).to_owned(),
        };
        if settings.cgroup.is_none() && !cgroup::is_pod_cgroup(&target) {
            return Err(Error::NotAPod { cgroup: target });
        }
        tracing::debug!(cgroup = %target.display(), own = %own.display(), own_id, "attaching the eBPF programs");
        let cgroup_file = File::open(&target).map_err(cgroup_err(target.clone()))?;

        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new().load(BYTECODE)?;
        configure(&mut ebpf, settings, own_id)?;
        if settings.log {
            start_logger(&mut ebpf);
        }
        for name in SOCK_ADDR_PROGRAMS {
            link!(ebpf, CgroupSockAddr, name, &cgroup_file);
        }
        link!(ebpf, SockOps, "established", &cgroup_file);

        let originals = HashMap::try_from(take_map(&mut ebpf, "ORIGINAL_BY_CLIENT")?)
            .map_err(map_error("ORIGINAL_BY_CLIENT"))?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)
            .map_err(map_error("COUNTERS"))?;
        Ok(Self {
            cgroup: target,
            originals: Mutex::new(originals),
            counters,
            _ebpf: ebpf,
        })
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &std::path::Path {
        &self.cgroup
    }

    /// The address the client at `peer` originally dialled, if its connection was redirected.
    /// Each connection's entry is handed out once.
    pub fn original_destination(&self, peer: SocketAddr) -> Option<SocketAddr> {
        let key = record::client_end(peer);
        let mut originals = self.originals.lock().unwrap_or_else(|e| e.into_inner());
        let original = originals.get(&key, 0).ok()?;
        let _ = originals.remove(&key);
        Some(record::socket_addr(&original))
    }

    /// The programs' counters, summed over CPUs, with their names.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        (0..counter::COUNT)
            .map(|index| {
                let total = self
                    .counters
                    .get(&index, 0)
                    .map(|values| values.iter().sum())
                    .unwrap_or(0);
                (counter::NAMES[index as usize], total)
            })
            .collect()
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(Error::Program {
        name,
        source: aya::programs::ProgramError::UnexpectedProgramType,
    })?;
    program
        .try_into()
        .map_err(|source| Error::Program { name, source })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, Error> {
    ebpf.take_map(name).ok_or(Error::Map {
        name,
        source: aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        },
    })
}

/// Fills the maps the programs read: config, destinations, exemptions.
fn configure(ebpf: &mut Ebpf, settings: &Settings, own_cgroup: u64) -> Result<(), Error> {
    let redirect_ip6 = match settings.redirect_v6 {
        Some(v6) => record::words(v6.ip()),
        None => record::words(&settings.redirect_v4.ip().to_ipv6_mapped()),
    };
    let config = Config {
        redirect_ip4: u32::from_ne_bytes(settings.redirect_v4.ip().octets()),
        redirect_ip6,
        redirect_port: u32::from(settings.redirect_v4.port().to_be()),
        log: u32::from(settings.log),
    };
    let mut array: Array<_, Config> =
        Array::try_from(ebpf.map_mut("CONFIG").ok_or_else(|| missing("CONFIG"))?)
            .map_err(map_error("CONFIG"))?;
    array.set(0, config, 0).map_err(map_error("CONFIG"))?;

    fill_set(
        ebpf,
        "INTERCEPT",
        settings
            .destinations
            .iter()
            .copied()
            .map(record::destination),
    )?;
    fill_set(ebpf, "EXEMPT_CGROUPS", [own_cgroup])?;
    fill_set(ebpf, "EXEMPT_UIDS", settings.exempt_uids.iter().copied())?;
    Ok(())
}

/// Puts `keys` into the hash map `name` used as a set (value 1).
fn fill_set<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    keys: impl IntoIterator<Item = K>,
) -> Result<(), Error> {
    let map = ebpf.map_mut(name).ok_or_else(|| missing(name))?;
    let mut set: HashMap<_, K, u8> = HashMap::try_from(map).map_err(map_error(name))?;
    for key in keys {
        set.insert(key, 1, 0).map_err(map_error(name))?;
    }
    Ok(())
}

/// An error and what caused it, `: `-separated (aya's syscall errors keep the errno in
/// their source).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |source| Error::Map { name, source }
}

fn missing(name: &'static str) -> Error {
    Error::Map {
        name,
        source: aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        },
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones use memory cgroups, so
/// a refusal (no CAP_SYS_RESOURCE) only matters if loading then fails, which says so itself.
fn raise_memlock_limit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(error) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!(%error, "could not lift RLIMIT_MEMLOCK");
    }
}

/// Forwards the programs' aya-log events into MCA's log.
fn start_logger(ebpf: &mut Ebpf) {
    use tokio::io::{Interest, unix::AsyncFd};
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(error) => {
            tracing::warn!(%error, "eBPF debug events unavailable");
            return;
        }
    };
    // SAFETY: the AsyncFd owns the logger, and with it the ring buffer's fd, so the fd stays
    // open for as long as it is registered.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let Ok(mut logger) = registered else {
        return;
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = logger.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
