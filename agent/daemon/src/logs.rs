//! What the daemon logs about file changes: one info line per change, naming the path and the
//! attributes that changed (`file changed path=/etc/passwd changed=mode,ctime`), never the
//! records with their hashes (those are in `agentctl fim events` and the report).
//!
//! Rate-limited: a storm (a package upgrade, an attacker touching every file) once turned into
//! 62,600 log lines and 105 MB of RSS. At most [`LINES_PER_WINDOW`] lines per
//! [`WINDOW`]; the rest are counted, and one line says how many were left out once the window
//! has passed. Memory is a few counters, whatever the rate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Change lines logged per window before the rest are only counted.
pub const LINES_PER_WINDOW: u32 = 20;
/// The window of [`LINES_PER_WINDOW`].
pub const WINDOW: Duration = Duration::from_secs(60);

/// One call site's budget.
#[derive(Debug)]
pub struct ChangeLines {
    state: Mutex<State>,
    per_window: u32,
    window: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// Start of the current window (`None`: no line yet).
    started: Option<Instant>,
    /// Lines logged in the current window.
    lines: u32,
    /// Changes not logged since the last summary.
    suppressed: u64,
    /// Whether a thread is waiting to log the summary.
    summary_pending: bool,
}

/// The budget of the daemon's file-change lines.
static FIM_LINES: ChangeLines = ChangeLines::new(LINES_PER_WINDOW, WINDOW);

impl ChangeLines {
    /// A budget of `per_window` lines per `window`.
    pub const fn new(per_window: u32, window: Duration) -> Self {
        Self {
            state: Mutex::new(State { started: None, lines: 0, suppressed: 0, summary_pending: false }),
            per_window,
            window,
        }
    }

    /// Whether one more line may be logged now. When not, the change is counted; the first
    /// change refused in a window returns `Refused { schedule_summary: true }`: the caller
    /// arranges for [`ChangeLines::take_suppressed`] to run when the window ends.
    pub fn admit(&self) -> Admit {
        let Ok(mut s) = self.state.lock() else { return Admit::Refused { schedule_summary: false } };
        let now = Instant::now();
        if s.started.is_none_or(|t| now.duration_since(t) >= self.window) {
            s.started = Some(now);
            s.lines = 0;
        }
        if s.lines < self.per_window {
            s.lines += 1;
            return Admit::Log;
        }
        s.suppressed = s.suppressed.saturating_add(1);
        let schedule_summary = !s.summary_pending;
        s.summary_pending = true;
        Admit::Refused { schedule_summary }
    }

    /// How long until the current window ends.
    pub fn until_window_end(&self) -> Duration {
        let Ok(s) = self.state.lock() else { return self.window };
        s.started.map_or(Duration::ZERO, |t| self.window.saturating_sub(t.elapsed()))
    }

    /// The changes counted and not logged since the last call (and no summary pending).
    pub fn take_suppressed(&self) -> u64 {
        let Ok(mut s) = self.state.lock() else { return 0 };
        s.summary_pending = false;
        std::mem::take(&mut s.suppressed)
    }
}

/// What [`ChangeLines::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log the line.
    Log,
    /// Only counted.
    Refused {
        /// The first refusal of the window: schedule the summary line.
        schedule_summary: bool,
    },
}

/// Logs one file integrity event from the monitor: a `fim.change` as one info line (within the
/// budget), anything else (coverage gaps) at debug.
pub fn fim_event(event: &guestward_core::Event) {
    if event.kind != guestward_fim::events::KIND_CHANGE {
        tracing::debug!(kind = %event.kind, data = %event.data, "file integrity event");
        return;
    }
    match FIM_LINES.admit() {
        Admit::Log => log_change(&event.data),
        Admit::Refused { schedule_summary: false } => {}
        Admit::Refused { schedule_summary: true } => {
            // One short-lived thread per window with suppressed lines, not a task per event;
            // if it cannot start, the count is logged with the next summary.
            let wait = FIM_LINES.until_window_end();
            let spawned = std::thread::Builder::new().name("gw-fim-log".into()).spawn(move || {
                std::thread::sleep(wait);
                log_suppressed(FIM_LINES.take_suppressed());
            });
            if spawned.is_err() {
                log_suppressed(FIM_LINES.take_suppressed());
            }
        }
    }
}

fn log_suppressed(n: u64) {
    if n > 0 {
        tracing::info!(
            suppressed = n,
            "{n} more file changes not logged (at most {LINES_PER_WINDOW} a minute); see `agentctl fim events`"
        );
    }
}

/// The line for one `fim.change`, from the event's data: the path (escaped by the monitor: no
/// control characters; quoted, so a file named `x changed=none` cannot pass for a field), what
/// happened and the names of the changed attributes (ours: unquoted).
fn log_change(data: &serde_json::Value) {
    let text = |key: &str| data.get(key).and_then(serde_json::Value::as_str).unwrap_or("");
    let path = text("path");
    let changed: Vec<&str> = data
        .get("changed")
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    let changed = changed.join(",");
    match text("change") {
        "added" => tracing::info!(path, "file added"),
        "removed" => tracing::info!(path, "file removed"),
        "renamed" if changed.is_empty() => tracing::info!(path, from = text("old_path"), "file renamed"),
        "renamed" => tracing::info!(path, from = text("old_path"), %changed, "file renamed"),
        other => tracing::info!(path, change = %other, %changed, "file changed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_cut_to_the_budget_and_one_summary_is_scheduled() {
        let lines = ChangeLines::new(3, Duration::from_secs(3600));
        let admitted: Vec<Admit> = (0..10).map(|_| lines.admit()).collect();
        assert_eq!(admitted.iter().filter(|a| **a == Admit::Log).count(), 3);
        let schedules = admitted.iter().filter(|a| **a == Admit::Refused { schedule_summary: true }).count();
        assert_eq!(schedules, 1, "one summary per window, not one per refused change");
        assert_eq!(lines.take_suppressed(), 7);
        assert_eq!(lines.take_suppressed(), 0);
        // The next refusal after a summary schedules another.
        assert_eq!(lines.admit(), Admit::Refused { schedule_summary: true });
    }
}
