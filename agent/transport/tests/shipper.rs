//! The shipper against the in-test collector: delivery, faults, refusals, rotation, expiry.

use crate::support::pki::{Ca, Identity};
use crate::support::server::{Reply, Server};
use crate::support::{HOST, agent_config, fast, rt, small, small_as};
use guestward_core::Severity;
use guestward_core::testing::within;
use guestward_transport::shipper::ShipperTuning;
use guestward_transport::{Shipper, ShipperError, Spool, TransportConfig};

use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA, a collector on 127.0.0.1 and an agent identity.
pub struct Setup {
    pub ca: Ca,
    pub server: Server,
    pub agent: Identity,
    pub dir: tempfile::TempDir,
    pub config: TransportConfig,
    pub spool: Arc<Spool>,
}

pub fn setup() -> Setup {
    let ca = Ca::new("test CA");
    let server = Server::start(&ca, &ca.server(&["localhost", "127.0.0.1"]));
    let agent = ca.agent(HOST, 1001);
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), &server.url(), &ca.pem(), &agent);
    let spool = Arc::new(Spool::open(&dir.path().join("spool"), 64 << 20).unwrap());
    Setup { ca, server, agent, dir, config, spool }
}

fn push(spool: &Spool, seqs: impl IntoIterator<Item = u64>) -> Vec<String> {
    seqs.into_iter()
        .map(|s| {
            let r = small(s);
            spool.push(&r).unwrap();
            r.batch_id
        })
        .collect()
}

fn shipper(s: &Setup, tuning: ShipperTuning) -> Shipper {
    Shipper::with_tuning(&s.config, s.spool.clone(), tuning).unwrap()
}

#[test]
fn delivered_reports_are_acknowledged_and_deleted_in_one_request() {
    within(Duration::from_secs(60), "happy path", || {
        let s = setup();
        let ids = push(&s.spool, 1..=3);
        let shipper = shipper(&s, fast());
        let summary = rt().block_on(shipper.deliver_all(Duration::from_secs(20))).unwrap();
        assert_eq!((summary.stored, summary.duplicates, summary.requests), (3, 0, 1));
        assert_eq!(s.server.stored(), ids, "stored once each, in sequence order");
        assert!(s.spool.is_empty());
        assert_eq!(s.server.seen()[0].serial, s.agent.serial);
        let status = shipper.status();
        assert!(status.connected);
        assert_eq!(status.delivered_reports_total, 3);
        assert!(status.last_success_at.is_some());
        assert_eq!(status.spool.reports, 0);
        let cert = status.certificate.unwrap();
        assert_eq!(cert.subject, HOST);
        assert_eq!(cert.names, Some(format!("host {HOST} (SAN URI)")));
        assert_eq!(cert.identity_problem, None);
        assert!(cert.days_left.unwrap() > 365);
        assert!(shipper.certificate_findings(None).is_empty());
        // Nothing left: an empty spool is delivered at once.
        let again = rt().block_on(shipper.deliver_all(Duration::from_secs(5))).unwrap();
        assert_eq!(again.requests, 0);
    });
}

/// A collector named by host name, as in production: looked up by the agent's resolver
/// (`guestward_core::dns`), reached, and verified by that name.
#[test]
fn a_collector_named_by_its_host_name_is_resolved_and_verified_by_that_name() {
    within(Duration::from_secs(60), "host name", || {
        let s = setup();
        let by_name = s.server.url().replace("127.0.0.1", "localhost");
        let dir = tempfile::tempdir().unwrap();
        let config = agent_config(dir.path(), &by_name, &s.ca.pem(), &s.agent);
        let spool = Arc::new(Spool::open(&dir.path().join("spool"), 64 << 20).unwrap());
        let ids = push(&spool, 1..=2);
        let shipper = Shipper::with_tuning(&config, spool.clone(), fast()).unwrap();
        let summary = rt().block_on(shipper.deliver_all(Duration::from_secs(20))).unwrap();
        assert_eq!((summary.stored, summary.requests), (2, 1));
        assert_eq!(s.server.stored(), ids);
        assert!(spool.is_empty());
    });
}

