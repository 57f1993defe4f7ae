//! Self-limits: the agent measures its own CPU and memory and, above its budgets (`[limits]`),
//! slows itself down (osquery's watchdog, but in-process and gentle: nothing is killed).
//!
//! Measuring: every [`SAMPLE_EVERY`] the sampler reads the process's CPU time (`utime +
//! stime` of `/proc/self/stat`) and resident memory (`/proc/self/statm`), and keeps the
//! samples of the last [`WINDOW`] ([`Window`]). The CPU figure is the share of one core used
//! over that minute: CPU seconds spent divided by 60 wall seconds, times 100. In the first
//! minute the time before the agent started counts as idle (the CPU is divided by the whole
//! minute, not by the few seconds measured), so the short burst of the first scan at start
//! does not read as a process pinning a core, while hashing a big tree still crosses a small
//! budget within seconds.
//!
//! Throttling ([`Controller`]), only with `[limits] enabled = true`:
//! - It starts when the minute's average is above `cpu_percent`, or resident memory is above
//!   `rss_max_bytes`, and is logged at info with the numbers.
//! - While throttled, FIM scan hashing is paced ([`guestward_fim::Pace`]: a rest per MiB
//!   hashed, per hashing thread). The pace follows the CPU used over the last sample interval:
//!   above the budget it grows in proportion (CPU share falls roughly as 1/pace once the
//!   rests dominate), below half the budget it halves, so hashing settles near the budget.
//! - A scheduled full scan due while throttled waits until the throttle lifts, at most
//!   one more `scan_interval_secs` (the interval in force: a reload may change it); then it runs anyway, so
//!   a host that keeps the agent over budget still gets a report every two intervals at
//!   least. A scan asked for over the control socket (`agentctl scan`) never waits.
//! - It stops (logged at info) only when the pace has decayed below its starting value, the
//!   minute's average is at most 80% of the budget, memory at most 90% of its budget, and it
//!   has lasted at least [`MIN_THROTTLE`]: hysteresis, so it does not flap.
//!
//! Never slowed: the control socket, the realtime FIM events (a changed file is hashed at
//! once: its latency is the detection latency), the event history and report delivery.
//! Memory above budget cannot be handed back by sleeping: it throttles the same way (fewer
//! scans in flight allocate less), and the status says which budget is exceeded.
//!
//! Idle memory: the same samples tell when the agent goes quiet after work (a scan, a FIM
//! rescan); it then hands its idle code pages and the heap's free pages back to the kernel
//! (`guestward_reclaim`), whatever `[limits] enabled` says: that is most of its idle footprint.

use crate::config::LimitsConfig;
use guestward_core::Timestamp;
use guestward_fim::Pace;
use guestward_report::protocol::SelfLimitStatus;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the agent samples itself. Reading two small `/proc` files every 5 s costs
/// microseconds: well inside the idle budget (0.1% of a core).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The averaging window of the CPU budget.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The shortest throttle episode: hysteresis against flapping.
pub const MIN_THROTTLE: Duration = Duration::from_secs(30);

/// The pace a throttle starts at: 20 ms of rest per MiB hashed (a hashing thread then reads
/// at most about 50 MiB/s, a fraction of what it hashes unpaced).
pub const INITIAL_PACE_MICROS_PER_MIB: u64 = 20_000;

/// The highest pace: 60 s of rest per MiB (a 64 KiB file, the smallest charge, costs 3.75 s).
/// Reached only when something other than hashing keeps the agent over budget.
pub const MAX_PACE_MICROS_PER_MIB: u64 = 60_000_000;

/// One measurement of the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When it was taken (monotonic).
    pub at: Instant,
    /// CPU time used since the process started (user + system).
    pub cpu: Duration,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

/// Hands the binary's code pages and the heap's free pages back to the kernel once the agent is
/// quiet after work (see `guestward_reclaim`): after a scan the whole binary stays mapped,
/// most of the daemon's idle footprint. A read of `/proc/self/smaps` and a few `madvise`
/// calls: fine on the runtime's thread.
fn release_idle_memory() {
    match guestward_reclaim::release_idle_memory() {
        Ok(r) => tracing::debug!(
            code_kib = r.code_bytes / 1024,
            mappings = r.mappings,
            heap_trimmed = r.heap_trimmed,
            "quiet after work: idle code pages handed back to the kernel"
        ),
        Err(e) => tracing::debug!(error = %e, "quiet after work: could not hand idle memory back"),
    }
}

