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

/// An agent whose state directory is a tmpfs of its own (32 MiB, to fill), and its collector.
/// The tmpfs must be unmounted before `tmp`, which holds it, is removed.
struct OnTmpfs {
    tmp: tempfile::TempDir,
    mount: guestward_core::testing::Mount,
    state: std::path::PathBuf,
    collector: Collector,
    agent: Agent,
}

/// [`OnTmpfs`] for `host`; `None` when this process may not mount (the test `test` is then
/// skipped, or failed where every oracle is required).
fn on_tmpfs(test: &str, host: &str) -> Option<OnTmpfs> {
    let tmp = temp_dir();
    let state = tmp.path().join("agent/state");
    std::fs::create_dir_all(&state).unwrap();
    let tmpfs = match guestward_core::testing::Mount::tmpfs(&state, "32m") {
        Ok(t) => t,
        Err(reason) => {
            guestward_core::testing::skip_or_fail(test, &reason);
            return None;
        }
    };
    let pki = Pki::init(&tmp.path().join("pki"));
    let collector = Collector::start(&tmp.path().join("collector"), &pki, CollectorOptions::default());
    let agent = Agent::new(
        &tmp.path().join("agent"),
        host,
        &Transport {
            url: collector.url(),
            ca_file: pki.ca(),
            identity: pki.agent(host),
            extra: String::new(),
        },
    );
    Some(OnTmpfs { tmp, mount: tmpfs, state, collector, agent })
}

/// An outage of the agent's own disk: the filesystem holding its state directory is filled
/// (as a local user can, to try to silence it), then a watched file is changed. The daemon
/// cannot spool the report nor store the event, yet the collector receives the change: the
/// history holds the event in memory, the spool the report. Once the disk has room, the next
/// report goes through the disk again, and the change is not sent twice.
#[test]
fn a_file_changed_after_the_state_disk_filled_up_still_reaches_the_collector() {
    const NAME: &str = "a_file_changed_after_the_state_disk_filled_up_still_reaches_the_collector";
    guestward_core::testing::within(Duration::from_secs(150), "disk outage", || {
        // Bound in this order so that they drop in the reverse: the tmpfs before its directory.
        let Some(OnTmpfs { tmp, mount: _mount, state, collector, agent }) = on_tmpfs(NAME, "host-fulldisk")
        else {
            return;
        };
        // FIM on, over a small tree of the test's own.
        let watched = tmp.path().join("watched");
        std::fs::create_dir_all(&watched).unwrap();
        std::fs::write(watched.join("sshd_config"), "PermitRootLogin no\n").unwrap();
        let config = std::fs::read_to_string(agent.config()).unwrap();
        let with_fim = config
            .replace("[fim]\nenabled = false\n", &format!("[fim]\npaths = [\"{}\"]\n", watched.display()));
        assert_ne!(config, with_fim, "the agent's config has no `[fim] enabled = false` to replace");
        std::fs::write(agent.config(), with_fim).unwrap();
        let daemon = agent.start_daemon();
        wait_until_or_explain(
            Duration::from_secs(60),
            "the first delivery and the FIM baseline",
            || {
                let delivered =
                    collector.host("host-fulldisk").is_some_and(|h| h.summary.reports_stored >= 1);
                let fim = daemon.ctl(&["fim", "status", "--json"]);
                let watching = serde_json::from_str::<serde_json::Value>(&fim.stdout)
                    .is_ok_and(|s| s["state"] == "watching");
                (delivered && watching).then_some(())
            },
            || format!("daemon log:\n{}", daemon.log()),
        );

        guestward_core::testing::fill_filesystem(&state.join("filler"));
        let changed = watched.join("sshd_config");
        std::fs::write(&changed, "PermitRootLogin yes\n").unwrap();
        let changed = changed.display().to_string();
        let is_the_change = |e: &guestward_core::Event| e.kind == "fim.change" && e.data["path"] == changed;
        wait_until(Duration::from_secs(30), "the realtime change", || {
            let fim = daemon.ctl(&["fim", "status", "--json"]);
            serde_json::from_str::<serde_json::Value>(&fim.stdout)
                .ok()
                .filter(|s| s["changes_realtime"].as_u64() >= Some(1))
        });
        let stored_before = collector.host("host-fulldisk").unwrap().summary.reports_stored;
        let scan = daemon.ctl(&["scan"]);
        // 1: a collector degraded (the disk is full, or was a moment ago).
        assert!(matches!(scan.code, Some(0 | 1)), "agentctl scan with the disk full:\n{scan}");
        let host = wait_until_or_explain(
            Duration::from_secs(30),
            "the change at the collector",
            || {
                collector.host("host-fulldisk").filter(|h| {
                    h.summary.reports_stored > stored_before && h.recent_events.iter().any(is_the_change)
                })
            },
            || format!("daemon log:\n{}", daemon.log()),
        );
        assert_eq!(host.recent_events.iter().filter(|e| is_the_change(e)).count(), 1);
        let log = daemon.log();
        assert!(
            log.contains("held in memory"),
            "the daemon did not say the report is held in memory:\n{log}"
        );

        // Room again: the next report goes through the disk, and the change is not sent again.
        std::fs::remove_file(state.join("filler")).unwrap();
        let stored_before = collector.host("host-fulldisk").unwrap().summary.reports_stored;
        let scan = daemon.ctl(&["scan"]);
        // 1: a collector degraded (the disk is full, or was a moment ago).
        assert!(matches!(scan.code, Some(0 | 1)), "agentctl scan after space was freed:\n{scan}");
        let host = wait_until(Duration::from_secs(30), "the next delivery", || {
            collector.host("host-fulldisk").filter(|h| h.summary.reports_stored > stored_before)
        });
        assert_eq!(host.recent_events.iter().filter(|e| is_the_change(e)).count(), 1, "sent twice");
        assert_eq!(host.summary.missing_sequences, 0, "{:?}", host.summary);
        drop(daemon);
    });
}

