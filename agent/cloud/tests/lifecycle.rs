//! Lifecycle signals into events.

use crate::{config_for, no_env, not_ec2_root};
use guestward_cloud::{
    AUTOSCALING_STATE_CHANGED, CloudCollector, LifecycleWatcher, MAINTENANCE_SCHEDULED,
    REBALANCE_RECOMMENDED, TERMINATING,
};
use guestward_imds_emulator::{Emulator, EmulatorConfig};
use std::time::Duration;

const SPOT: &str = r#"{"action": "terminate", "time": "2026-11-29T18:02:00Z"}"#;

fn watcher(emu: &Emulator) -> LifecycleWatcher {
    let collector = CloudCollector::with_env(&config_for(emu), &no_env).unwrap();
    LifecycleWatcher::new(collector.client().unwrap(), Duration::from_millis(100), Duration::from_millis(300))
}

#[tokio::test]
async fn spot_notice_becomes_one_terminating_event() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let mut w = watcher(&emu);
    let (events, problems) = w.poll_spot().await;
    assert!(events.is_empty() && problems.is_empty(), "{events:?} {problems:?}");
    emu.update(|c| c.spot_instance_action = Some(SPOT.into()));
    let (events, _) = w.poll_spot().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, TERMINATING);
    assert_eq!(events[0].data["action"], "terminate");
    assert_eq!(events[0].data["at"], "2026-11-29T18:02:00Z");
    assert!(w.poll_spot().await.0.is_empty(), "the same notice is reported once");
}

#[tokio::test]
async fn maintenance_rebalance_and_autoscaling_signals() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let mut w = watcher(&emu);
    assert!(w.poll_all().await.0.is_empty());
    emu.update(|c| {
        c.maintenance = r#"[{"NotBefore":"30 Nov 2026 09:00:00 GMT","Code":"system-reboot","Description":"scheduled reboot","EventId":"instance-event-0d59937288b749b32","NotAfter":"30 Nov 2026 11:00:00 GMT","State":"active"}]"#.into();
        c.rebalance = Some(r#"{"noticeTime": "2026-11-29T17:50:00Z"}"#.into());
        c.autoscaling_state = Some("InService".into());
    });
    let (events, problems) = w.poll_all().await;
    assert!(problems.is_empty(), "{problems:?}");
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec![REBALANCE_RECOMMENDED, MAINTENANCE_SCHEDULED, AUTOSCALING_STATE_CHANGED]);
    assert_eq!(events[1].data["code"], "system-reboot");
    assert!(w.poll_all().await.0.is_empty(), "nothing new, nothing sent");
    emu.update(|c| c.autoscaling_state = Some("Terminated".into()));
    let (events, _) = w.poll_all().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, TERMINATING);
    assert_eq!(events[0].data["previous"], "InService");
}

#[tokio::test]
async fn collected_report_carries_the_lifecycle_snapshot() {
    let emu = Emulator::start(EmulatorConfig {
        spot_instance_action: Some(SPOT.into()),
        autoscaling_state: Some("InService".into()),
        ..Default::default()
    })
    .await;
    let out = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap().collect(&not_ec2_root().1).await;
    let l = out.report.lifecycle.unwrap();
    assert_eq!(l.spot_instance_action.as_ref().unwrap().action, "terminate");
    assert_eq!(l.autoscaling_target_state.as_deref(), Some("InService"));
    assert!(l.terminating());
}

#[tokio::test]
async fn run_loop_sends_events_and_stops_on_shutdown() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let w = watcher(&emu);
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(w.run(tx, stop_rx));
    tokio::time::sleep(Duration::from_millis(150)).await;
    emu.update(|c| c.spot_instance_action = Some(SPOT.into()));
    let event = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await.unwrap().unwrap();
    assert_eq!(event.kind, TERMINATING);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(3), task).await.unwrap().unwrap();
}