/// The samples of the last [`WINDOW`] (plus the one just before it, so the average spans the
/// whole minute once the agent has run that long). Bounded: at most a few dozen samples.
#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
}

/// Most samples kept, whatever the clock does.
const MAX_SAMPLES: usize = 64;

impl Window {
    /// Adds a sample and forgets the ones no longer needed. A sample older than the last one
    /// (a clock that went backwards cannot happen with `Instant`, but a caller could) or with
    /// less CPU time (impossible for one process) resets the window.
    pub fn push(&mut self, sample: Sample) {
        if let Some(last) = self.samples.back()
            && (sample.at < last.at || sample.cpu < last.cpu)
        {
            self.samples.clear();
        }
        self.samples.push_back(sample);
        // Keep the newest sample at least WINDOW old as the base of the average.
        while self.samples.len() > 2
            && self.samples.get(1).is_some_and(|s| sample.at.saturating_duration_since(s.at) >= WINDOW)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// CPU used over the last minute, percent of one core (`None` until two samples exist).
    /// Divided by at least [`WINDOW`]: before the window fills, the time not yet measured
    /// counts as idle.
    pub fn cpu_percent(&self) -> Option<f64> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let wall = last.at.checked_duration_since(first.at)?;
        if wall.is_zero() {
            return None;
        }
        let cpu = last.cpu.checked_sub(first.cpu)?;
        Some(cpu.as_secs_f64() / wall.max(WINDOW).as_secs_f64() * 100.0)
    }

    /// CPU used between the last two samples, percent of one core.
    pub fn recent_cpu_percent(&self) -> Option<f64> {
        let n = self.samples.len();
        percent(self.samples.get(n.checked_sub(2)?)?, self.samples.get(n - 1)?)
    }

    /// Resident memory at the last sample.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.samples.back().map(|s| s.rss_bytes)
    }
}

/// CPU used from `a` to `b`, percent of one core; `None` when no time passed.
fn percent(a: &Sample, b: &Sample) -> Option<f64> {
    let wall = b.at.checked_duration_since(a.at)?.as_secs_f64();
    if wall <= 0.0 {
        return None;
    }
    let cpu = b.cpu.checked_sub(a.cpu)?.as_secs_f64();
    Some(cpu / wall * 100.0)
}

/// What the controller saw at one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// CPU over the window, percent of one core.
    pub cpu_percent: Option<f64>,
    /// CPU over the last sample interval, percent of one core.
    pub recent_cpu_percent: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
}

/// A change of throttling decided at one sample (to log).
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Throttling started, for this reason.
    Started(String),
    /// Throttling stopped after this long.
    Stopped(Duration),
}

/// The throttling decision: pure (no clock, no I/O), so its rules are unit-tested.
#[derive(Debug, Clone)]
pub struct Controller {
    cpu_budget_percent: f64,
    rss_budget_bytes: u64,
    enabled: bool,
    /// Rest per MiB hashed now (0: not paced).
    pace: u64,
    /// Since when (monotonic and wall), while throttled.
    since: Option<(Instant, Timestamp)>,
    reason: Option<String>,
    episodes: u64,
    /// Time throttled in finished episodes.
    finished: Duration,
}

