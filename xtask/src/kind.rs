//! `cargo xtask run --kind`: MCA on a kind cluster, the way a user installs it. Create the
//! cluster, build the image as an OCI archive (no container engine) and load it, install the chart, deploy a demo application that
//! lists pods with in-cluster config into a namespace labelled for injection, and check
//! through MCA's own log and metrics that the application's requests went through MCA.
//! `--dry-run` prints every step instead (a golden file keeps the plan honest).

use std::{path::Path, process::Command};

use anyhow::{Context, bail};

/// Where the flow writes the image archive it loads (relative to the workspace root).
const IMAGE_ARCHIVE: &str = "target/mca-image.tar";

/// The cluster, image and namespaces the flow uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// The kind cluster's name.
    pub cluster: String,
    /// The image tag built and loaded.
    pub image: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cluster: "mca".to_owned(),
            image: "mca:dev".to_owned(),
        }
    }
}

/// The demo: a namespace opted into injection, an account allowed to list pods there, and
/// a Deployment that lists them every five seconds with in-cluster configuration.
pub const DEMO: &str = "deploy/examples/kind-demo.yaml";

/// One step: what it does, and the command. A check passes when the command succeeds and
/// its output says what `expect` wants; it is retried for up to a minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// For people.
    pub what: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// For checks: what the output must (not) contain.
    pub expect: Option<Expect>,
}

/// What a check wants of its command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// This text.
    Contains(String),
    /// Not this text.
    Lacks(String),
}

impl Expect {
    fn holds(&self, output: &str) -> bool {
        match self {
            Self::Contains(text) => output.contains(text.as_str()),
            Self::Lacks(text) => !output.contains(text.as_str()),
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Contains(text) => write!(f, "output containing {text}"),
            Self::Lacks(text) => write!(f, "output without {text}"),
        }
    }
}

