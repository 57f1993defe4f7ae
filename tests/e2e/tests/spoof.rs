//! A host's certificate cannot deliver another host's reports.

use crate::support::*;
use std::time::Duration;

/// Host A's certificate with `host_id = "B"`: the collector answers 403, `run --once` fails
/// saying so, and nothing at all is stored (not B, and not A either).
#[test]
fn agent_with_another_hosts_certificate_is_refused_and_nothing_is_stored() {
    guestward_core::testing::within(Duration::from_secs(120), "spoof", || {
        let tmp = temp_dir();
        let pki = Pki::init(&tmp.path().join("pki"));
        let collector = Collector::start(&tmp.path().join("collector"), &pki, CollectorOptions::default());
        let cert_of_a = pki.agent("host-a");
        let agent = Agent::new(
            &tmp.path().join("agent"),
            "host-b",
            &Transport { url: collector.url(), ca_file: pki.ca(), identity: cert_of_a, extra: String::new() },
        );

        // A refusal of the credentials is no outage: asking again within the run will not
        // change it, so the run ends at once with exit 2 (not 3 after --timeout-secs).
        let started = std::time::Instant::now();
        let (out, json) = agent.run_once_json_within(60);
        assert_eq!(out.code, Some(2), "{out}");
        assert!(started.elapsed() < Duration::from_secs(30), "took {:?}\n{out}", started.elapsed());
        assert_eq!(json["credentials_refused"], true, "{json}");
        assert!(out.text().contains("403"), "the refusal (403) is not in the agent's error:\n{out}");

        let hosts = collector.hosts();
        assert!(hosts.hosts.is_empty(), "the collector stored something: {hosts:?}");
        // And the collector logged the attempt, naming the host the report claimed.
        let log = collector.log();
        assert!(log.contains("host-b"), "the refused report is not in the collector's log:\n{log}");
    });
}

/// The agent first ran with a host id that is not its certificate's host (a typo in
/// `[agent] host_id`): its report was refused and stayed spooled. Once the id is corrected,
/// the next `run --once` is not blocked behind that report: it delivers its own, the refused
/// one is moved to `spool/rejected/` with the reason, and the collector holds only the
/// certificate's host.
#[test]
fn a_corrected_host_id_is_not_blocked_behind_reports_made_under_the_wrong_one() {
    guestward_core::testing::within(Duration::from_secs(90), "corrected host id", || {
        let tmp = temp_dir();
        let pki = Pki::init(&tmp.path().join("pki"));
        let collector = Collector::start(&tmp.path().join("collector"), &pki, CollectorOptions::default());
        let transport = Transport {
            url: collector.url(),
            ca_file: pki.ca(),
            identity: pki.agent("host-a"),
            extra: String::new(),
        };
        let dir = tmp.path().join("agent");
        Agent::new(&dir, "host-typo", &transport)
            .run_once_failing()
            .assert_failure("run --once with host A's certificate and host_id host-typo");

        let fixed = Agent::new(&dir, "host-a", &transport);
        let (out, json) = fixed.run_once_json();
        out.assert_success("run --once after host_id was corrected");
        assert_eq!(json["stored"], 1, "{json}");
        assert_eq!(json["set_aside"], 1, "{json}");
        assert!(out.stdout.contains("set_aside") || out.text().contains("set aside"), "{out}");
        let hosts = collector.hosts();
        let ids: Vec<&str> = hosts.hosts.iter().map(|h| h.host_id.as_str()).collect();
        assert_eq!(ids, ["host-a"], "{hosts:?}");
        assert_eq!(collector.host("host-a").map(|h| h.summary.reports_stored), Some(1));

        let rejected = dir.join("state/spool/rejected");
        let reasons: Vec<String> = std::fs::read_dir(&rejected)
            .unwrap_or_else(|e| panic!("{}: {e}\n{out}", rejected.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "reason"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].contains(r#"made as host "host-typo", but this agent reports as host "host-a" now"#),
            "{}",
            reasons[0]
        );
    });
}
