//! An unmodified in-cluster kube-rs client, run inside the pod sandbox by the e2e tests:
//! `Client::try_default()` finds the (fake) ServiceAccount and KUBERNETES_SERVICE_HOST/PORT
//! exactly as in a real pod.
//!
//! Usage: `mca-kube-client [--http2 | --context NAME] list NS | get NS NAME | create NS NAME |
//! watch NS NAME | watch-many NS NAME COUNT | delete NS NAME | poll NS COUNT MILLIS |
//! reflect-configmaps NS`
//!
//! `poll` is a long-lived client: one `Client` (the CA and token loaded once, as controllers
//! do) lists the namespace COUNT times, MILLIS apart, printing `ok N` or `error N: why` each
//! time.
//!
//! `reflect-configmaps` is an informer: kube-runtime's `watcher` (list, then watch from the
//! list's version, relisting when told to) feeding a reflector store, printing the store's
//! sorted names (`store a,b`) after every event, until it is killed.
//!
//! kube-rs's own connector speaks only HTTP/1.1; `--http2` builds the same client over a hyper
//! client that negotiates HTTP/2, so every request shares one connection. `--context NAME`
//! uses that context of the kubeconfig in `KUBECONFIG` instead of the in-cluster config.

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    api::{PostParams, WatchEvent, WatchParams},
    client::ConfigExt,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let client = match args.first().map(String::as_str) {
        Some("--http2") => {
            args.remove(0);
            client(true).await?
        }
        Some("--context") => {
            let context = args.drain(..2).nth(1);
            let options = kube::config::KubeConfigOptions {
                context,
                ..Default::default()
            };
            Client::try_from(Config::from_kubeconfig(&options).await?)?
        }
        _ => client(false).await?,
    };
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client, arg(1));
    match arg(0) {
        "poll" => {
            let count: u32 = arg(2).parse()?;
            let pause = std::time::Duration::from_millis(arg(3).parse()?);
            for n in 0..count {
                match pods.list(&Default::default()).await {
                    Ok(_) => println!("ok {n}"),
                    Err(error) => println!("error {n}: {error:?}"),
                }
                tokio::time::sleep(pause).await;
            }
        }
        "list" => {
            for pod in pods.list(&Default::default()).await? {
                println!("{}", pod.metadata.name.unwrap_or_default());
            }
        }
        "get" => {
            let pod = pods.get(arg(2)).await?;
            println!(
                "{} {}",
                arg(2),
                pod.status.and_then(|s| s.phase).unwrap_or_default()
            );
        }
        "create" => {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": arg(2)},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]}
            }))?;
            let created = pods.create(&PostParams::default(), &pod).await?;
            println!(
                "{} {}",
                arg(2),
                created.metadata.resource_version.unwrap_or_default()
            );
        }
        "watch" => {
            // Watch the namespace until the named pod shows up.
            let mut events = pods
                .watch(&WatchParams::default().timeout(30), "0")
                .await?
                .boxed();
            while let Some(event) = events.try_next().await? {
                if let WatchEvent::Added(pod) = event
                    && pod.metadata.name.as_deref() == Some(arg(2))
                {
                    println!("ADDED {}", arg(2));
                    break;
                }
            }
        }
        "watch-many" => watch_many(&pods, arg(2), arg(3).parse()?).await?,
        "reflect-configmaps" => {
            use k8s_openapi::api::core::v1::ConfigMap;
            use kube::runtime::{WatchStreamExt, reflector, watcher};
            let configmaps: Api<ConfigMap> = Api::namespaced(pods.into_client(), arg(1));
            let (store, writer) = reflector::store();
            let mut events = reflector(writer, watcher(configmaps, watcher::Config::default()))
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                if let Err(error) = event {
                    println!("error {error}");
                    continue;
                }
                let mut names: Vec<String> = store
                    .state()
                    .iter()
                    .filter_map(|cm| cm.metadata.name.clone())
                    .collect();
                names.sort();
                println!("store {}", names.join(","));
            }
        }
        "delete" => {
            pods.delete(arg(2), &Default::default()).await?;
            println!("deleted {}", arg(2));
        }
        other => anyhow::bail!("unknown command {other:?}"),
    }
    Ok(())
}

/// The in-cluster client, over HTTP/2 when asked.
async fn client(http2: bool) -> anyhow::Result<Client> {
    let config = Config::infer().await?;
    if !http2 {
        return Ok(Client::try_from(config)?);
    }
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_only()
        .enable_all_versions()
        .build();
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}

/// Opens `count` watches at once; prints `watching N` once every one has its response headers,
/// then `ADDED name i` as each sees the pod `name`.
async fn watch_many(pods: &Api<Pod>, name: &str, count: usize) -> anyhow::Result<()> {
    let params = WatchParams::default().timeout(60);
    // The first one opens the connection; over HTTP/2 the rest share it.
    let mut watches = vec![pods.watch(&params, "0").await?];
    watches.extend(
        futures_util::future::try_join_all((1..count).map(|_| pods.watch(&params, "0"))).await?,
    );
    println!("watching {count}");
    let seen = watches
        .into_iter()
        .enumerate()
        .map(|(i, events)| async move {
            let mut events = events.boxed();
            while let Some(event) = events.try_next().await? {
                if let WatchEvent::Added(pod) = event
                    && pod.metadata.name.as_deref() == Some(name)
                {
                    println!("ADDED {name} {i}");
                    return Ok(());
                }
            }
            anyhow::bail!("watch {i} ended before {name} was added")
        });
    futures_util::future::try_join_all(seen).await?;
    Ok(())
}
