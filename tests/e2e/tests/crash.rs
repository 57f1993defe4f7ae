//! kill -9 of the agent between the spool write and the collector's acknowledgement.

use crate::support::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The agent's request reaches the collector (which stores the batch), but a relay holds back
/// the acknowledgement; `run --once` is killed with SIGKILL in that window. The next `run --once`
/// (straight to the collector) sends the spooled batch again with its new one: the collector
/// answers the first as a duplicate, so both batches are stored exactly once, nothing lost.
#[test]
fn agent_killed_before_the_acknowledgement_loses_nothing_and_the_duplicate_is_stored_once() {
    guestward_core::testing::within(Duration::from_secs(90), "crash of run --once", || {
        kill_between_store_and_acknowledgement("host-crash", |agent| agent.run_once_command(DELIVERY_SECS));
    });
}

/// The same window for the daemon (`guestward-agent run`), whose shipper delivers the report of
/// its first scan: after SIGKILL, the spool it leaves is delivered by `run --once`.
#[test]
fn daemon_killed_before_the_acknowledgement_loses_nothing_and_the_duplicate_is_stored_once() {
    guestward_core::testing::within(Duration::from_secs(90), "crash of the daemon", || {
        kill_between_store_and_acknowledgement("host-crash-daemon", Agent::daemon_command);
    });
}

fn kill_between_store_and_acknowledgement(host: &str, command: impl Fn(&Agent) -> Command) {
    let tmp = temp_dir();
    let pki = Pki::init(&tmp.path().join("pki"));
    let collector = Collector::start(&tmp.path().join("collector"), &pki, CollectorOptions::default());
    let identity = pki.agent(host);
    let relay = holding_relay(collector.port, &pki.server(), &identity, &pki.ca());
    let direct = Transport {
        url: collector.url(),
        ca_file: pki.ca(),
        identity: identity.clone(),
        extra: String::new(),
    };
    let via_relay = Transport { url: format!("https://127.0.0.1:{}", relay.port), ..direct.clone() };
    let agent = Agent::new(&tmp.path().join("agent"), host, &via_relay);

    let mut child =
        command(&agent).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until(Duration::from_secs(30), "the collector to store the batch sent through the relay", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the agent ended ({status}) before the collector stored its batch");
        }
        collector.host(host).filter(|h| h.summary.reports_stored == 1)
    });
    // The collector has answered; the agent has not seen the answer.
    wait_until(Duration::from_secs(10), "the collector's answer at the relay", || {
        (relay.held_back.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    });
    assert!(child.try_wait().unwrap().is_none(), "the agent ended without an acknowledgement");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    agent.configure(&direct);
    let (out, json) = agent.run_once_json();
    out.assert_success("run --once after the crash");
    // The killed agent's batch was sent again (still spooled) and recognised.
    assert_eq!((json["stored"].as_u64(), json["duplicates"].as_u64()), (Some(1), Some(1)), "{json:#}");
    let s = collector.host(host).unwrap().summary;
    assert_eq!(s.reports_stored, 2, "the killed agent's batch once, plus the new one: {s:?}");
    assert_eq!(s.last_sequence, Some(2), "{s:?}");
    assert_eq!(s.missing_sequences, 0, "nothing lost: {s:?}");
}
