//! Fuzzes what the operator reads from the cluster inventory: a provider file, a
//! `ClusterProfile` and an exec plugin's output. Reading never panics; a plan only ever
//! sends to an `https://` server named by the profile, with a provider of the file; and a
//! refused plugin output is never quoted in the reason.
//!
//! Input: the provider file, a NUL byte, the profile, a NUL byte, the plugin's output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::operator::inventory::{exec, profile::ClusterProfile, provider::Providers};

fuzz_target!(|input: &[u8]| {
    let mut parts = input.splitn(3, |&b| b == 0);
    let file = std::str::from_utf8(parts.next().unwrap_or_default()).unwrap_or_default();
    let profile = parts.next().unwrap_or_default();
    let output = parts.next().unwrap_or_default();
    if let (Ok(providers), Ok(profile)) = (
        Providers::parse(file),
        serde_json::from_slice::<ClusterProfile>(profile),
    ) {
        let _ = profile.labels();
        let _ = profile.reported_down();
        if let Ok(plan) = providers.plan(&profile) {
            assert!(plan.server.starts_with("https://"));
            assert!(providers.providers.iter().any(|p| p.name == plan.provider));
            assert_eq!(
                profile.access_provider(&plan.provider).map(|a| &a.cluster.server),
                Some(&plan.server)
            );
            assert_eq!(plan.exec_info["apiVersion"], plan.api_version.as_str());
        }
    }
    for api_version in [
        "client.authentication.k8s.io/v1",
        "client.authentication.k8s.io/v1beta1",
    ] {
        if let Err(reason) = exec::parse(output, api_version) {
            let token = serde_json::from_slice::<serde_json::Value>(output)
                .ok()
                .and_then(|v| v["status"]["token"].as_str().map(str::to_owned));
            if let Some(token) = token.filter(|t| t.len() >= 12) {
                assert!(!reason.contains(&token), "{reason}");
            }
        }
    }
});
