//! Fuzzes `mca inject`'s manifest reading and the pod mutation: any text must give manifests
//! or an error, never a panic; what it injects must inject to itself (idempotence), and it
//! never finds that injecting would lose part of a pod (it only adds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::{
    inject::{Refusal, Settings, manifest},
    intercept::Mode,
};

fuzz_target!(|text: &str| {
    let settings = Settings {
        image: "mca:fuzz".to_owned(),
        mode: Mode::Auto,
        config_secret: Some("routes".to_owned()),
        token_expiration_seconds: 3607,
        service_port: 443,
    };
    match manifest::inject_yaml(text, &settings) {
        Ok((yaml, _)) => {
            let (again, _) =
                manifest::inject_yaml(&yaml, &settings).expect("its own output reads");
            assert_eq!(again, yaml, "injecting twice differs from once");
        }
        Err(manifest::Error::Refused {
            refusal: refusal @ Refusal::WouldLose { .. },
            ..
        }) => panic!("{refusal}"),
        Err(_) => {}
    }
});