/// Each fault is retried (bounded, with backoff) until the collector recovers; every report is
/// then stored exactly once and intact.
#[test]
fn each_fault_is_retried_until_the_collector_recovers_and_nothing_is_lost() {
    within(Duration::from_secs(120), "faults", || {
        let faults = [
            ("500", vec![Reply::Status(500, None), Reply::Status(500, None)]),
            ("garbage body", vec![Reply::Garbage]),
            ("connection reset", vec![Reply::Reset, Reply::Reset]),
            ("stall mid-response", vec![Reply::Stall]),
            ("503 without Retry-After", vec![Reply::Status(503, None)]),
        ];
        for (what, script) in faults {
            let s = setup();
            let ids = push(&s.spool, 1..=2);
            s.server.script(script.clone());
            let shipper = shipper(&s, fast());
            let started = Instant::now();
            let summary = rt()
                .block_on(shipper.deliver_all(Duration::from_secs(20)))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let seen = s.server.seen();
            eprintln!("{what}: {} requests, {:?}", seen.len(), started.elapsed());
            assert_eq!(seen.len(), script.len() + 1, "{what}: one retry per fault");
            assert_eq!(s.server.stored(), ids, "{what}: stored once each, in order");
            assert!(seen.iter().all(|r| r.batch_ids == ids), "{what}: the same intact batch every time");
            assert!(s.spool.is_empty(), "{what}");
            assert_eq!(summary.stored, 2);
            let status = shipper.status();
            assert_eq!(status.failed_requests_total, script.len() as u64, "{what}");
            assert!(
                status.connected && status.consecutive_failures == 0 && status.last_error.is_none(),
                "{what}: {status:?}"
            );
            if what.starts_with("stall") {
                assert!(
                    started.elapsed() >= fast().request_timeout,
                    "{what}: the request timeout cut the stall"
                );
            }
        }
    });
}

#[test]
fn retry_after_on_429_is_honoured() {
    within(Duration::from_secs(60), "429", || {
        let s = setup();
        let ids = push(&s.spool, 1..=2);
        s.server.script([Reply::Status(429, Some("2".into()))]);
        let shipper = shipper(&s, fast());
        rt().block_on(shipper.deliver_all(Duration::from_secs(20))).unwrap();
        let seen = s.server.seen();
        assert_eq!(seen.len(), 2);
        let waited = seen[1].at - seen[0].at;
        // The backoff alone would have waited at most 50 ms.
        assert!(waited >= Duration::from_millis(1900), "waited only {waited:?}");
        assert_eq!(s.server.stored(), ids);
    });
}

#[test]
fn a_collector_that_stays_down_leaves_everything_spooled_with_its_error() {
    within(Duration::from_secs(60), "outage", || {
        let s = setup();
        let ids = push(&s.spool, 1..=3);
        s.server.set_default(Reply::Status(500, None));
        let shipper = shipper(&s, fast());
        let err = rt().block_on(shipper.deliver_all(Duration::from_secs(2))).unwrap_err();
        let ShipperError::Undelivered { undelivered, last_error } = &err else { panic!("{err}") };
        assert_eq!(*undelivered, 3);
        assert!(last_error.contains("500") && last_error.contains("scripted answer"), "{last_error}");
        // Bounded: backoff spaced the attempts (at most one per 0 to 300 ms, jittered).
        let requests = s.server.seen().len();
        assert!((2..=60).contains(&requests), "{requests} requests in 2 s");
        let status = shipper.status();
        assert!(!status.connected);
        assert!(status.next_attempt_at.is_some());
        // The server may have seen one more request than the shipper counted: the deadline can
        // cut off the last one while its answer is on the way.
        let failures = status.consecutive_failures;
        assert!(
            failures == requests as u64 || failures + 1 == requests as u64,
            "{failures} failures counted for {requests} requests seen"
        );
        let left: Vec<_> = s.spool.pending(u64::MAX).unwrap().into_iter().map(|b| b.batch_id).collect();
        assert_eq!(left, ids);
        // The collector comes back.
        s.server.set_default(Reply::Store);
        rt().block_on(shipper.deliver_all(Duration::from_secs(10))).unwrap();
        assert_eq!(s.server.stored(), ids);
    });
}

#[test]
fn a_batch_refused_as_too_large_is_sent_again_one_report_per_request() {
    within(Duration::from_secs(60), "413", || {
        let s = setup();
        let ids = push(&s.spool, 1..=3);
        s.server.script([Reply::Status(413, None)]);
        let shipper = shipper(&s, fast());
        let summary = rt().block_on(shipper.deliver_all(Duration::from_secs(20))).unwrap();
        let seen: Vec<Vec<String>> = s.server.seen().into_iter().map(|r| r.batch_ids).collect();
        assert_eq!(seen, vec![ids.clone(), vec![ids[0].clone()], vec![ids[1].clone()], vec![ids[2].clone()]]);
        assert_eq!(s.server.stored(), ids);
        assert_eq!(summary.requests, 4);
    });
}

