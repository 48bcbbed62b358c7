//! What a server process (and its worker processes, for nginx) uses, from `/proc`.

use anyhow::Context;

/// The process and every descendant (nginx's workers).
fn family(pid: u32) -> Vec<u32> {
    let mut family = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return family;
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(pid).ok()?.1)))
        .collect();
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    family
}

/// (user + system CPU ticks, parent pid) of one process.
fn stat(pid: u32) -> anyhow::Result<(u64, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is the first.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let parent = fields[1].parse()?;
    let ticks = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok((ticks, parent))
}

/// Resident memory of the process and its workers, in KiB.
pub fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in family(pid) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .context("VmRSS")?;
    }
    Ok(total)
}

/// CPU time used so far by the process and its workers, in seconds: the scheduler's count
/// in nanoseconds of each of their threads, as the 10 ms ticks of `/proc/PID/stat` would
/// round a phase of a second or less to a few ticks. Where the kernel keeps no such count,
/// the ticks (which also hold the time of threads that have ended).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let family = family(pid);
    if let Some(nanoseconds) = family
        .iter()
        .map(|&pid| scheduled_ns(pid))
        .sum::<Option<u64>>()
    {
        return Ok(nanoseconds as f64 / 1e9);
    }
    let ticks: u64 = family
        .into_iter()
        .map(|pid| stat(pid).map(|(ticks, _)| ticks))
        .sum::<anyhow::Result<u64>>()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100);
    Ok(ticks as f64 / per_second as f64)
}

/// The time every live thread of `pid` has run, from `/proc/PID/task/TID/schedstat`.
fn scheduled_ns(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .map(|task| {
            let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            text.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}