impl Controller {
    /// A controller for these budgets, not throttled.
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            cpu_budget_percent: config.cpu_percent,
            rss_budget_bytes: config.rss_max_bytes,
            enabled: config.enabled,
            pace: 0,
            since: None,
            reason: None,
            episodes: 0,
            finished: Duration::ZERO,
        }
    }

    /// The rest per MiB hashed it asks for now, microseconds (0: no pacing).
    pub fn pace_micros_per_mib(&self) -> u64 {
        self.pace
    }

    /// Whether it throttles now.
    pub fn throttled(&self) -> bool {
        self.since.is_some()
    }

    /// Decides on one reading taken at `now` (`wall`: the same instant on the wall clock).
    pub fn decide(&mut self, reading: &Reading, now: Instant, wall: Timestamp) -> Option<Transition> {
        if !self.enabled {
            return None;
        }
        let over_cpu = reading.cpu_percent.is_some_and(|c| c > self.cpu_budget_percent);
        let over_rss = reading.rss_bytes.is_some_and(|r| r > self.rss_budget_bytes);
        if over_cpu || over_rss {
            self.reason = Some(self.reason_for(reading, over_cpu, over_rss));
        }
        let Some((since, _)) = self.since else {
            if !(over_cpu || over_rss) {
                return None;
            }
            self.since = Some((now, wall));
            self.episodes += 1;
            self.pace = INITIAL_PACE_MICROS_PER_MIB;
            return Some(Transition::Started(self.reason.clone().unwrap_or_default()));
        };
        // Throttled: steer the pace by the CPU of the last interval (the minute's average
        // lags by up to a minute and would overshoot).
        let recent = reading.recent_cpu_percent.unwrap_or(0.0);
        if recent > self.cpu_budget_percent {
            let factor = (recent / self.cpu_budget_percent).clamp(1.25, 4.0);
            self.pace = scale(self.pace.max(INITIAL_PACE_MICROS_PER_MIB), factor);
        } else if recent < self.cpu_budget_percent / 2.0 {
            self.pace /= 2;
        }
        if over_rss {
            self.pace = self.pace.max(INITIAL_PACE_MICROS_PER_MIB);
        }
        let calm = reading.cpu_percent.is_none_or(|c| c <= self.cpu_budget_percent * 0.8)
            && reading.rss_bytes.is_none_or(|r| r as f64 <= self.rss_budget_bytes as f64 * 0.9);
        let lasted = now.saturating_duration_since(since);
        if self.pace < INITIAL_PACE_MICROS_PER_MIB && calm && lasted >= MIN_THROTTLE {
            self.since = None;
            self.pace = 0;
            self.finished += lasted;
            return Some(Transition::Stopped(lasted));
        }
        None
    }

    fn reason_for(&self, reading: &Reading, over_cpu: bool, over_rss: bool) -> String {
        let mut parts = Vec::new();
        if over_cpu && let Some(cpu) = reading.cpu_percent {
            parts.push(format!(
                "cpu {cpu:.2}% of one core over the last minute, above the budget of {}% ([limits] cpu_percent)",
                self.cpu_budget_percent
            ));
        }
        if over_rss && let Some(rss) = reading.rss_bytes {
            parts.push(format!(
                "memory {} resident, above the budget of {} ([limits] rss_max_bytes)",
                mib(rss),
                mib(self.rss_budget_bytes)
            ));
        }
        parts.join("; ")
    }

    /// The status fields it owns, at `now`.
    fn fill(&self, status: &mut SelfLimitStatus, now: Instant) {
        status.throttled = self.throttled();
        status.throttle_reason = self.since.and(self.reason.clone());
        status.throttled_since = self.since.map(|(_, wall)| wall);
        status.throttle_episodes_total = self.episodes;
        let current = self.since.map_or(Duration::ZERO, |(s, _)| now.saturating_duration_since(s));
        status.throttled_secs_total = (self.finished + current).as_secs();
        status.fim_pace_micros_per_mib = self.pace;
    }
}

