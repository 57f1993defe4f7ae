//! The poller: asks IMDS on the collector's client and turns new signals into events.

use super::{AUTOSCALING_STATE_CHANGED, MAINTENANCE_SCHEDULED, REBALANCE_RECOMMENDED, TERMINATING};
use crate::client::ImdsClient;
use crate::collect::{fetch_lifecycle, fetch_spot_action};
use crate::report::{LifecycleSnapshot, SpotInstanceAction};
use guestward_core::{Event, Problem, Timestamp};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Polls IMDS for lifecycle signals and emits an event once per new signal.
#[derive(Debug)]
pub struct LifecycleWatcher {
    client: Arc<ImdsClient>,
    spot_interval: Duration,
    events_interval: Duration,
    last_spot: Option<SpotInstanceAction>,
    last_rebalance: Option<String>,
    seen_maintenance: BTreeSet<String>,
    last_asg_state: Option<String>,
}

impl LifecycleWatcher {
    /// A watcher polling spot notices every `spot_interval` and the rest every `events_interval`.
    pub fn new(client: Arc<ImdsClient>, spot_interval: Duration, events_interval: Duration) -> Self {
        Self {
            client,
            spot_interval: spot_interval.max(Duration::from_millis(100)),
            events_interval: events_interval.max(Duration::from_millis(100)),
            last_spot: None,
            last_rebalance: None,
            seen_maintenance: BTreeSet::new(),
            last_asg_state: None,
        }
    }

    /// Asks for the spot notice once; returns events for a new notice.
    pub async fn poll_spot(&mut self) -> (Vec<Event>, Vec<Problem>) {
        let (spot, problems) = fetch_spot_action(&self.client).await;
        (self.spot_events(spot), problems)
    }

    fn spot_events(&mut self, spot: Option<SpotInstanceAction>) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(s) = &spot
            && self.last_spot.as_ref() != Some(s)
        {
            out.push(Event {
                kind: TERMINATING.to_string(),
                time: Timestamp::now(),
                data: json!({ "source": "spot_instance_action", "action": s.action, "at": s.time }),
            });
        }
        if spot.is_some() || self.last_spot.is_some() {
            // A withdrawn notice (spot capacity came back) clears the state for the next one.
            self.last_spot = spot;
        }
        out
    }

    /// Asks for every lifecycle signal once; returns events for new ones.
    pub async fn poll_all(&mut self) -> (Vec<Event>, Vec<Problem>) {
        let (snapshot, problems) = fetch_lifecycle(&self.client).await;
        (self.snapshot_events(snapshot), problems)
    }

    fn snapshot_events(&mut self, s: LifecycleSnapshot) -> Vec<Event> {
        let mut out = self.spot_events(s.spot_instance_action);
        if s.rebalance_notice_time.is_some() && s.rebalance_notice_time != self.last_rebalance {
            out.push(Event {
                kind: REBALANCE_RECOMMENDED.to_string(),
                time: Timestamp::now(),
                data: json!({ "notice_time": s.rebalance_notice_time }),
            });
        }
        self.last_rebalance = s.rebalance_notice_time;
        for m in s.maintenance_events {
            let key = m
                .event_id
                .clone()
                .unwrap_or_else(|| format!("{}:{}", m.code, m.not_before.clone().unwrap_or_default()));
            if m.state.as_deref().is_some_and(|st| st != "active") || !self.seen_maintenance.insert(key) {
                continue;
            }
            out.push(Event {
                kind: MAINTENANCE_SCHEDULED.to_string(),
                time: Timestamp::now(),
                data: json!(m),
            });
        }
        if s.autoscaling_target_state.is_some() && s.autoscaling_target_state != self.last_asg_state {
            let state = s.autoscaling_target_state.clone().unwrap_or_default();
            let kind = if state == "Terminated" || state.starts_with("Warmed:") {
                TERMINATING
            } else {
                AUTOSCALING_STATE_CHANGED
            };
            out.push(Event {
                kind: kind.to_string(),
                time: Timestamp::now(),
                data: json!({ "source": "autoscaling_target_lifecycle_state", "state": state, "previous": self.last_asg_state }),
            });
            self.last_asg_state = s.autoscaling_target_state;
        }
        out
    }

    /// Runs until `shutdown` turns true or the receiver is dropped, sending events on `tx`.
    /// Problems (IMDS not answering for a while) are logged, not sent: a missed poll is
    /// retried on the next tick.
    pub async fn run(mut self, tx: mpsc::Sender<Event>, mut shutdown: watch::Receiver<bool>) {
        let mut spot_tick = tokio::time::interval(self.spot_interval);
        let mut events_tick = tokio::time::interval(self.events_interval);
        spot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        events_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (events, problems) = tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                    continue;
                }
                _ = events_tick.tick() => self.poll_all().await,
                _ = spot_tick.tick() => self.poll_spot().await,
            };
            for p in problems {
                tracing::debug!(problem = %p, "lifecycle poll incomplete; retrying on the next tick");
            }
            for e in events {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}
