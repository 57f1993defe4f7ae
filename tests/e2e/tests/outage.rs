//! Collector outages: reports accumulate in the spool and all arrive, once each, in order.

use crate::support::*;
use std::time::Duration;

/// The collector is down for three `run --once` (each fails and keeps its report spooled);
/// once it is up, one more `run --once` delivers all four: stored once each, sequences 1 to 4
/// with no gap, the newest last.
#[test]
fn reports_spooled_during_an_outage_all_arrive_once_in_order() {
    guestward_core::testing::within(Duration::from_secs(150), "outage", || {
        let tmp = temp_dir();
        let pki = Pki::init(&tmp.path().join("pki"));
        // Configured on its port but not started: the outage.
        let mut collector = Collector::configure(
            &tmp.path().join("collector"),
            &pki,
            free_port(),
            CollectorOptions::default(),
        );
        let agent = Agent::new(
            &tmp.path().join("agent"),
            "host-outage",
            &Transport {
                url: collector.url(),
                ca_file: pki.ca(),
                identity: pki.agent("host-outage"),
                extra: String::new(),
            },
        );
        for attempt in 1..=3u64 {
            let (out, json) = agent.run_once_json_within(FAILING_DELIVERY_SECS);
            out.assert_failure(&format!("run --once #{attempt} with the collector down"));
            assert_eq!(json["delivered"], false, "{json:#}");
            assert_eq!(
                json["spool"]["reports"].as_u64(),
                Some(attempt),
                "every report stays spooled: {json:#}"
            );
            let error = json["error"].as_str().unwrap_or_default().to_lowercase();
            assert!(
                ["connect", "refused", "unreachable"].iter().any(|k| error.contains(k)),
                "run --once #{attempt} failed without saying the collector was unreachable: {json:#}"
            );
        }

        collector.start_again();
        let (out, json) = agent.run_once_json();
        out.assert_success("run --once after the collector came back");
        assert_eq!((json["stored"].as_u64(), json["duplicates"].as_u64()), (Some(4), Some(0)), "{json:#}");
        assert_eq!(json["spool"]["reports"].as_u64(), Some(0), "the spool is not empty: {json:#}");
        let host = collector.host("host-outage").expect("the host is not stored");
        let s = &host.summary;
        assert_eq!(s.reports_stored, 4, "every report once: {s:?}");
        assert_eq!(s.last_sequence, Some(4), "{s:?}");
        assert_eq!(s.missing_sequences, 0, "{s:?}");
        let latest = host.latest_report.as_ref().expect("no latest report");
        assert_eq!(latest.sequence, Some(4), "the newest report (sequence 4) must be stored last");

        // Nothing is left to deliver: one more run sends only its own new report.
        agent.run_once().assert_success("run --once with an empty spool");
        let s = collector.host("host-outage").unwrap().summary;
        assert_eq!((s.reports_stored, s.last_sequence, s.missing_sequences), (5, Some(5), 0), "{s:?}");
    });
}

/// A run that cannot make its own report (here the event history is unusable: `events.db` is a
/// directory, as a damaged or full state disk leaves it) still delivers what earlier runs
/// spooled, and exits non-zero naming why its own report is missing.
#[test]
fn a_run_that_cannot_make_its_report_still_delivers_what_earlier_runs_spooled() {
    guestward_core::testing::within(Duration::from_secs(120), "no report, spool delivered", || {
        let tmp = temp_dir();
        let pki = Pki::init(&tmp.path().join("pki"));
        let mut collector = Collector::configure(
            &tmp.path().join("collector"),
            &pki,
            free_port(),
            CollectorOptions::default(),
        );
        let agent = Agent::new(
            &tmp.path().join("agent"),
            "host-nohistory",
            &Transport {
                url: collector.url(),
                ca_file: pki.ca(),
                identity: pki.agent("host-nohistory"),
                extra: String::new(),
            },
        );
        let (out, json) = agent.run_once_json_within(FAILING_DELIVERY_SECS);
        out.assert_failure("run --once with the collector down");
        assert_eq!(json["spool"]["reports"].as_u64(), Some(1), "{json:#}");

        let history = agent.dir.join("state").join("events.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", history.display()));
        }
        std::fs::create_dir(&history).unwrap();
        collector.start_again();
        let (out, json) = agent.run_once_json();
        out.assert_failure("run --once without a usable event history");
        assert_eq!(json["report"]["spooled"], false, "{json:#}");
        let why = json["report"]["error"].as_str().unwrap_or_default();
        assert!(why.contains("event history"), "the missing report's reason is not named: {json:#}");
        assert_eq!(
            (json["stored"].as_u64(), json["spool"]["reports"].as_u64()),
            (Some(1), Some(0)),
            "{json:#}"
        );
        let s = collector.host("host-nohistory").expect("the spooled report was not delivered").summary;
        assert_eq!((s.reports_stored, s.last_sequence), (1, Some(1)), "{s:?}");
    });
}
