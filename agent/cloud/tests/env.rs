//! The AWS SDK environment variable conventions.

use crate::{config_for, not_ec2_root};
use guestward_cloud::{
    CloudCollector, CloudState, EndpointMode, EndpointSource, ImdsConfig, Resolved, resolve,
};
use guestward_imds_emulator::{Emulator, EmulatorConfig, INSTANCE_ID};
use std::collections::HashMap;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k| map.get(k).cloned()
}

fn endpoint(r: Resolved) -> guestward_cloud::ResolvedEndpoint {
    match r {
        Resolved::Endpoint(e) => e,
        Resolved::Disabled { reason } => panic!("unexpectedly disabled: {reason}"),
    }
}

#[test]
fn metadata_disabled_wins_over_everything() {
    for v in ["true", "TRUE", " True "] {
        let c = ImdsConfig { endpoint: Some("http://127.0.0.1:1".into()), ..Default::default() };
        match resolve(&c, &env_of(&[("AWS_EC2_METADATA_DISABLED", v)])).unwrap() {
            Resolved::Disabled { reason } => assert!(reason.contains("AWS_EC2_METADATA_DISABLED")),
            other => panic!("{v}: {other:?}"),
        }
    }
    // Anything but "true" leaves IMDS on, as in the SDKs.
    let r = resolve(&ImdsConfig::default(), &env_of(&[("AWS_EC2_METADATA_DISABLED", "1")])).unwrap();
    assert!(matches!(r, Resolved::Endpoint(_)));
}

#[test]
fn endpoint_mode_variable_selects_the_ipv6_address() {
    let e = endpoint(
        resolve(&ImdsConfig::default(), &env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")]))
            .unwrap(),
    );
    assert_eq!(e.base_url, "http://[fd00:ec2::254]");
    assert!(!e.explicit, "a mode is not an explicit endpoint: the pre-check still applies");
    let e = endpoint(resolve(&ImdsConfig::default(), &|_: &str| None).unwrap());
    assert_eq!(e.base_url, "http://169.254.169.254");
    assert_eq!(e.source, EndpointSource::Default);
    let err = resolve(&ImdsConfig::default(), &env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv5")]))
        .unwrap_err();
    assert!(err.to_string().contains("IPv5"), "{err}");
    // The config file's mode wins over the variable.
    let c = ImdsConfig { endpoint_mode: Some(EndpointMode::Ipv4), ..Default::default() };
    let e = endpoint(resolve(&c, &env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")])).unwrap());
    assert_eq!(e.base_url, "http://169.254.169.254");
}

#[test]
fn endpoint_variable_is_explicit_and_config_wins_over_it() {
    let env = env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1338/")]);
    let e = endpoint(resolve(&ImdsConfig::default(), &env).unwrap());
    assert_eq!(e.base_url, "http://127.0.0.1:1338");
    assert_eq!(e.source, EndpointSource::Environment);
    assert!(e.explicit);
    let c = ImdsConfig { endpoint: Some("http://127.0.0.1:2000".into()), ..Default::default() };
    let e = endpoint(
        resolve(&c, &env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1338")])).unwrap(),
    );
    assert_eq!(e.base_url, "http://127.0.0.1:2000");
    assert_eq!(e.source, EndpointSource::Config);
    let env = env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "169.254.169.254")]);
    let err = resolve(&ImdsConfig::default(), &env).unwrap_err();
    assert!(err.to_string().contains("AWS_EC2_METADATA_SERVICE_ENDPOINT"), "{err}");
}

#[tokio::test]
async fn endpoint_variable_skips_the_pre_check() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let url = emu.url();
    let env = env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str())]);
    let (_d, root) = not_ec2_root();
    let collector = CloudCollector::with_env(&ImdsConfig::default(), &env).unwrap();
    let out = collector.collect(&root).await;
    assert_eq!(out.report.state, CloudState::Ec2, "DMI says QEMU, but the endpoint was configured");
    assert_eq!(out.report.instance_id(), Some(INSTANCE_ID));
    assert_eq!(out.report.imds.unwrap().endpoint_source, EndpointSource::Environment);
}

#[tokio::test]
async fn disabled_by_config_or_variable_asks_nothing() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let (_d, root) = not_ec2_root();
    let env = env_of(&[("AWS_EC2_METADATA_DISABLED", "true")]);
    let collector = CloudCollector::with_env(&config_for(&emu), &env).unwrap();
    assert!(collector.client().is_none());
    assert_eq!(collector.collect(&root).await.report.state, CloudState::DisabledByConfig);
    let c = ImdsConfig { enabled: false, ..config_for(&emu) };
    let collector = CloudCollector::with_env(&c, &|_: &str| None).unwrap();
    assert_eq!(collector.collect(&root).await.report.state, CloudState::DisabledByConfig);
    assert!(emu.records().is_empty());
}
