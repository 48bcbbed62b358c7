//! Pod Security Admission: the level a namespace enforces
//! (`pod-security.kubernetes.io/enforce`) decides which mode of MCA its pods may have.
//!
//! eBPF interception needs what the `baseline` level forbids: the `BPF` and `NET_ADMIN`
//! capabilities and a `hostPath` volume (the host's cgroup2 hierarchy). Env mode needs
//! nothing and its sidecar meets `restricted` (non-root, no privilege escalation, every
//! capability dropped, the `RuntimeDefault` seccomp profile). Injecting eBPF mode into such a
//! namespace would have the API server refuse the pod, and a Deployment there would silently
//! get no pods; so in a namespace that enforces `baseline` or `restricted` MCA is injected in
//! env mode, with a warning saying so.

use std::borrow::Cow;

use super::Settings;
use crate::intercept::Mode;

/// The namespace label Pod Security Admission enforces.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Anything goes (also a namespace without the label, as the API server's default).
    Privileged,
    /// No capabilities beyond the default set, no `hostPath`.
    Baseline,
    /// Baseline, and non-root, no privilege escalation, capabilities dropped, a seccomp
    /// profile.
    Restricted,
}

impl Level {
    /// The level a namespace label value enforces. An unknown value is enforced by the API
    /// server as `restricted`, so it is read as that.
    pub fn from_label(value: Option<&str>) -> Self {
        match value {
            None | Some("privileged") => Self::Privileged,
            Some("baseline") => Self::Baseline,
            Some(_) => Self::Restricted,
        }
    }

    /// The level's name, as the label spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// The settings a namespace enforcing `level` admits, and a warning when they differ from
/// `settings` (eBPF or auto mode become env mode above `privileged`).
pub fn admitted(settings: &Settings, level: Level) -> (Cow<'_, Settings>, Option<String>) {
    if level == Level::Privileged || settings.mode == Mode::Env {
        return (Cow::Borrowed(settings), None);
    }
    let warning = format!(
        "MCA injected in env mode, not {}: the namespace enforces PodSecurity {:?}, which \
         forbids what eBPF interception needs (capabilities BPF and NET_ADMIN, a hostPath)",
        match settings.mode {
            Mode::Auto => "auto",
            _ => "ebpf",
        },
        level.name(),
    );
    let env = Settings {
        mode: Mode::Env,
        ..settings.clone()
    };
    (Cow::Owned(env), Some(warning))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: Mode) -> Settings {
        Settings {
            image: "mca:test".to_owned(),
            mode,
            config_secret: None,
            token_expiration_seconds: 3607,
            service_port: 443,
        }
    }

    #[test]
    fn levels_are_read_as_the_api_server_enforces_them() {
        assert_eq!(Level::from_label(None), Level::Privileged);
        assert_eq!(Level::from_label(Some("privileged")), Level::Privileged);
        assert_eq!(Level::from_label(Some("baseline")), Level::Baseline);
        assert_eq!(Level::from_label(Some("restricted")), Level::Restricted);
        assert_eq!(Level::from_label(Some("Baseline")), Level::Restricted);
    }

    #[test]
    fn above_privileged_only_env_mode_is_injected_with_a_warning() {
        for mode in [Mode::Auto, Mode::Ebpf, Mode::Env] {
            let asked = settings(mode);
            let (same, none) = admitted(&asked, Level::Privileged);
            assert_eq!((same.mode, none), (mode, None));
            for level in [Level::Baseline, Level::Restricted] {
                let (got, warning) = admitted(&asked, level);
                assert_eq!(got.mode, Mode::Env);
                assert_eq!(warning.is_some(), mode != Mode::Env, "{mode:?} {level:?}");
                if let Some(warning) = warning {
                    assert!(warning.contains(level.name()), "{warning}");
                }
            }
        }
    }
}
