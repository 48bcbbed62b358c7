//! The routing configuration in force, and replacing it while MCA serves.
//!
//! Requests read one [`Routing`] snapshot (the clusters and the compiled routes) for their
//! whole life; a reload builds a complete new snapshot beside the old one and swaps it in at
//! once, so nothing ever sees half a configuration. Clusters whose settings did not change
//! are carried over as they are, with their connections, health and probes; requests and
//! watches already under way finish on the snapshot they started with.
//!
//! The file's directory is watched ([`crate::watch`], which sees a ConfigMap's `..data`
//! symlink swap) and the file compared by content on every change there. A file that does not parse or check, or whose clusters cannot be
//! loaded, is rejected with its problems in the log; the old configuration keeps serving.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;

use crate::{
    cluster::{Registry, Settings},
    config::{Config, Schema},
    route::Router,
    upstream::Source,
    watch::Subscription,
};

/// What requests are routed by.
#[derive(Debug)]
pub struct Routing {
    /// The clusters.
    pub clusters: Arc<Registry>,
    /// The routes to them.
    pub router: Router,
    /// Whether discovery is merged across clusters.
    pub merged_discovery: bool,
}

/// The routing in force, swapped whole on reload.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Routing>,
    reloads: AtomicU64,
    rejected: AtomicU64,
}

/// Where reloads come from and what they need.
pub struct ConfigFile {
    /// The configuration file.
    pub path: PathBuf,
    /// Where the `local` cluster's configuration comes from.
    pub local: Source,
    /// How new clusters are set up.
    pub settings: Settings,
    /// What the file may use.
    pub schema: Schema,
}

impl Live {
    /// The routing `routing`, in force from now.
    pub fn new(routing: Routing) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(routing),
            reloads: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// The routing in force now.
    pub fn load(&self) -> Arc<Routing> {
        self.current.load_full()
    }

    /// Reloads applied and rejected so far.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    /// Watches `from.path` forever, applying each valid change; `applied` runs after each
    /// swap (to rewrite what depends on the clusters, like the fake kubeconfig).
    pub async fn watch(
        self: Arc<Self>,
        from: ConfigFile,
        mut applied: impl FnMut(&Routing) + Send,
    ) {
        let changes = Subscription::new(&[&from.path]);
        let mut seen = std::fs::read(&from.path).ok();
        loop {
            changes.changed().await;
            let Ok(text) = tokio::fs::read(&from.path).await else {
                continue;
            };
            if seen.as_ref() == Some(&text) {
                continue;
            }
            seen = Some(text.clone());
            match self.reload(&from, &text).await {
                Ok(routing) => {
                    applied(&routing);
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        file = %from.path.display(),
                        "configuration rejected; the previous one keeps serving:\n{why}"
                    );
                }
            }
        }
    }

    /// Builds and swaps in the routing `text` describes.
    async fn reload(&self, from: &ConfigFile, text: &[u8]) -> Result<Arc<Routing>, String> {
        let text = String::from_utf8_lossy(text);
        let base = from.path.parent().unwrap_or(Path::new("."));
        let config = Config::parse(&text, base, from.schema).map_err(|error| match error {
            crate::config::ParseError::Syntax(message) => message,
            crate::config::ParseError::Invalid(problems) => problems
                .iter()
                .map(|p| format!("  {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
        })?;
        let old = self.load();
        let clusters = Registry::load(&config, &from.local, &from.settings, Some(&old.clusters))
            .await
            .map_err(|error| format!("  {error}"))?;
        let kept = old.clusters.iter().filter(|c| clusters.holds(c)).count();
        let routing = Arc::new(Routing {
            clusters: Arc::new(clusters),
            router: config.router,
            merged_discovery: config.merged_discovery,
        });
        self.current.store(Arc::clone(&routing));
        let names: Vec<&str> = routing.clusters.iter().map(|c| &**c.name()).collect();
        tracing::info!(
            file = %from.path.display(),
            clusters = %names.join(","),
            kept,
            routes = routing.router.rules().len(),
            "configuration reloaded"
        );
        Ok(routing)
    }
}