/// `pace × factor`, capped at [`MAX_PACE_MICROS_PER_MIB`].
fn scale(pace: u64, factor: f64) -> u64 {
    let scaled = (pace as f64 * factor).min(MAX_PACE_MICROS_PER_MIB as f64);
    // In range of u64 by the cap above (and not NaN: factor is clamped, pace finite).
    let scaled = scaled as u64;
    scaled.min(MAX_PACE_MICROS_PER_MIB)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The daemon's self-limiter: the window, the controller, and the pace it hands to FIM.
#[derive(Debug)]
pub struct SelfLimiter {
    config: LimitsConfig,
    pace: Arc<Pace>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window: Window,
    controller: Controller,
}

impl SelfLimiter {
    /// A limiter for `[limits]`.
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            config: config.clone(),
            pace: Arc::new(Pace::new()),
            state: Mutex::new(State { window: Window::default(), controller: Controller::new(config) }),
        }
    }

    /// The pace FIM's scans obey (give it to `guestward_fim::Monitor::start_paced`).
    pub fn pace(&self) -> Arc<Pace> {
        Arc::clone(&self.pace)
    }

    /// Whether the agent throttles itself now.
    pub fn throttled(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).controller.throttled()
    }

    /// Takes a sample, decides, sets the pace and logs a start or stop.
    pub fn record(&self, sample: Sample, wall: Timestamp) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.window.push(sample);
        let reading = Reading {
            cpu_percent: state.window.cpu_percent(),
            recent_cpu_percent: state.window.recent_cpu_percent(),
            rss_bytes: state.window.rss_bytes(),
        };
        let transition = state.controller.decide(&reading, sample.at, wall);
        self.pace.set_micros_per_mib(state.controller.pace_micros_per_mib());
        let cpu = reading.cpu_percent.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into());
        let rss_mib = reading.rss_bytes.map(mib).unwrap_or_else(|| "-".into());
        match transition {
            Some(Transition::Started(reason)) => tracing::info!(
                cpu_percent = %cpu,
                cpu_budget_percent = self.config.cpu_percent,
                rss = %rss_mib,
                rss_budget = %mib(self.config.rss_max_bytes),
                "self-limits: throttling FIM hashing and scheduled full scans: {reason}"
            ),
            Some(Transition::Stopped(lasted)) => tracing::info!(
                cpu_percent = %cpu,
                cpu_budget_percent = self.config.cpu_percent,
                rss = %rss_mib,
                throttled_secs = lasted.as_secs(),
                "self-limits: back within budget; throttling stopped"
            ),
            None => {}
        }
    }

    /// Samples the process now. `None` when `/proc/self` cannot be read (logged by the caller).
    pub fn sample_self() -> Result<Sample, procfs::ProcError> {
        let me = procfs::process::Process::myself()?;
        let stat = me.stat()?;
        let statm = me.statm()?;
        let ticks = procfs::ticks_per_second().max(1);
        let cpu_ticks = stat.utime.saturating_add(stat.stime);
        let cpu = Duration::from_secs(cpu_ticks / ticks)
            + Duration::from_nanos((cpu_ticks % ticks) * 1_000_000_000 / ticks);
        Ok(Sample { at: Instant::now(), cpu, rss_bytes: statm.resident.saturating_mul(procfs::page_size()) })
    }

    /// `agentctl status`'s view (and the report's).
    pub fn status(&self) -> SelfLimitStatus {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut status = SelfLimitStatus {
            cpu_budget_percent: self.config.cpu_percent,
            rss_budget_bytes: self.config.rss_max_bytes,
            cpu_percent: state.window.cpu_percent().map(|c| (c * 1000.0).round() / 1000.0),
            rss_bytes: state.window.rss_bytes(),
            ..SelfLimitStatus::default()
        };
        state.controller.fill(&mut status, Instant::now());
        status
    }

    /// Runs until the process stops: a sample every [`SAMPLE_EVERY`].
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        let mut quiet = guestward_reclaim::QuietAfterWork::new();
        let mut last_cpu: Option<Duration> = None;
        loop {
            tick.tick().await;
            // Two small reads of procfs (no disk): cheap enough for the runtime's thread.
            match Self::sample_self() {
                Ok(sample) => {
                    self.record(sample, Timestamp::now());
                    let used = last_cpu.map(|c| sample.cpu.saturating_sub(c));
                    last_cpu = Some(sample.cpu);
                    if used.is_some_and(|used| quiet.observe(used, sample.at)) {
                        release_idle_memory();
                    }
                }
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "self-limits: cannot read /proc/self; the agent cannot measure itself");
                }
                Err(_) => {}
            }
        }
    }

    /// Waits while throttled, at most `max` (the scheduler passes the scan interval in force);
    /// returns how long it waited. Called by the scheduler before a scheduled full scan.
    pub async fn wait_for_budget(&self, max: Duration) -> Duration {
        let start = Instant::now();
        if !self.throttled() {
            return Duration::ZERO;
        }
        tracing::info!(
            max_delay_secs = max.as_secs(),
            "self-limits: scheduled full scan postponed while the agent is over its budget"
        );
        while self.throttled() && start.elapsed() < max {
            tokio::time::sleep(SAMPLE_EVERY.min(max.saturating_sub(start.elapsed()))).await;
        }
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(base: Instant, secs: u64, cpu_ms: u64, rss: u64) -> Sample {
        Sample { at: base + Duration::from_secs(secs), cpu: Duration::from_millis(cpu_ms), rss_bytes: rss }
    }

    fn limits(cpu: f64) -> LimitsConfig {
        LimitsConfig { cpu_percent: cpu, ..LimitsConfig::default() }
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time_across_the_minute() {
        let base = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.cpu_percent(), None);
        w.push(at(base, 0, 0, 1));
        assert_eq!(w.cpu_percent(), None, "one sample is no rate");
        // 600 ms of CPU in 60 s: 1% of one core.
        for s in 1..=12 {
            w.push(at(base, s * 5, s * 50, 1));
        }
        assert!((w.cpu_percent().unwrap() - 1.0).abs() < 1e-9, "{:?}", w.cpu_percent());
        // The last interval: 50 ms in 5 s.
        assert!((w.recent_cpu_percent().unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn samples_older_than_the_minute_leave_the_window() {
        let base = Instant::now();
        let mut w = Window::default();
        // A busy first minute (30 s of CPU in 60 s: 50%), then an idle one.
        w.push(at(base, 0, 0, 1));
        w.push(at(base, 60, 30_000, 1));
        for s in 13..=24 {
            w.push(at(base, s * 5, 30_000, 2));
        }
        assert_eq!(w.cpu_percent(), Some(0.0), "the busy minute still counts: {:?}", w.samples);
        assert_eq!(w.rss_bytes(), Some(2));
        assert!(w.samples.len() <= 14, "{}", w.samples.len());
    }

    #[test]
    fn four_cores_busy_is_four_hundred_percent() {
        let base = Instant::now();
        let mut w = Window::default();
        w.push(at(base, 0, 0, 1));
        w.push(at(base, 60, 240_000, 1));
        assert!((w.cpu_percent().unwrap() - 400.0).abs() < 1e-9);
    }

    #[test]
    fn in_the_first_minute_the_time_not_yet_measured_counts_as_idle() {
        let base = Instant::now();
        let mut w = Window::default();
        w.push(at(base, 0, 0, 1));
        // A 1.5 s burst (the first scan) in the first 5 s: 2.5% of the minute, not 30%.
        w.push(at(base, 5, 1_500, 1));
        assert!((w.cpu_percent().unwrap() - 2.5).abs() < 1e-9, "{:?}", w.cpu_percent());
        assert!((w.recent_cpu_percent().unwrap() - 30.0).abs() < 1e-9);
    }

    #[test]
    fn a_sample_going_back_resets_the_window_instead_of_a_negative_rate() {
        let base = Instant::now();
        let mut w = Window::default();
        w.push(at(base, 0, 5_000, 1));
        w.push(at(base, 5, 1_000, 1));
        assert_eq!(w.cpu_percent(), None);
    }

    #[test]
    fn the_window_is_bounded_however_often_it_is_fed() {
        let base = Instant::now();
        let mut w = Window::default();
        for i in 0..10_000 {
            w.push(Sample { at: base + Duration::from_millis(i), cpu: Duration::ZERO, rss_bytes: 0 });
        }
        assert!(w.samples.len() <= MAX_SAMPLES);
    }

    fn reading(avg: f64, recent: f64, rss: u64) -> Reading {
        Reading { cpu_percent: Some(avg), recent_cpu_percent: Some(recent), rss_bytes: Some(rss) }
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn over_the_cpu_budget_it_throttles_with_a_reason_naming_cpu() {
        let mut c = Controller::new(&limits(5.0));
        let t0 = Instant::now();
        assert_eq!(c.decide(&reading(4.0, 9.0, 20 * MIB), t0, Timestamp::now()), None);
        assert_eq!(c.pace_micros_per_mib(), 0);
        let Some(Transition::Started(reason)) = c.decide(&reading(6.0, 9.0, 20 * MIB), t0, Timestamp::now())
        else {
            panic!("not throttled")
        };
        assert!(reason.starts_with("cpu 6.00% of one core"), "{reason}");
        assert!(reason.contains("cpu_percent"), "{reason}");
        assert_eq!(c.pace_micros_per_mib(), INITIAL_PACE_MICROS_PER_MIB);
        let mut status = SelfLimitStatus::default();
        c.fill(&mut status, t0 + Duration::from_secs(7));
        assert!(status.throttled && status.throttle_reason.as_deref() == Some(reason.as_str()));
        assert_eq!((status.throttle_episodes_total, status.throttled_secs_total), (1, 7));
    }

    #[test]
    fn the_pace_grows_in_proportion_above_the_budget_and_is_capped() {
        let mut c = Controller::new(&limits(5.0));
        let t0 = Instant::now();
        c.decide(&reading(6.0, 6.0, MIB), t0, Timestamp::now());
        // Twice the budget over the last interval: twice the rest.
        c.decide(&reading(8.0, 10.0, MIB), t0, Timestamp::now());
        assert_eq!(c.pace_micros_per_mib(), 2 * INITIAL_PACE_MICROS_PER_MIB);
        // Far above: at most four times per step, never above the cap.
        for _ in 0..50 {
            c.decide(&reading(90.0, 90.0, MIB), t0, Timestamp::now());
        }
        assert_eq!(c.pace_micros_per_mib(), MAX_PACE_MICROS_PER_MIB);
    }

    #[test]
    fn it_stops_only_after_easing_off_below_eighty_percent_and_the_minimum_time() {
        let mut c = Controller::new(&limits(5.0));
        let t0 = Instant::now();
        let now = Timestamp::now();
        c.decide(&reading(6.0, 6.0, MIB), t0, now);
        c.decide(&reading(6.0, 20.0, MIB), t0, now); // pace x4
        // Idle again, but too soon: still throttled, easing off.
        let soon = t0 + Duration::from_secs(10);
        assert_eq!(c.decide(&reading(3.0, 0.1, MIB), soon, now), None);
        assert!(c.throttled());
        // Long enough, but the minute's average is still above 80% of the budget.
        let later = t0 + Duration::from_secs(40);
        for _ in 0..5 {
            assert_eq!(c.decide(&reading(4.5, 0.1, MIB), later, now), None);
        }
        assert!(c.throttled(), "stopped while the average was above 80% of the budget");
        let stop = c.decide(&reading(3.9, 0.1, MIB), later, now);
        assert_eq!(stop, Some(Transition::Stopped(Duration::from_secs(40))));
        assert_eq!(c.pace_micros_per_mib(), 0);
        let mut status = SelfLimitStatus::default();
        c.fill(&mut status, later + Duration::from_secs(100));
        assert!(!status.throttled && status.throttle_reason.is_none() && status.throttled_since.is_none());
        assert_eq!((status.throttle_episodes_total, status.throttled_secs_total), (1, 40));
    }

    #[test]
    fn while_paced_at_the_budget_it_holds_the_pace_instead_of_flapping() {
        let mut c = Controller::new(&limits(5.0));
        let t0 = Instant::now();
        let now = Timestamp::now();
        c.decide(&reading(6.0, 6.0, MIB), t0, now);
        let pace = c.pace_micros_per_mib();
        for s in 1..100 {
            // Hashing held at 80-100% of the budget by the pace: no change, no stop.
            let t = t0 + Duration::from_secs(s * 5);
            assert_eq!(c.decide(&reading(3.5, 4.5, MIB), t, now), None);
        }
        assert!(c.throttled());
        assert_eq!(c.pace_micros_per_mib(), pace);
    }

    #[test]
    fn over_the_memory_budget_it_throttles_naming_memory() {
        let mut c = Controller::new(&limits(5.0));
        let t0 = Instant::now();
        let Some(Transition::Started(reason)) = c.decide(&reading(0.1, 0.1, 65 * MIB), t0, Timestamp::now())
        else {
            panic!("not throttled")
        };
        assert!(reason.starts_with("memory 65.0 MiB resident"), "{reason}");
        // Memory stays high: the pace never decays to zero and it does not stop.
        for s in 1..20 {
            c.decide(&reading(0.1, 0.1, 65 * MIB), t0 + Duration::from_secs(s * 5), Timestamp::now());
        }
        assert!(c.throttled() && c.pace_micros_per_mib() >= INITIAL_PACE_MICROS_PER_MIB);
    }

    #[test]
    fn disabled_it_never_throttles() {
        let mut c = Controller::new(&LimitsConfig { enabled: false, ..limits(0.1) });
        assert_eq!(c.decide(&reading(90.0, 90.0, 1 << 40), Instant::now(), Timestamp::now()), None);
        assert_eq!(c.pace_micros_per_mib(), 0);
    }

    #[test]
    fn the_agent_can_sample_itself() {
        let s = SelfLimiter::sample_self().unwrap();
        assert!(s.rss_bytes > 0);
    }
}