fn step(what: &str, command: &[&str]) -> Step {
    Step {
        what: what.to_owned(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        expect: None,
    }
}

/// Every step, in order. `helm` is the helm binary to use.
pub fn plan(options: &Options, helm: &str) -> Vec<Step> {
    let (cluster, image) = (options.cluster.as_str(), options.image.as_str());
    let tag = image.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let repository = image.rsplit_once(':').map_or(image, |(repo, _)| repo);
    let context = format!("kind-{cluster}");
    let kubectl = |args: &[&str]| {
        let mut command = vec!["kubectl", "--context", context.as_str()];
        command.extend_from_slice(args);
        command.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let kubectl_step = |what: &str, args: &[&str]| Step {
        what: what.to_owned(),
        command: kubectl(args),
        expect: None,
    };
    let kubectl_check = |what: &str, args: &[&str], expect: Expect| Step {
        what: what.to_owned(),
        command: kubectl(args),
        expect: Some(expect),
    };
    let contains = |text: &str| Expect::Contains(text.to_owned());
    vec![
        step(
            "a kind cluster",
            &[
                "kind", "create", "cluster", "--name", cluster, "--wait", "120s",
            ],
        ),
        step(
            "the image (static mca, eBPF programs embedded) as an OCI archive",
            &[
                "cargo",
                "xtask",
                "image",
                "--release",
                "--tag",
                image,
                "--out",
                IMAGE_ARCHIVE,
            ],
        ),
        step(
            "the image, into the cluster's nodes",
            &[
                "kind",
                "load",
                "image-archive",
                IMAGE_ARCHIVE,
                "--name",
                cluster,
            ],
        ),
        step(
            "the chart: CRDs, operator, webhook",
            &[
                helm,
                "upgrade",
                "--install",
                "mca",
                "deploy/helm/mca",
                "--kube-context",
                &context,
                "--namespace",
                "mca-system",
                "--create-namespace",
                "--set",
                &format!("image.repository={repository}"),
                "--set",
                &format!("image.tag={tag}"),
                "--set",
                "image.pullPolicy=Never",
                "--wait",
                "--timeout",
                "5m",
            ],
        ),
        kubectl_check(
            "the operator made the webhook's certificate and set its caBundle",
            &[
                "get",
                "mutatingwebhookconfiguration",
                "mca-injector",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ],
            contains("LS0t"),
        ),
        kubectl_step(
            "the demo application, in a namespace labelled mca.io/inject=enabled",
            &["apply", "-f", DEMO],
        ),
        kubectl_step(
            "the demo is up (MCA passed its startup probe first)",
            &[
                "-n",
                "mca-demo",
                "rollout",
                "status",
                "deployment/lister",
                "--timeout",
                "180s",
            ],
        ),
        kubectl_check(
            "MCA was injected",
            &[
                "-n",
                "mca-demo",
                "get",
                "pods",
                "-l",
                "app=lister",
                "-o",
                "jsonpath={.items[0].spec.initContainers[0].name}",
            ],
            contains("mca"),
        ),
        kubectl_check(
            "the application's lists went through MCA (its access log)",
            &["-n", "mca-demo", "logs", "deployment/lister", "-c", "mca"],
            contains("resource=pods"),
        ),
        kubectl_check(
            "and MCA counted them (its metrics, through the API server's pod proxy)",
            &[
                "-n",
                "mca-demo",
                "get",
                "--raw",
                "/api/v1/namespaces/mca-demo/pods/http:$(POD):9901/proxy/metrics",
            ],
            contains(r#"resource="pods",subresource="",verb="list""#),
        ),
        kubectl_check(
            "the application holds no real token (a ServiceAccount JWT starts eyJ; MCA's does not)",
            &[
                "-n",
                "mca-demo",
                "exec",
                "deployment/lister",
                "-c",
                "lister",
                "--",
                "cat",
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
            ],
            Expect::Lacks("eyJ".to_owned()),
        ),
    ]
}

/// Prints `steps` as `--dry-run` shows them.
pub fn describe(steps: &[Step]) -> String {
    let mut out = String::new();
    for (index, step) in steps.iter().enumerate() {
        out.push_str(&format!(
            "{}. {}\n   $ {}\n",
            index + 1,
            step.what,
            shell_words(&step.command)
        ));
        if let Some(expect) = &step.expect {
            out.push_str(&format!("   expect {expect}\n"));
        }
    }
    out
}

fn shell_words(command: &[String]) -> String {
    command
        .iter()
        .map(|word| {
            let plain = word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@$()".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `steps` from `root`: each must succeed, each check must see its text (retried).
pub fn execute(root: &Path, steps: &[Step], cluster: &str) -> anyhow::Result<()> {
    for tool in ["kind", "docker", "kubectl"] {
        if Command::new(tool).arg("version").output().is_err() {
            bail!(
                "{tool} is not installed: `cargo xtask run --kind` needs kind, docker and kubectl"
            );
        }
    }
    let existing = Command::new("kind").args(["get", "clusters"]).output()?;
    let exists = String::from_utf8_lossy(&existing.stdout)
        .lines()
        .any(|c| c == cluster);
    for (index, step) in steps.iter().enumerate() {
        println!("xtask: {}. {}", index + 1, step.what);
        if index == 0 && exists {
            println!("xtask:    kind cluster {cluster} exists; using it");
            continue;
        }
        let command = resolve_pod(&step.command, root, cluster)?;
        let attempts = if step.expect.is_some() { 30 } else { 1 };
        let mut last = String::new();
        for _ in 0..attempts {
            let output = Command::new(&command[0])
                .args(&command[1..])
                .current_dir(root)
                .output()
                .with_context(|| format!("running {}", command[0]))?;
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            match &step.expect {
                None if output.status.success() => break,
                None => bail!("{} failed:\n{last}", shell_words(&command)),
                Some(expect) if output.status.success() && expect.holds(&last) => break,
                Some(_) => std::thread::sleep(std::time::Duration::from_secs(2)),
            }
        }
        if let Some(expect) = &step.expect
            && !expect.holds(&last)
        {
            bail!("{}: expected {expect}, got:\n{last}", step.what);
        }
    }
    println!("xtask: MCA runs on kind cluster {cluster}; the demo is in namespace mca-demo");
    Ok(())
}

/// Replaces `$(POD)` with the demo pod's name.
fn resolve_pod(command: &[String], root: &Path, cluster: &str) -> anyhow::Result<Vec<String>> {
    if !command.iter().any(|w| w.contains("$(POD)")) {
        return Ok(command.to_vec());
    }
    let context = format!("kind-{cluster}");
    let output = Command::new("kubectl")
        .args([
            "--context",
            &context,
            "-n",
            "mca-demo",
            "get",
            "pods",
            "-l",
            "app=lister",
        ])
        .args(["-o", "jsonpath={.items[0].metadata.name}"])
        .current_dir(root)
        .output()?;
    let pod = String::from_utf8(output.stdout)?;
    Ok(command
        .iter()
        .map(|w| w.replace("$(POD)", pod.trim()))
        .collect())
}
