//! A host's certificate cannot deliver another host's reports.

use crate::support::*;
use std::time::Duration;

/// Host A's certificate with `host_id = "B"`: the collector answers 403, `run --once` fails
/// saying so, and nothing at all is stored (not B, and not A either).
#[test]
fn agent_with_another_hosts_certificate_is_refused_and_nothing_is_stored() {
    guestward_core::testing::within(Duration::from_secs(60), "spoof", || {
        let tmp = temp_dir();
        let pki = Pki::init(&tmp.path().join("pki"));
        let collector = Collector::start(&tmp.path().join("collector"), &pki, CollectorOptions::default());
        let cert_of_a = pki.agent("host-a");
        let agent = Agent::new(
            &tmp.path().join("agent"),
            "host-b",
            &Transport { url: collector.url(), ca_file: pki.ca(), identity: cert_of_a, extra: String::new() },
        );

        let out = agent.run_once_failing();
        out.assert_failure("run --once with host A's certificate and host_id B");
        assert!(out.text().contains("403"), "the refusal (403) is not in the agent's error:\n{out}");

        let hosts = collector.hosts();
        assert!(hosts.hosts.is_empty(), "the collector stored something: {hosts:?}");
        // And the collector logged the attempt, naming the host the report claimed.
        let log = collector.log();
        assert!(log.contains("host-b"), "the refused report is not in the collector's log:\n{log}");
    });
}