#[test]
fn a_poison_report_refused_with_422_is_moved_aside_and_the_queue_moves_on() {
    within(Duration::from_secs(60), "poison", || {
        let s = setup();
        let ids = push(&s.spool, 1..=3);
        s.server.set_default(Reply::RefuseBatch(ids[1].clone()));
        let shipper = shipper(&s, fast());
        let summary = rt().block_on(shipper.deliver_all(Duration::from_secs(20))).unwrap();
        assert_eq!(summary.set_aside, 1, "{summary:?}");
        assert_eq!(s.server.stored(), vec![ids[0].clone(), ids[2].clone()]);
        assert!(s.spool.is_empty());
        assert_eq!(s.spool.rejected_total(), 1);
        assert_eq!(shipper.rejected_total(), 1);
        let rejected = s.spool.dir().join("rejected");
        let names: Vec<String> = std::fs::read_dir(&rejected)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let entry = names.iter().find(|n| n.ends_with(".zst")).unwrap();
        assert!(entry.contains(&ids[1]), "{names:?}");
        let reason = std::fs::read_to_string(rejected.join(format!("{entry}.reason"))).unwrap();
        assert!(reason.contains("422") && reason.contains("scripted answer"), "{reason}");
    });
}

/// A proxy in front of the collector (nginx refusing the client certificate) answers 400 with
/// a page of its own. That says nothing about the reports: once every report of the spool went
/// to `rejected/` that way, and `run --once` said "delivered".
#[test]
fn a_proxy_refusal_is_not_the_collectors_and_keeps_every_report_spooled() {
    within(Duration::from_secs(60), "proxy 400", || {
        let s = setup();
        let ids = push(&s.spool, 1..=3);
        for code in [400, 413, 415, 422] {
            s.server.set_default(Reply::Proxy(code));
            let shipper = shipper(&s, fast());
            let err = rt().block_on(shipper.deliver_all(Duration::from_secs(2))).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&code.to_string()) && text.contains("not the collector's"), "{text}");
            assert_eq!(s.spool.len(), 3, "{code}");
            assert_eq!(s.spool.rejected_total(), 0, "{code}");
        }
        // The proxy is fixed: everything goes through.
        s.server.set_default(Reply::Store);
        let summary = rt().block_on(shipper(&s, fast()).deliver_all(Duration::from_secs(10))).unwrap();
        assert_eq!(s.server.stored(), ids);
        assert_eq!(summary.set_aside, 0);
    });
}

