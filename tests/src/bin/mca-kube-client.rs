//! An unmodified in-cluster kube-rs client, run inside the pod sandbox by the e2e tests:
//! `Client::try_default()` finds the (fake) ServiceAccount and KUBERNETES_SERVICE_HOST/PORT
//! exactly as in a real pod.
//!
//! Usage: `mca-kube-client list NS | get NS NAME | create NS NAME | watch NS NAME |
//! delete NS NAME`

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{PostParams, WatchEvent, WatchParams},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client = Client::try_default().await?;
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client, arg(1));
    match arg(0) {
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
        "delete" => {
            pods.delete(arg(2), &Default::default()).await?;
            println!("deleted {}", arg(2));
        }
        other => anyhow::bail!("unknown command {other:?}"),
    }
    Ok(())
}