/// `run --once` when the disk refuses the spool's entries (here the spool directory is bound
/// read-only: `EROFS`, as a filesystem remounted read-only after errors gives): its report is
/// sent from memory (delivered, exit 0, the JSON naming the refusal); with the collector down
/// as well it says the report is lost as the run ends, and exits non-zero. And on a full disk,
/// the room the agent keeps lets the run open its databases and deliver.
#[test]
fn run_once_sends_from_memory_what_the_disk_refuses_and_runs_on_a_full_disk() {
    const NAME: &str = "run_once_sends_from_memory_what_the_disk_refuses_and_runs_on_a_full_disk";
    guestward_core::testing::within(Duration::from_secs(150), "run --once, disk refusing", || {
        let Some(OnTmpfs { tmp: _tmp, mount: _mount, state, mut collector, agent }) =
            on_tmpfs(NAME, "host-once-refused")
        else {
            return;
        };
        agent.run_once().assert_success("run --once with a writable disk");

        let read_only = guestward_core::testing::Mount::read_only_bind(&state.join("spool"))
            .unwrap_or_else(|e| panic!("the tmpfs mounted, so this can: {e}"));
        let (out, json) = agent.run_once_json();
        out.assert_success("run --once with the spool read-only");
        assert_eq!(json["delivered"], true, "{json:#}");
        assert_eq!(json["report"]["spooled"], false, "{json:#}");
        let refusal = json["report"]["spool_error"].as_str().unwrap_or_default();
        assert!(refusal.contains("Read-only file system"), "{json:#}");
        let s = collector.host("host-once-refused").unwrap().summary;
        assert_eq!((s.reports_stored, s.missing_sequences), (2, 0), "{s:?}");

        collector.stop();
        let out = agent.run_once_failing();
        out.assert_failure("run --once with the spool read-only and the collector down");
        assert!(out.stderr.contains("is lost as this run ends"), "{out}");
        drop(read_only);

        // A full disk: the databases open in the room the agent kept, and the report goes out.
        collector.start_again();
        guestward_core::testing::fill_filesystem(&state.join("filler"));
        let (out, json) = agent.run_once_json();
        out.assert_success("run --once on a full disk");
        assert_eq!(json["delivered"], true, "{json:#}");
        assert!(!state.join(guestward_core::reserve::RESERVE_FILE).exists(), "the reserve was not used");
        let s = collector.host("host-once-refused").unwrap().summary;
        assert!(s.reports_stored >= 3, "{s:?}");
    });
}
