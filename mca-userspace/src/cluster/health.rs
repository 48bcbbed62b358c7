//! Whether a cluster takes requests: active probes of its health path, with backoff and jitter,
//! and passive ejection after consecutive failures to connect.
//!
//! A cluster starts healthy. It is taken out after `unhealthyAfter` consecutive failed probes,
//! or as many consecutive requests that could not connect; it comes back after
//! `healthyAfter` consecutive passed probes. While probes fail, they back off (doubling, up to
//! eight intervals); every delay is jittered by ±20% so that many sidecars do not probe in
//! step.
//!
//! A cluster the configuration reports down ([`HealthSpec::reported_down`]: a fleet manager
//! said so) starts and stays unhealthy, whatever its probes say.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use crate::config::HealthSpec;

/// A cluster's health.
#[derive(Debug)]
pub struct Health {
    spec: HealthSpec,
    healthy: AtomicBool,
    /// Requests in a row that could not connect; reset by any answer. An atomic, since every
    /// request touches it.
    connect_failures: AtomicU32,
    counters: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    probe_failures: u32,
    probe_successes: u32,
    last_error: Option<String>,
}

/// A change of health, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Taken out of its routes, and why.
    Down(String),
    /// Back in its routes.
    Up,
}

impl Health {
    /// A healthy cluster checked as `spec` says.
    pub fn new(spec: HealthSpec) -> Self {
        Self {
            healthy: AtomicBool::new(spec.reported_down.is_none()),
            spec,
            connect_failures: AtomicU32::new(0),
            counters: Mutex::default(),
        }
    }

    /// How it is probed.
    pub fn spec(&self) -> &HealthSpec {
        &self.spec
    }

    /// Whether routes may send to it.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Why it is unhealthy, if it is.
    pub fn problem(&self) -> Option<String> {
        if self.is_healthy() {
            return None;
        }
        if let Some(why) = &self.spec.reported_down {
            return Some(format!("reported down: {why}"));
        }
        self.counters().last_error.clone()
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a probe's outcome.
    pub fn probed(&self, outcome: Result<(), String>) -> Option<Transition> {
        let mut counters = self.counters();
        match outcome {
            Ok(()) => {
                counters.probe_failures = 0;
                counters.probe_successes = counters.probe_successes.saturating_add(1);
                if !self.is_healthy()
                    && self.spec.reported_down.is_none()
                    && counters.probe_successes >= self.spec.healthy_after
                {
                    self.connect_failures.store(0, Ordering::Relaxed);
                    counters.last_error = None;
                    self.healthy.store(true, Ordering::Relaxed);
                    return Some(Transition::Up);
                }
                None
            }
            Err(why) => {
                counters.probe_successes = 0;
                counters.probe_failures = counters.probe_failures.saturating_add(1);
                let why = format!(
                    "{} consecutive failed probes of {} (last: {why})",
                    counters.probe_failures, self.spec.path
                );
                let down = counters.probe_failures >= self.spec.unhealthy_after;
                self.fail(&mut counters, why, down)
            }
        }
    }

    /// Records a request that could not connect to the cluster.
    pub fn connect_failed(&self, why: &str) -> Option<Transition> {
        let failures = self.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let why = format!("{failures} consecutive requests could not connect (last: {why})");
        let down = failures >= self.spec.unhealthy_after;
        self.fail(&mut self.counters(), why, down)
    }

    /// Records a request the cluster answered. (Writes only after failures, so the cache line
    /// stays shared between cores while all is well.)
    pub fn answered(&self) {
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
        }
    }

    fn fail(&self, counters: &mut Counters, why: String, down: bool) -> Option<Transition> {
        counters.last_error = Some(why.clone());
        (down && self.healthy.swap(false, Ordering::Relaxed)).then_some(Transition::Down(why))
    }

    /// How long until the next probe; `jitter` in `[0, 1)` spreads it by ±20%.
    pub fn next_probe_in(&self, jitter: f64) -> Duration {
        let failures = self.counters().probe_failures.min(3);
        let backoff = self.spec.interval * (1 << failures);
        backoff.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(HealthSpec {
            unhealthy_after: 3,
            healthy_after: 2,
            ..HealthSpec::default()
        })
    }

    #[test]
    fn probes_take_a_cluster_out_and_bring_it_back() {
        let health = health();
        assert_eq!(health.probed(Err("503".into())), None);
        assert_eq!(health.probed(Err("503".into())), None);
        assert!(health.is_healthy(), "two failures are not three");
        let Some(Transition::Down(why)) = health.probed(Err("refused".into())) else {
            panic!("the third failure takes it out");
        };
        assert!(why.contains("3 consecutive failed probes of /readyz (last: refused)"));
        assert!(!health.is_healthy());
        assert_eq!(health.problem().as_deref(), Some(why.as_str()));
        assert_eq!(health.probed(Ok(())), None, "one success is not two");
        assert_eq!(health.probed(Err("flap".into())), None);
        assert_eq!(health.probed(Ok(())), None);
        assert_eq!(health.probed(Ok(())), Some(Transition::Up));
        assert!(health.is_healthy() && health.problem().is_none());
    }

    #[test]
    fn connection_failures_eject_and_answers_reset_them() {
        let health = health();
        health.connect_failed("refused");
        health.connect_failed("refused");
        health.answered();
        health.connect_failed("refused");
        health.connect_failed("refused");
        assert!(health.is_healthy());
        assert!(matches!(
            health.connect_failed("refused"),
            Some(Transition::Down(_))
        ));
        assert!(!health.is_healthy());
        // Only probes bring it back.
        health.answered();
        assert!(!health.is_healthy());
        health.probed(Ok(()));
        assert_eq!(health.probed(Ok(())), Some(Transition::Up));
    }

    #[test]
    fn a_cluster_reported_down_stays_out_whatever_its_probes_say() {
        let health = Health::new(HealthSpec {
            reported_down: Some("ControlPlaneHealthy=False".to_owned()),
            ..HealthSpec::default()
        });
        assert!(!health.is_healthy(), "out from the start");
        for _ in 0..5 {
            assert_eq!(health.probed(Ok(())), None);
        }
        health.answered();
        assert!(!health.is_healthy());
        health.connect_failed("refused");
        assert_eq!(
            health.problem().as_deref(),
            Some("reported down: ControlPlaneHealthy=False")
        );
    }

    #[test]
    fn probes_back_off_with_jitter() {
        let health = health();
        let interval = health.spec().interval;
        assert_eq!(health.next_probe_in(0.5), interval);
        assert_eq!(health.next_probe_in(0.0), interval.mul_f64(0.8));
        assert_eq!(health.next_probe_in(1.0), interval.mul_f64(1.2));
        health.probed(Err("x".into()));
        assert_eq!(health.next_probe_in(0.5), interval * 2);
        for _ in 0..10 {
            health.probed(Err("x".into()));
        }
        assert_eq!(health.next_probe_in(0.5), interval * 8, "capped");
        health.probed(Ok(()));
        assert_eq!(health.next_probe_in(0.5), interval);
    }
}