#[test]
fn credentials_refused_with_403_keep_the_reports_and_say_so() {
    within(Duration::from_secs(60), "403", || {
        let s = setup();
        push(&s.spool, 1..=1);
        s.server.set_default(Reply::Status(403, None));
        let shipper = shipper(&s, fast());
        // Asking again will not change the answer: delivery ends at once, not at the deadline.
        let started = std::time::Instant::now();
        let err = rt().block_on(shipper.deliver_all(Duration::from_secs(30))).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert!(
            matches!(err, guestward_transport::ShipperError::CredentialsRefused { undelivered: 1, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("403") && err.to_string().contains("credentials"), "{err}");
        assert_eq!(s.spool.len(), 1);
        assert_eq!(s.spool.rejected_total(), 0);
    });
}

/// The agent first reported under another host id than its certificate's (started before
/// `[agent] host_id` was set); then the id was fixed. The collector refuses the old reports
/// for good: they are moved aside with the reason, and the newer ones are delivered instead of
/// waiting behind them forever.
#[test]
fn reports_made_as_a_former_host_id_are_set_aside_once_refused_and_newer_ones_go_through() {
    within(Duration::from_secs(60), "former host id", || {
        let s = setup();
        let old: Vec<String> = [small_as(1, "i-0former000000000"), small_as(2, "i-0former000000000")]
            .into_iter()
            .map(|r| {
                s.spool.push(&r).unwrap();
                r.batch_id
            })
            .collect();
        let new = push(&s.spool, 3..=4);
        let shipper = shipper(&s, fast());
        let summary = rt().block_on(shipper.deliver_all(Duration::from_secs(20))).unwrap();
        assert_eq!(summary.stored, 2);
        assert_eq!(s.server.stored(), new);
        // The first request held only the former host's reports: a refusal names one host.
        assert_eq!(s.server.seen()[0].batch_ids, old);
        assert!(s.spool.is_empty());
        assert_eq!((s.spool.rejected_total(), shipper.rejected_total()), (2, 2));
        assert_eq!(shipper.status().spool.rejected_total, 2);
        let rejected = s.spool.dir().join("rejected");
        for id in &old {
            let name = std::fs::read_dir(&rejected)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .find(|n| n.contains(id.as_str()) && n.ends_with(".zst"))
                .unwrap_or_else(|| panic!("{id} is not in rejected/"));
            let reason = std::fs::read_to_string(rejected.join(format!("{name}.reason"))).unwrap();
            let expected =
                format!("made as host \"i-0former000000000\", but this agent reports as host \"{HOST}\" now");
            assert!(reason.contains(&expected) && reason.contains("403"), "{reason}");
        }
    });
}

/// Reports of the host the agent is now, refused because the certificate is another host's:
/// the credentials are what is wrong, so the reports stay spooled (nothing is set aside).
#[test]
fn reports_of_the_current_host_refused_by_the_host_binding_stay_spooled() {
    within(Duration::from_secs(60), "current host refused", || {
        let s = setup();
        for seq in 1..=2 {
            s.spool.push(&small_as(seq, "i-0another00000000")).unwrap();
        }
        let shipper = shipper(&s, fast());
        // The agent can tell before the collector does (GW-TLS-002), naming both ids, from the
        // newest spooled report's host when the pipeline names none.
        let findings = shipper.certificate_findings(None);
        assert_eq!(findings.len(), 1, "{findings:?}");
        let f = &findings[0];
        assert_eq!((f.id.as_str(), f.severity), ("GW-TLS-002", Severity::High));
        let expected = format!(
            "names host {HOST} (SAN URI), but this agent reports as host i-0another00000000: the collector refuses its reports (403)"
        );
        assert!(f.title.ends_with(&expected), "{}", f.title);
        assert_eq!(f.evidence["reporting_as"], "i-0another00000000");
        assert_eq!(f.evidence["names"], format!("host {HOST} (SAN URI)"));
        let cert = shipper.status().certificate.unwrap();
        assert_eq!(cert.identity_problem.as_deref(), Some(expected.as_str()));
        // The pipeline's host id, when it gives one, is what is compared.
        assert!(shipper.certificate_findings(Some(HOST)).is_empty());
        assert_eq!(shipper.status().certificate.unwrap().identity_problem, None);
        // Asking again will not change the answer: delivery ends at once, not at the deadline.
        let started = std::time::Instant::now();
        let err = rt().block_on(shipper.deliver_all(Duration::from_secs(30))).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert!(
            matches!(err, guestward_transport::ShipperError::CredentialsRefused { undelivered: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("403") && err.to_string().contains("credentials"), "{err}");
        assert_eq!(s.spool.len(), 2);
        assert_eq!(s.spool.rejected_total(), 0);
        assert!(s.server.stored().is_empty());
    });
}

#[test]
fn a_key_file_readable_by_others_is_refused_naming_the_file_and_the_fix() {
    let s = setup();
    let key = s.config.key_file.clone().unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = Shipper::new(&s.config, s.spool.clone()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&key.display().to_string()) && text.contains("0644") && text.contains("chmod 600"),
        "{text}"
    );
    // A symlink to a 0600 key is refused too: the mode checked must be the key's own.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let link = s.dir.path().join("link-key.pem");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    let config = TransportConfig { key_file: Some(link), ..s.config.clone() };
    let err = Shipper::new(&config, s.spool.clone()).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
}

#[test]
fn replaced_certificate_files_are_used_for_the_next_batch() {
    within(Duration::from_secs(60), "rotation", || {
        let s = setup();
        let shipper = shipper(&s, fast());
        // The daemon records each certificate loaded as its identity's before it is presented.
        let loaded = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen_by_observer = std::sync::Arc::clone(&loaded);
        shipper.on_certificate_loaded(move |sha| seen_by_observer.lock().unwrap().push(sha.to_string()));
        let runtime = rt();
        push(&s.spool, [1]);
        runtime.block_on(shipper.deliver_all(Duration::from_secs(10))).unwrap();
        // A half-done rotation (garbage certificate): the old one keeps working, the error shows.
        std::fs::write(s.config.cert_file.as_ref().unwrap(), "not a certificate").unwrap();
        push(&s.spool, [2]);
        runtime.block_on(shipper.deliver_all(Duration::from_secs(10))).unwrap();
        let status = shipper.status();
        assert!(status.last_error.as_deref().unwrap_or("").contains("reload failed"), "{status:?}");
        // The new pair lands: the next batch presents it (the pooled connection is not reused).
        let new = s.ca.agent(HOST, 2002);
        new.install(s.dir.path());
        push(&s.spool, [3]);
        runtime.block_on(shipper.deliver_all(Duration::from_secs(10))).unwrap();
        let serials: Vec<u64> = s.server.seen().iter().map(|r| r.serial).collect();
        assert_eq!(serials, [1001, 1001, 2002]);
        assert!(shipper.status().last_error.is_none());
        // Told once, of the new certificate only (not of the garbage, nor of the first).
        assert_eq!(*loaded.lock().unwrap(), [shipper.certificate_sha256()]);
    });
}

/// After a clone the certificate of the instance the disk came from is retired: the shipper
/// never presents it (the collector sees no request at all), says why, and resumes as soon as
/// the files hold another certificate.
#[test]
fn a_retired_certificate_is_never_presented_until_new_certificate_files_replace_it() {
    within(Duration::from_secs(60), "retired certificate", || {
        let s = setup();
        let shipper = shipper(&s, fast());
        let runtime = rt();
        let cert_file = s.config.cert_file.clone().unwrap();
        let old = guestward_transport::shipper::certificate_sha256(&cert_file).unwrap();
        assert_eq!(shipper.certificate_sha256(), old);
        assert_eq!(shipper.status().certificate.unwrap().sha256.as_deref(), Some(old.as_str()));
        shipper.retire_certificates(vec![old.to_ascii_uppercase()]);
        let ids = push(&s.spool, [1]);
        let e = runtime.block_on(shipper.deliver_all(Duration::from_secs(5))).unwrap_err();
        assert!(
            matches!(&e, ShipperError::Undelivered { undelivered: 1, last_error } if last_error.contains("holding reports")),
            "{e}"
        );
        assert!(s.server.seen().is_empty(), "the retired certificate was presented");
        assert!(shipper.status().held.unwrap().contains(&old));
        // A certificate of this instance's own: delivered at the next pass, no restart.
        s.ca.agent(HOST, 2002).install(s.dir.path());
        runtime.block_on(shipper.deliver_all(Duration::from_secs(10))).unwrap();
        assert_eq!(s.server.stored(), ids);
        let serials: Vec<u64> = s.server.seen().iter().map(|r| r.serial).collect();
        assert_eq!(serials, [2002]);
        assert!(shipper.status().held.is_none());
        assert_ne!(shipper.certificate_sha256(), old);
    });
}

#[test]
fn a_certificate_expiring_in_three_days_is_a_high_finding() {
    let s = setup();
    let in_days = |d: i64| {
        let days = jiff::Timestamp::now().as_second().div_euclid(86_400) + d;
        let date = jiff::civil::Date::new(1970, 1, 1)
            .unwrap()
            .checked_add(jiff::SignedDuration::from_hours(24 * days))
            .unwrap();
        (i32::from(date.year()), date.month() as u8, date.day() as u8)
    };
    // Midnight UTC of the day 4 days ahead: between 3 and 4 days from now.
    let expiring = s.ca.agent_until(HOST, 3003, Some(in_days(4)));
    expiring.install(s.dir.path());
    let shipper = Shipper::new(&s.config, s.spool.clone()).unwrap();
    let findings = shipper.certificate_findings(None);
    assert_eq!(findings.len(), 1);
    let f = &findings[0];
    assert_eq!((f.id.as_str(), f.severity), ("GW-TLS-001", Severity::High));
    assert_eq!(f.evidence["subject"], HOST);
    assert_eq!(f.evidence["path"], s.config.cert_file.as_ref().unwrap().display().to_string());
    assert!(f.evidence["not_after"].is_string());
    assert_eq!(f.evidence["days_left"], 3);
    assert_eq!(shipper.status().certificate.unwrap().days_left, Some(3));
    assert!(f.title.contains("3 day"), "{}", f.title);
}

/// The daemon's loop: a wake sends at once; `run` keeps going across failures.
#[test]
fn run_sends_when_woken() {
    within(Duration::from_secs(60), "run", || {
        let s = setup();
        let shipper = Arc::new(shipper(&s, fast()));
        let runtime = rt();
        runtime.block_on(async {
            let wake = Arc::new(tokio::sync::Notify::new());
            let task = tokio::spawn(shipper.clone().run(wake.clone()));
            tokio::time::sleep(Duration::from_millis(200)).await;
            let ids = push(&s.spool, [1]);
            wake.notify_one();
            let started = Instant::now();
            while s.server.stored() != ids {
                assert!(started.elapsed() < Duration::from_secs(5), "not sent within 5 s of the wake");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            task.abort();
        });
    });
}

#[test]
fn requests_stay_under_batch_max_bytes_and_a_larger_report_goes_alone() {
    within(Duration::from_secs(60), "batch size", || {
        let mut s = setup();
        s.config.batch_max_bytes = 64 << 10;
        // ~20 KB compressed each: three fit in 64 KiB, not four; the last one is larger than
        // the bound on its own.
        let mut ids = Vec::new();
        for seq in 1..=7 {
            let r = crate::support::report(seq, 27_000, 0, 0);
            s.spool.push(&r).unwrap();
            ids.push(r.batch_id);
        }
        let big = crate::support::report(8, 120_000, 0, 0);
        s.spool.push(&big).unwrap();
        ids.push(big.batch_id);
        let shipper = shipper(&s, fast());
        rt().block_on(shipper.deliver_all(Duration::from_secs(20))).unwrap();
        let seen = s.server.seen();
        let sizes: Vec<(usize, usize)> = seen.iter().map(|r| (r.batch_ids.len(), r.body_len)).collect();
        eprintln!("(reports, body bytes) per request: {sizes:?}");
        assert_eq!(s.server.stored(), ids);
        let (last, rest) = sizes.split_last().unwrap();
        assert!(rest.iter().all(|(_, len)| *len <= 64 << 10), "{sizes:?}");
        assert!(rest.iter().any(|(n, _)| *n >= 3), "batched by size: {sizes:?}");
        assert_eq!(last.0, 1, "the oversized report went alone: {sizes:?}");
        assert!(last.1 > 64 << 10);
    });
}

#[test]
fn system_roots_alone_do_not_trust_a_private_collector_ca_and_add_to_a_pinned_one() {
    within(Duration::from_secs(30), "use_system_roots", || {
        let s = setup();
        push(&s.spool, [1]);
        let config = TransportConfig { ca_file: None, use_system_roots: true, ..s.config.clone() };
        match Shipper::with_tuning(&config, s.spool.clone(), fast()) {
            Ok(shipper) => {
                let err = rt().block_on(shipper.deliver_all(Duration::from_secs(1))).unwrap_err().to_string();
                assert!(err.contains("UnknownIssuer"), "{err}");
            }
            // A machine without a system trust store.
            Err(e) => assert!(e.to_string().contains("trust store"), "{e}"),
        }
        let config = TransportConfig { use_system_roots: true, ..s.config.clone() };
        let shipper = Shipper::with_tuning(&config, s.spool.clone(), fast()).unwrap();
        rt().block_on(shipper.deliver_all(Duration::from_secs(10))).unwrap();
        assert!(s.spool.is_empty());
    });
}

/// `proxy`: the request goes through an HTTP CONNECT proxy; TLS (and the pinned CA) stays end
/// to end between the agent and the collector.
#[test]
fn a_configured_proxy_carries_the_tls_connection() {
    within(Duration::from_secs(30), "proxy", || {
        let s = setup();
        let ids = push(&s.spool, [1]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_port = listener.local_addr().unwrap().port();
        let connects = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = connects.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let mut client = client.unwrap();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
                    seen.lock().unwrap().push(line.clone());
                    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let Ok(upstream) = std::net::TcpStream::connect(&target) else { return };
                    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap();
                    let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    let (mut c, mut u) = (client, upstream);
                    std::thread::spawn(move || std::io::copy(&mut u2, &mut c2));
                    let _ = std::io::copy(&mut c, &mut u);
                });
            }
        });
        let config =
            TransportConfig { proxy: Some(format!("http://127.0.0.1:{proxy_port}")), ..s.config.clone() };
        let shipper = Shipper::with_tuning(&config, s.spool.clone(), fast()).unwrap();
        rt().block_on(shipper.deliver_all(Duration::from_secs(10))).unwrap();
        assert_eq!(s.server.stored(), ids);
        let connects = connects.lock().unwrap().clone();
        assert_eq!(connects, [format!("CONNECT 127.0.0.1:{} HTTP/1.1", s.server.port)]);
    });
}
