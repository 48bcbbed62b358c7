//! Fuzzes the webhook's review handling: any body must give an answer or an error, never a
//! panic; an answer is an AdmissionReview that admits, and any patch it carries applies to
//! the pod it was computed for; injection never finds it would lose part of the pod.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::{
    inject::{Settings, pod_security::Level},
    intercept::Mode,
    webhook::review::{Scope, answer},
};

fuzz_target!(|body: &[u8]| {
    let settings = Settings {
        image: "mca:fuzz".to_owned(),
        mode: Mode::Env,
        config_secret: None,
        token_expiration_seconds: 3607,
        service_port: 443,
    };
    let cases = [
        (Scope::Namespace, Level::Privileged),
        (Scope::Annotated, Level::Restricted),
    ];
    for (scope, level) in cases {
        let Ok(review) = answer(body, scope, level, &settings) else {
            continue;
        };
        assert_eq!(review["kind"], "AdmissionReview");
        let response = &review["response"];
        let warnings = response["warnings"].as_array().into_iter().flatten();
        assert!(
            !warnings.filter_map(|w| w.as_str()).any(|w| w.contains("MCA only adds")),
            "{response}"
        );
        let Some(patch) = response.get("patch") else {
            continue;
        };
        assert_eq!(response["allowed"], true);
        let bytes: Vec<u8> = serde_json::from_value(patch.clone()).expect("patch bytes");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSONPatch");
        let request: serde_json::Value = serde_json::from_slice(body).expect("it parsed");
        let mut object = request["request"]["object"].clone();
        json_patch::patch(&mut object, &patch).expect("the patch applies to the pod");
    }
});
