//! Fuzzes `mca inject`'s manifest reading and the pod mutation: any text must give manifests
//! or an error, never a panic; what it injects must inject to itself (idempotence).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::{
    inject::{Settings, manifest},
    intercept::Mode,
};

fuzz_target!(|text: &str| {
    let settings = Settings {
        image: "mca:fuzz".to_owned(),
        mode: Mode::Auto,
        config_secret: Some("routes".to_owned()),
        token_expiration_seconds: 3607,
    };
    if let Ok((yaml, _)) = manifest::inject_yaml(text, &settings) {
        let (again, _) = manifest::inject_yaml(&yaml, &settings).expect("its own output reads");
        assert_eq!(again, yaml, "injecting twice differs from once");
    }
});
