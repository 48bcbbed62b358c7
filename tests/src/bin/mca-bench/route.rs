//! What a routing decision costs: 100 routes compiled from a configuration, then `decide` and
//! `pick` for a mix of requests (most matching late or not at all, the worst case for an
//! ordered rule list), timed and with allocations counted.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use mca::{
    config::Config,
    reqinfo::RequestInfo,
    route::{self, ClusterId, ClusterView, Decision, Object, selector::Selector},
};

/// Counts allocations, so the bench can show that deciding makes none.
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

struct AllHealthy;

impl ClusterView for AllHealthy {
    fn healthy(&self, _: ClusterId) -> bool {
        true
    }
    fn in_flight(&self, _: ClusterId) -> usize {
        0
    }
}

/// A configuration with `count` routes over four clusters, varied like real ones.
fn config(count: usize) -> String {
    let mut yaml = String::from("clusters:\n");
    for name in ["east", "west", "north"] {
        yaml += &format!("  - {{name: {name}, server: 'https://{name}:6443', token: t}}\n");
    }
    yaml += "routes:\n";
    for i in 0..count {
        let to = ["east", "west", "north"][i % 3];
        let conditions = match i % 4 {
            0 => format!("namespaces: [team-{i}, 'b-{i}-*']"),
            1 => format!(
                "namespaces: [team-{i}], resources: [configmaps, apps/deployments], verbs: [get, list, watch]"
            ),
            2 => format!(
                "resources: ['group-{i}.example/widgets'], labelSelector: 'tier=web,shard in (a, b)'"
            ),
            _ => format!("originalDestination: ['198.51.100.{}:443']", i % 250),
        };
        yaml += &format!(
            "  - name: route-{i}\n    match: {{{conditions}}}\n    to: {{clusters: [{to}, local], strategy: failover}}\n"
        );
    }
    yaml + "defaultRoute: {clusters: [local, east, west], strategy: consistentHash}\n"
}

/// Times `decide` + `pick` with 100 routes and prints nanoseconds and allocations per call.
pub fn run(decisions: u32) -> anyhow::Result<()> {
    let config = Config::parse(&config(100), Path::new("."), mca::config::Schema::Full)
        .map_err(|error| anyhow::anyhow!("the bench's configuration: {error:?}"))?;
    let router = &config.router;
    let targets = [
        ("GET", "/api/v1/namespaces/team-99/configmaps?watch=1"),
        ("GET", "/api/v1/namespaces/b-96-x/pods"),
        (
            "GET",
            "/apis/group-98.example/v1/widgets?labelSelector=tier%3Dweb,shard%3Da",
        ),
        ("PUT", "/api/v1/namespaces/default/configmaps/settings"),
        ("GET", "/version"),
    ];
    let requests: Vec<(RequestInfo, Option<Selector>)> = targets
        .iter()
        .map(|(method, target)| {
            let info = RequestInfo::from_target(method, target).expect("a plain path");
            let selector = target
                .split_once("labelSelector=")
                .map(|(_, text)| Selector::parse(&text.replace("%3D", "=")).expect("valid"));
            (info, selector)
        })
        .collect();
    let view = AllHealthy;
    let decide = |(info, selector): &(RequestInfo, Option<Selector>)| {
        let facts = route::Request {
            info,
            selector: selector.as_ref(),
            object: Object::NotRead,
            original_destination: Some("198.51.100.200:443".parse().expect("an address")),
        };
        match router.decide(&facts) {
            Decision::Route { target, .. } => target.pick(&facts, &view),
            Decision::NeedsObject => None,
        }
    };
    // Warm up, then measure.
    for request in &requests {
        black_box(decide(request));
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    for i in 0..decisions {
        black_box(decide(&requests[i as usize % requests.len()]));
    }
    let elapsed = start.elapsed();
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    println!(
        "routing decision with {} routes: {:.0} ns per decide + pick (mean of {decisions}), \
         {:.2} allocations per decision",
        router.rules().len(),
        elapsed.as_nanos() as f64 / f64::from(decisions),
        allocated as f64 / f64::from(decisions)
    );
    Ok(())
}
