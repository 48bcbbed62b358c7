//! wrk (Debian's), the load generator for the request workloads: HTTP/1.1 keep-alive, a fixed
//! number of connections each sending one request at a time, for a fixed time.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, bail, ensure};

use super::servers::Target;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// A request to send.
pub struct Load<'a> {
    /// Path and query.
    pub path: &'a str,
    /// A body to POST, from this file; `None` sends GETs.
    pub post: Option<&'a Path>,
    /// Connections (wrk threads: at most 2, the machine's cores).
    pub connections: u32,
    /// For how long.
    pub duration: Duration,
}

/// Runs `load` against `target`; fails if any request failed or was answered other than 2xx.
pub fn run(target: &Target, load: &Load<'_>, scripts: &Path) -> anyhow::Result<Run> {
    let mut command = Command::new("wrk");
    command
        .arg(format!("--threads={}", load.connections.min(2)))
        .arg(format!("--connections={}", load.connections))
        .arg(format!("--duration={}s", load.duration.as_secs()))
        .arg("--latency")
        .arg("--timeout=10s");
    if let Some(token) = &target.token {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = load.post {
        let script = scripts.join("post.lua");
        std::fs::write(
            &script,
            format!(
                "local f = io.open(\"{}\", \"rb\")\n\
                 wrk.method = \"POST\"\n\
                 wrk.body = f:read(\"*a\")\n\
                 f:close()\n\
                 wrk.headers[\"Content-Type\"] = \"application/json\"\n",
                body.display()
            ),
        )?;
        command.arg("--script").arg(&script);
    }
    command.arg(target.url(load.path));
    let output = command.output().context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "wrk failed: {text}");
    parse(&text).with_context(|| format!("{}: {text}", target.name))
}

fn parse(text: &str) -> anyhow::Result<Run> {
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
    {
        bail!("some requests failed: {}", line.trim());
    }
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors")) {
        bail!("some requests failed: {}", line.trim());
    }
    let field = |prefix: &str| -> anyhow::Result<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("no {prefix:?} line"))
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .context("no request count")?
        .parse()?;
    Ok(Run {
        requests,
        rate: field("Requests/sec:")?.parse()?,
        p50: duration(field("50%")?)?,
        p99: duration(field("99%")?)?,
    })
}

/// wrk's `83.00us`, `1.10ms`, `1.00s`, `2.00m`.
fn duration(text: &str) -> anyhow::Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .context("no unit")?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        other => bail!("unit {other:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_report() {
        let report = "Running 10s test @ https://127.0.0.1:1/x\n  2 threads and 16 connections\n  \
            Latency Distribution\n     50%  830.00us\n     75%    1.40ms\n     90%    1.80ms\n     \
            99%    3.00ms\n  130000 requests in 10.00s, 150.00MB read\nRequests/sec:  13000.50\n";
        let run = parse(report).unwrap();
        assert_eq!(run.requests, 130_000);
        assert_eq!(run.rate, 13000.5);
        assert_eq!(run.p50, Duration::from_micros(830));
        assert_eq!(run.p99, Duration::from_millis(3));
        assert!(parse(&format!("{report}  Non-2xx or 3xx responses: 5\n")).is_err());
    }
}
