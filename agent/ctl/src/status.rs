//! `agentctl status`: the verdict (and exit code) and the one-screen human rendering.
//!
//! Sections, in this order: health; agent (version, pid, uptime); config; identity;
//! collectors; fim; transport; self-limits; then reload, lifecycle and counters when there is
//! something to say. Every state word is lowercase (`ok`, `degraded`, `failed`).

use guestward_core::{SectionStatus, Timestamp, human};
use guestward_report::protocol::{
    CollectorState, CollectorStatus, FimSummary, Health, HealthStatus, IdentityStatus, SelfLimitStatus,
    Status, TransportStatus,
};
use std::io::Write;

/// The width assumed for a terminal whose size cannot be read.
pub const WIDTH: usize = 100;

/// The narrowest width text is wrapped to, whatever the terminal says: below it a reason would
/// become a column of fragments.
const MIN_WIDTH: usize = 40;

/// How long values meet the line. Reasons and errors are what an operator runs `status` for
/// (a refused reload's `file:line: key`, a collector's "connection refused"), so they are never
/// cut: on a terminal they wrap onto indented lines, elsewhere they stay whole on one line.
/// Only table cells (a host id, a URL, a certificate subject) are cut on a terminal, to keep
/// their columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// A terminal of this many columns: text wraps at it, cells are cut to their column.
    Terminal(usize),
    /// Not a terminal (a pipe, a file, a script's capture): nothing is wrapped or cut.
    Unlimited,
}

impl Width {
    /// Standard output's: its terminal's width ([`WIDTH`] when unknown), else unlimited.
    pub fn of_stdout() -> Self {
        use std::io::IsTerminal;
        let stdout = std::io::stdout();
        if !stdout.is_terminal() {
            return Self::Unlimited;
        }
        let columns = terminal_size::terminal_size_of(&stdout).map(|(w, _)| usize::from(w.0));
        Self::Terminal(columns.filter(|&c| c > 0).unwrap_or(WIDTH))
    }

    /// A table cell: cut to `max` characters on a terminal, whole elsewhere; on one line.
    fn cell(self, s: &str, max: usize) -> String {
        match self {
            Self::Terminal(_) => cut(s, max),
            Self::Unlimited => flatten(s),
        }
    }

    /// A line of free text: on a terminal wrapped at its width, the lines after the first
    /// indented by `indent` spaces; elsewhere one line. Newlines in it become spaces.
    fn text(self, line: &str, indent: usize) -> String {
        match self {
            Self::Terminal(width) => wrap(&flatten(line), width.max(MIN_WIDTH), indent),
            Self::Unlimited => flatten(line),
        }
    }

    /// Whether `line` is wider than the terminal.
    fn overflows(self, line: &str) -> bool {
        matches!(self, Self::Terminal(width) if line.chars().count() > width.max(MIN_WIDTH))
    }
}

/// The verdict `agentctl status` prints first and exits with: the daemon's own, and degraded
/// also when the daemon's last scan has a degraded or failed section that the daemon's verdict
/// does not account for (a daemon older than its `health` field answers `ok` by default).
pub fn effective_health(status: &Status) -> HealthStatus {
    let mut health = status.health.clone();
    if health.verdict == Health::Ok {
        let failing: Vec<String> = status
            .last_scan
            .iter()
            .flat_map(|s| &s.sections)
            .filter(|s| matches!(s.status, SectionStatus::Degraded | SectionStatus::Error))
            .map(|s| {
                format!(
                    "the last scan's {} section is {} ({} problem(s))",
                    s.name,
                    section_word(s.status),
                    s.problems
                )
            })
            .collect();
        if !failing.is_empty() {
            health.verdict = Health::Degraded;
            health.reasons.extend(failing);
        }
    }
    health
}

/// How long before `now` `at` was, for a person (`5m`).
fn ago(now: Timestamp, at: Timestamp) -> String {
    human::duration(now.unix_secs().saturating_sub(at.unix_secs()))
}

/// When `at` comes after `now`: `in 5m`, or `due now` once it has passed.
fn until(now: Timestamp, at: Timestamp) -> String {
    let secs = at.unix_secs().saturating_sub(now.unix_secs());
    if secs <= 0 { "due now".to_string() } else { format!("in {}", human::duration(secs)) }
}

/// The lowercase word of a report section's status.
pub fn section_word(status: SectionStatus) -> &'static str {
    match status {
        SectionStatus::Ok => "ok",
        SectionStatus::Degraded => "degraded",
        SectionStatus::Error => "error",
        SectionStatus::Skipped => "skipped",
    }
}

/// The whole human `status`, leading with `status.health` (the caller has put
/// [`effective_health`] there, so what is printed, put in the JSON and exited with agree).
/// `now` is a parameter so ages can be tested.
pub fn render(status: &Status, now: Timestamp, width: Width, out: &mut dyn Write) -> std::io::Result<()> {
    // Host ids, errors and section names can come from scanned files (machine-id, hostname):
    // everything goes through the terminal-escaping writer.
    let mut safe = guestward_core::text::TerminalSafe::new(out);
    let out = &mut safe;
    let ago = |at: Timestamp| ago(now, at);
    let until = |at: Timestamp| until(now, at);

    // 1. Health.
    let health = &status.health;
    writeln!(out, "health      {}", health.verdict.as_str())?;
    for reason in &health.reasons {
        writeln!(out, "{}", width.text(&format!("  - {reason}"), 4))?;
    }

    // 2. Agent, config.
    put(
        out,
        width,
        format_args!(
            "agent       guestward-agent {} running (pid {}), up {} (since {})",
            status.version,
            status.pid,
            human::duration(i64::try_from(status.uptime_secs).unwrap_or(i64::MAX)),
            status.started_at.human()
        ),
    )?;
    match &status.config_path {
        Some(path) => put(out, width, format_args!("config      {path}"))?,
        // No absolute path: the daemon's own words, "built-in defaults (... not present)"
        // (a daemon that does not fill `config_path` names its file there too).
        None => writeln!(out, "{}", width.text(&format!("config      {}", status.config_source), 12))?,
    }
    put(out, width, format_args!("state dir   {}", status.state_dir))?;

    // 3. Identity.
    render_identity(
        &status.identity,
        status.last_scan.as_ref().and_then(|s| s.host_id.as_deref()),
        width,
        out,
    )?;

    // 4. Collectors.
    let mut header = String::from("collectors  ");
    match &status.last_scan {
        Some(scan) => header.push_str(&format!(
            "last full scan {} ago, {} finding(s) (agentctl findings)",
            ago(scan.collected_at),
            scan.findings
        )),
        None => header.push_str("no full scan completed yet"),
    }
    if let Some(next) = status.next_scan_at {
        header.push_str(&format!("; next {}", until(next)));
    }
    header.push_str(&format!(
        ", every {}",
        human::duration(i64::try_from(status.scan_interval_secs).unwrap_or(0))
    ));
    writeln!(out, "{}", width.text(&header, 12))?;
    if !status.collectors.is_empty() {
        render_collectors(&status.collectors, now, width, out)?;
    } else if let Some(scan) = &status.last_scan {
        // A daemon that does not report per-collector state: the last scan's sections.
        writeln!(out, "  {:<9} {:<9} PROBLEMS", "NAME", "RESULT")?;
        for s in &scan.sections {
            writeln!(out, "  {:<9} {:<9} {}", width.cell(&s.name, 9), section_word(s.status), s.problems)?;
        }
    }

    // 5. FIM.
    match &status.fim {
        Some(fim) => render_fim(fim, now, width, out)?,
        None => put(out, width, format_args!("fim         off ([fim] enabled = false)"))?,
    }

    // 6. Transport.
    match &status.transport {
        Some(t) => render_transport(t, status.counters.spool_push_failures_total, now, width, out)?,
        None => put(
            out,
            width,
            format_args!("transport   off: reports stay on this host ([transport] enabled = false)"),
        )?,
    }

    // 7. Self-limits.
    render_self_limits(&status.self_limits, now, width, out)?;

    // Then what matters only when it happened.
    if let Some(r) = &status.reload {
        let outcome = if r.applied && !r.needs_restart.is_empty() {
            format!("applied; needs a restart to take effect: {}", r.needs_restart.join(", "))
        } else if r.applied {
            "applied".to_string()
        } else {
            format!(
                "refused, the previous configuration keeps running: {}",
                r.error.as_deref().unwrap_or("see the log")
            )
        };
        let line = format!(
            "reload      {} ago {outcome} ({} applied, {} refused since start)",
            ago(r.at),
            r.applied_total,
            r.rejected_total
        );
        writeln!(out, "{}", width.text(&line, 12))?;
    }
    if let Some(state) = &status.lifecycle_state {
        put(
            out,
            width,
            format_args!("lifecycle   {} (announced by instance metadata)", width.cell(state, 40)),
        )?;
    }
    let c = &status.counters;
    put(
        out,
        width,
        format_args!(
            "counters    scans {} (degraded {}, failed {}); control requests {}, denied {}, refused {}",
            c.scan_runs_total,
            c.scan_degraded_runs_total,
            c.scan_failures_total,
            c.control_requests_total,
            c.control_denied_connections_total,
            c.control_refused_connections_total
        ),
    )?;
    put(
        out,
        width,
        format_args!(
            "events      {} stored, {} coalesced, {} dropped, {} store failures (agentctl events)",
            c.events_stored, c.events_coalesced_total, c.events_dropped_total, c.events_store_failures_total
        ),
    )?;
    if c.events_held_in_memory > 0 || c.events_held_dropped_total > 0 {
        put(
            out,
            width,
            format_args!(
                "            {} held in memory until the history can store them (carried by the reports), {} of those dropped at the bound",
                c.events_held_in_memory, c.events_held_dropped_total
            ),
        )?;
    }
    out.flush()
}

fn render_identity(
    id: &IdentityStatus,
    scanned_host_id: Option<&str>,
    width: Width,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let host = match (id.host_id.as_deref().or(scanned_host_id), id.host_id_source) {
        (Some(h), Some(source)) => {
            format!("host {} (from {})", width.cell(h, 40), host_id_source_word(source))
        }
        (Some(h), None) => format!("host {}", width.cell(h, 40)),
        (None, _) => "host not identified yet".to_string(),
    };
    let ec2 = match (&id.instance_id, &id.not_ec2_reason) {
        (Some(instance), _) => format!("EC2 instance {}", width.cell(instance, 30)),
        (None, Some(why)) => format!("not EC2: {why}"),
        (None, None) => "EC2 unknown yet (the cloud collector has not run)".to_string(),
    };
    let line = format!("identity    {host}; {ec2}");
    match (&id.instance_id, &id.not_ec2_reason) {
        // The reason is what tells an operator why an EC2 instance was not recognised (no
        // DMI data in a container, IMDS unreachable): on lines of its own rather than wrapped
        // into the identity line.
        (None, Some(why)) if width.overflows(&line) => {
            put(out, width, format_args!("identity    {host}; not EC2"))?;
            writeln!(out, "{}", width.text(&format!("  not EC2: {why}"), 4))?;
        }
        _ => writeln!(out, "{}", width.text(&line, 12))?,
    }
    if let (Some(at), Some(why)) = (id.reinitialised_at, &id.reinitialised_reason) {
        writeln!(out, "{}", width.text(&format!("  re-initialised {}: {why}", at.human()), 4))?;
    }
    if id.credentials.as_deref() == Some("waiting") {
        let action =
            id.credentials_action.as_deref().unwrap_or("install this instance's certificate and key");
        writeln!(out, "{}", width.text(&format!("  credentials waiting: {action}"), 4))?;
    }
    Ok(())
}

fn host_id_source_word(source: guestward_report::HostIdSource) -> &'static str {
    use guestward_report::HostIdSource as S;
    match source {
        S::Config => "config",
        S::Ec2InstanceId => "ec2_instance_id",
        S::MachineId => "machine_id",
        S::None => "none",
    }
}

fn render_collectors(
    collectors: &[CollectorStatus],
    now: Timestamp,
    width: Width,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "  {:<9} {:<9} {:<10} {:<8} NEXT RUN", "NAME", "RESULT", "LAST RUN", "TOOK")?;
    for c in collectors {
        let last = c.last_run_at.map_or_else(|| "never".to_string(), |at| format!("{} ago", ago(now, at)));
        let took = c.last_duration_ms.map_or_else(|| "-".to_string(), human_millis);
        let next = match c.next_run_at {
            Some(at) => until(now, at),
            None if c.state == CollectorState::Skipped => "-".to_string(),
            None => "not scheduled".to_string(),
        };
        writeln!(out, "  {:<9} {:<9} {last:<10} {took:<8} {next}", c.name.name(), c.state.as_str())?;
        if let Some(e) = &c.last_error {
            let streak = if c.consecutive_failures > 1 {
                format!(" ({} failures in a row)", c.consecutive_failures)
            } else {
                String::new()
            };
            writeln!(out, "{}", width.text(&format!("    error: {e}{streak}"), 11))?;
        }
    }
    Ok(())
}

fn render_fim(fim: &FimSummary, now: Timestamp, width: Width, out: &mut dyn Write) -> std::io::Result<()> {
    let baseline = if fim.baseline_complete { "baseline complete" } else { "baseline NOT complete yet" };
    let verified = match fim.last_verification_at {
        Some(at) => format!("verified {} ago", ago(now, at)),
        None => "never verified yet".to_string(),
    };
    let state = if fim.state.is_empty() { "unknown" } else { fim.state.as_str() };
    let line =
        format!("fim         {state}: {baseline}, {} entries, {verified}", group_thousands(fim.entries));
    writeln!(out, "{}", width.text(&line, 12))?;
    let short = if fim.watches_granted < fim.watches_wanted { " (realtime coverage incomplete)" } else { "" };
    let line = format!(
        "  watches {} of {}{short}; open coverage gaps {}; changes since start {}",
        group_thousands(fim.watches_granted),
        group_thousands(fim.watches_wanted),
        fim.open_gaps,
        fim.changes_since_start
    );
    writeln!(out, "{}", width.text(&line, 4))
}

fn render_self_limits(
    l: &SelfLimitStatus,
    now: Timestamp,
    width: Width,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    // A budget of 0 is one the daemon did not report (an agent without self-limits).
    let cpu_budget =
        if l.cpu_budget_percent > 0.0 { format!(" of {:.1}%", l.cpu_budget_percent) } else { String::new() };
    let rss_budget = if l.rss_budget_bytes > 0 {
        format!(" of {}", human::bytes(l.rss_budget_bytes))
    } else {
        String::new()
    };
    let cpu = match l.cpu_percent {
        Some(p) => format!("cpu {p:.1}%{cpu_budget}"),
        None => "cpu not measured yet".to_string(),
    };
    let rss = match l.rss_bytes {
        Some(b) => format!("memory {}{rss_budget}", human::bytes(b)),
        None => "memory not measured yet".to_string(),
    };
    let state = if l.throttled {
        let since = l.throttled_since.map(|at| format!(" for {}", ago(now, at))).unwrap_or_default();
        format!("throttled{since}")
    } else {
        "not throttled".to_string()
    };
    put(out, width, format_args!("self-limits {state}: {cpu}, {rss}"))?;
    if let Some(reason) = l.throttle_reason.as_deref().filter(|_| l.throttled) {
        writeln!(out, "{}", width.text(&format!("  why       {reason}"), 12))?;
    }
    if l.throttle_episodes_total > 0 {
        put(
            out,
            width,
            format_args!(
                "  history   throttled {} time(s), {} in all since start (FIM hashing and full scans slowed)",
                l.throttle_episodes_total,
                human::duration(i64::try_from(l.throttled_secs_total).unwrap_or(i64::MAX))
            ),
        )?;
    }
    Ok(())
}

/// The `transport` block: where reports go, whether they get there, what waits in the spool,
/// what the spool had to drop and when the client certificate expires.
pub fn render_transport(
    t: &TransportStatus,
    spool_push_failures: u64,
    now: Timestamp,
    width: Width,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let ago = |at: Timestamp| ago(now, at);
    let state = if t.connected {
        "connected".to_string()
    } else if t.consecutive_failures > 0 {
        format!("not connected ({} failed attempt(s) in a row)", t.consecutive_failures)
    } else {
        "not connected yet".to_string()
    };
    put(out, width, format_args!("transport   {} {state}", width.cell(&t.url, 60)))?;
    let last = match t.last_success_at {
        Some(at) => format!("last {} ({} ago)", at.human(), ago(at)),
        None => "none yet".to_string(),
    };
    put(
        out,
        width,
        format_args!(
            "  delivery  {last}; {} report(s) delivered, {} failed request(s) since start",
            t.delivered_reports_total, t.failed_requests_total
        ),
    )?;
    if let Some(next) = t.next_attempt_at
        && !t.connected
    {
        put(out, width, format_args!("  retry     {}", next.human()))?;
    }
    let s = &t.spool;
    let oldest = match s.oldest_collected_at {
        Some(at) => format!(", oldest {} ({} old)", at.human(), ago(at)),
        None => String::new(),
    };
    put(
        out,
        width,
        format_args!(
            "  spool     {} report(s), {} of {}{oldest}",
            s.reports,
            human::bytes(s.bytes),
            human::bytes(s.max_bytes)
        ),
    )?;
    if s.held_in_memory > 0 {
        put(
            out,
            width,
            format_args!(
                "  IN MEMORY {} report(s) the disk refused (full or read-only): sent like the others, lost if the agent stops first",
                s.held_in_memory
            ),
        )?;
    }
    put(
        out,
        width,
        format_args!(
            "  drops     superseded snapshots {}, events {}, whole reports {}; reports not spooled {}",
            s.superseded_snapshots_dropped_total,
            s.events_dropped_total,
            s.reports_dropped_total,
            spool_push_failures
        ),
    )?;
    if s.rejected_total > 0 {
        put(
            out,
            width,
            format_args!(
                "  rejected  {} report(s) refused by the collector or unusable: set aside, see spool/rejected/*.reason",
                s.rejected_total
            ),
        )?;
    }
    match &t.certificate {
        Some(cert) => {
            let expiry = match (cert.not_after, cert.days_left) {
                (Some(at), Some(days)) if days < 0 => format!("expired {} ({} days ago)", at.human(), -days),
                (Some(at), Some(days)) if days <= 7 => {
                    format!("expires {} (only {days} days left)", at.human())
                }
                (Some(at), Some(days)) => format!("expires {} ({days} days left)", at.human()),
                (Some(at), None) => format!("expires {}", at.human()),
                (None, _) => "expiry unknown".to_string(),
            };
            put(
                out,
                width,
                format_args!("  cert      CN={} ({}), {expiry}", width.cell(&cert.subject, 40), cert.path),
            )?;
            if let Some(problem) = &cert.identity_problem {
                writeln!(out, "{}", width.text(&format!("  IDENTITY  the certificate {problem}"), 12))?;
            }
        }
        None => put(out, width, format_args!("  cert      not loaded"))?,
    }
    if let Some(held) = &t.held {
        writeln!(out, "{}", width.text(&format!("  held      {held}"), 12))?;
    }
    if let Some(e) = &t.last_error {
        writeln!(out, "{}", width.text(&format!("  error     {e}"), 12))?;
    }
    Ok(())
}

/// `s` cut to at most `max` characters, the last being `…` when cut; newlines become spaces
/// so a multi-line error keeps the table's shape.
pub fn cut(s: &str, max: usize) -> String {
    let flat = flatten(s);
    if flat.chars().count() <= max {
        return flat;
    }
    let mut kept: String = flat.chars().take(max.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// A line that starts with a 12-column label (`agent       `, `  spool     `): on a terminal
/// wrapped at its width under the label's column, elsewhere whole.
fn put(out: &mut dyn Write, width: Width, line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    writeln!(out, "{}", width.text(&line.to_string(), 12))
}

/// `s` on one line: newlines become spaces, so a multi-line error keeps the table's shape.
fn flatten(s: &str) -> String {
    s.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect()
}

/// `line` (one line) broken at spaces into lines of at most `width` characters, each after the
/// first starting with `indent` spaces; a word longer than a whole line is broken inside.
fn wrap(line: &str, width: usize, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::with_capacity(line.len());
    // Characters on the current line, and whether anything follows its indentation yet.
    let (mut used, mut started) = (0usize, false);
    for word in line.split(' ') {
        let len = word.chars().count();
        if started && used + 1 + len > width {
            out.push('\n');
            out.push_str(&pad);
            (used, started) = (indent, false);
        }
        if started {
            out.push(' ');
            used += 1;
        }
        let mut rest = word;
        while used + rest.chars().count() > width && used < width {
            let split = rest.char_indices().nth(width - used).map_or(rest.len(), |(i, _)| i);
            out.push_str(&rest[..split]);
            out.push('\n');
            out.push_str(&pad);
            rest = &rest[split..];
            used = indent;
        }
        out.push_str(rest);
        used += rest.chars().count();
        started = true;
    }
    out
}

/// `850 ms`, `1.2 s`, `3m`: a run's duration.
fn human_millis(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => human::duration(i64::try_from(ms / 1000).unwrap_or(i64::MAX)),
    }
}

/// `12,345`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use guestward_report::protocol::{
        CertificateStatus, Collector, Counters, ReloadStatus, ScanSummary, SectionSummary, SpoolStatus,
    };

    const NOW: i64 = 1_800_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_secs(secs).unwrap()
    }

    /// A status as a daemon of today answers it before issue 12's fields are filled.
    fn bare() -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 4242,
            started_at: at(NOW - 7_380),
            uptime_secs: 7_380,
            config_source: "built-in defaults (/etc/guestward/agent.toml not present)".into(),
            state_dir: "/var/lib/guestward".into(),
            scan_interval_secs: 900,
            last_scan: None,
            next_scan_at: None,
            lifecycle_state: None,
            counters: Counters::default(),
            transport: None,
            health: HealthStatus::default(),
            config_path: None,
            identity: IdentityStatus::default(),
            collectors: Vec::new(),
            fim: None,
            self_limits: SelfLimitStatus::default(),
            reload: None,
        }
    }

    /// Everything filled, on an EC2 host with a degraded packages collector.
    fn full() -> Status {
        let collector = |name, state, error: Option<&str>, failures| CollectorStatus {
            name,
            state,
            last_run_at: Some(at(NOW - 300)),
            last_duration_ms: Some(1_234),
            last_error: error.map(str::to_string),
            consecutive_failures: failures,
            next_run_at: Some(at(NOW + 600)),
        };
        Status {
            health: HealthStatus {
                verdict: Health::Degraded,
                reasons: vec!["packages: cannot read /var/lib/dpkg/status: it is a directory".into()],
            },
            config_path: Some("/etc/guestward/agent.toml".into()),
            identity: IdentityStatus {
                host_id: Some("i-0123456789abcdef0".into()),
                host_id_source: Some(guestward_report::HostIdSource::Ec2InstanceId),
                instance_id: Some("i-0123456789abcdef0".into()),
                not_ec2_reason: None,
                ..IdentityStatus::default()
            },
            last_scan: Some(ScanSummary {
                collected_at: at(NOW - 300),
                host_id: Some("i-0123456789abcdef0".into()),
                sections: vec![SectionSummary {
                    name: "packages".into(),
                    status: SectionStatus::Degraded,
                    problems: 1,
                }],
                findings: 3,
            }),
            next_scan_at: Some(at(NOW + 600)),
            collectors: vec![
                collector(Collector::Host, CollectorState::Ok, None, 0),
                collector(
                    Collector::Packages,
                    CollectorState::Degraded,
                    Some(&format!("cannot read /var/lib/dpkg/status: {}", "x".repeat(200))),
                    3,
                ),
                CollectorStatus {
                    name: Collector::Cloud,
                    state: CollectorState::Skipped,
                    last_run_at: None,
                    last_duration_ms: None,
                    last_error: None,
                    consecutive_failures: 0,
                    next_run_at: None,
                },
            ],
            fim: Some(FimSummary {
                state: "watching".into(),
                baseline_complete: true,
                entries: 12_345,
                watches_granted: 230,
                watches_wanted: 240,
                last_verification_at: Some(at(NOW - 120)),
                open_gaps: 1,
                changes_since_start: 7,
            }),
            transport: Some(TransportStatus {
                url: "https://collector.internal:8443".into(),
                connected: true,
                ..TransportStatus::default()
            }),
            self_limits: SelfLimitStatus {
                cpu_budget_percent: 5.0,
                rss_budget_bytes: 64 << 20,
                cpu_percent: Some(7.5),
                rss_bytes: Some(12 << 20),
                throttled: true,
                throttle_reason: Some("cpu 7.5% over the 5.0% budget".into()),
                throttled_since: Some(at(NOW - 90)),
                throttle_episodes_total: 2,
                throttled_secs_total: 400,
                fim_pace_micros_per_mib: 20_000,
            },
            reload: Some(ReloadStatus {
                at: at(NOW - 60),
                applied: false,
                error: Some("agent.toml:3:1: key `agent.bogus`: unknown key".into()),
                applied_total: 1,
                rejected_total: 1,
                needs_restart: Vec::new(),
            }),
            ..bare()
        }
    }

    fn rendered(status: &Status) -> String {
        let mut status = status.clone();
        status.health = effective_health(&status);
        let mut out = Vec::new();
        render(&status, at(NOW), Width::Terminal(WIDTH), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The index of the first line starting with `prefix`.
    fn line_of(out: &str, prefix: &str) -> usize {
        out.lines()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"))
    }

    #[test]
    fn full_status_shows_every_section_in_order_on_one_screen() {
        let out = rendered(&full());
        let order =
            ["health", "agent", "config", "identity", "collectors", "fim", "transport", "self-limits"];
        let positions: Vec<usize> = order.iter().map(|p| line_of(&out, p)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "sections out of order {positions:?}:\n{out}");
        assert!(out.lines().count() <= 30, "more than one screen:\n{out}");
        assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "a line is wider than {WIDTH}:\n{out}");

        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "health      degraded");
        assert_eq!(lines[1], "  - packages: cannot read /var/lib/dpkg/status: it is a directory");
        assert_eq!(
            lines[2],
            "agent       guestward-agent 0.1.0 running (pid 4242), up 2h 3m (since 2027-01-15T05:57:00Z)"
        );
        assert_eq!(lines[3], "config      /etc/guestward/agent.toml");
        assert!(out.contains("identity    host i-0123456789abcdef0 (from ec2_instance_id); EC2 instance i-0123456789abcdef0\n"), "{out}");
        assert!(out.contains("collectors  last full scan 5m ago, 3 finding(s) (agentctl findings); next in 10m, every 15m\n"), "{out}");
        assert!(out.contains("  NAME      RESULT    LAST RUN   TOOK     NEXT RUN\n"), "{out}");
        assert!(out.contains("  host      ok        5m ago     1.2 s    in 10m\n"), "{out}");
        assert!(out.contains("  packages  degraded  5m ago     1.2 s    in 10m\n"), "{out}");
        // A long error wraps under itself, whole, rather than being cut.
        assert!(out.contains("    error: cannot read /var/lib/dpkg/status:\n           xxx"), "{out}");
        assert!(out.contains(" (3 failures in a row)\n") && !out.contains('…'), "{out}");
        assert!(out.contains("  cloud     skipped   never      -        -\n"), "{out}");
        assert!(
            out.contains("fim         watching: baseline complete, 12,345 entries, verified 2m ago\n"),
            "{out}"
        );
        assert!(
            out.contains("  watches 230 of 240 (realtime coverage incomplete); open coverage gaps 1; changes since start 7\n"),
            "{out}"
        );
        assert!(out.contains("transport   https://collector.internal:8443 connected\n"), "{out}");
        assert!(
            out.contains("self-limits throttled for 1m: cpu 7.5% of 5.0%, memory 12.0 MiB of 64.0 MiB\n"),
            "{out}"
        );
        assert!(out.contains("  why       cpu 7.5% over the 5.0% budget\n"), "{out}");
        assert!(out.contains("  history   throttled 2 time(s), 6m in all since start"), "{out}");
        assert!(
            out.contains(
                "reload      1m ago refused, the previous configuration keeps running: agent.toml:3:1"
            ),
            "{out}"
        );
        assert!(!out.contains("Ok") && !out.contains("Degraded"), "state words are lowercase:\n{out}");
    }

    #[test]
    fn bare_status_of_a_daemon_without_the_new_fields_still_reads_well() {
        let mut status = bare();
        status.last_scan = Some(ScanSummary {
            collected_at: at(NOW - 30),
            host_id: Some("4f3c0a".into()),
            sections: vec![
                SectionSummary { name: "host".into(), status: SectionStatus::Ok, problems: 0 },
                SectionSummary { name: "packages".into(), status: SectionStatus::Degraded, problems: 2 },
            ],
            findings: 0,
        });
        let out = rendered(&status);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "health      degraded");
        assert_eq!(lines[1], "  - the last scan's packages section is degraded (2 problem(s))");
        assert!(
            out.contains("config      built-in defaults (/etc/guestward/agent.toml not present)\n"),
            "{out}"
        );
        assert!(
            out.contains("identity    host 4f3c0a; EC2 unknown yet (the cloud collector has not run)\n"),
            "{out}"
        );
        assert!(out.contains("  host      ok        0\n  packages  degraded  2\n"), "{out}");
        assert!(out.contains("fim         off ([fim] enabled = false)\n"), "{out}");
        assert!(out.contains("transport   off: reports stay on this host"), "{out}");
        assert!(
            out.contains("self-limits not throttled: cpu not measured yet, memory not measured yet\n"),
            "{out}"
        );
        assert_eq!(effective_health(&status).verdict, Health::Degraded);
    }

    #[test]
    fn a_reinitialised_identity_waiting_for_credentials_says_why_and_what_to_do() {
        let mut status = bare();
        status.identity = IdentityStatus {
            host_id: Some("i-0bbbbbbbbbbbbbbbb".into()),
            host_id_source: Some(guestward_report::HostIdSource::Ec2InstanceId),
            instance_id: Some("i-0bbbbbbbbbbbbbbbb".into()),
            reinitialised_at: Some(at(NOW - 60)),
            reinitialised_reason: Some(
                "the instance id changed from i-0aaaaaaaaaaaaaaaa to i-0bbbbbbbbbbbbbbbb".into(),
            ),
            credentials: Some("waiting".into()),
            credentials_action: Some("replace transport.cert_file and key_file".into()),
            ..IdentityStatus::default()
        };
        status.transport = Some(TransportStatus {
            held: Some("holding reports: retired".into()),
            ..TransportStatus::default()
        });
        let out = rendered(&status);
        assert!(
            out.contains("  re-initialised 2027-")
                && out.contains(": the instance id changed from i-0aaaaaaaaaaaaaaaa"),
            "{out}"
        );
        assert!(out.contains("  credentials waiting: replace transport.cert_file and key_file\n"), "{out}");
        assert!(out.contains("  held      holding reports: retired\n"), "{out}");
        // A kept identity prints neither line.
        status.identity.reinitialised_at = None;
        status.identity.credentials = Some("in_use".into());
        let out = rendered(&status);
        assert!(!out.contains("re-initialised") && !out.contains("credentials"), "{out}");
    }

    #[test]
    fn healthy_status_says_ok_with_no_reasons_and_not_ec2_says_why() {
        let mut status = bare();
        status.identity = IdentityStatus {
            host_id: Some("web-42".into()),
            host_id_source: Some(guestward_report::HostIdSource::Config),
            instance_id: None,
            not_ec2_reason: Some("no EC2 signature in the DMI data (/sys/class/dmi/id)".into()),
            ..IdentityStatus::default()
        };
        let out = rendered(&status);
        assert!(out.starts_with("health      ok\nagent "), "{out}");
        assert!(
            out.contains("identity    host web-42 (from config); not EC2: no EC2 signature in the DMI data"),
            "{out}"
        );
        assert_eq!(effective_health(&status), HealthStatus::default());

        // A reason too long for the line gets a line of its own, whole.
        let why = "no DMI data (/sys/class/dmi/id absent) and no /sys/hypervisor/uuid: not an EC2 instance";
        status.identity.host_id = Some("3d1219c7c4c5404aaa1f6d2a48adfda4".into());
        status.identity.host_id_source = Some(guestward_report::HostIdSource::MachineId);
        status.identity.not_ec2_reason = Some(why.into());
        let out = rendered(&status);
        assert!(
            out.contains(&format!(
                "identity    host 3d1219c7c4c5404aaa1f6d2a48adfda4 (from machine_id); not EC2\n  not EC2: {why}\n"
            )),
            "{out}"
        );
    }

    #[test]
    fn transport_block_shows_url_state_delivery_age_spool_drops_certificate_and_error() {
        let t = TransportStatus {
            url: "https://collector.internal:8443".into(),
            connected: false,
            last_success_at: Some(at(NOW - 300)),
            last_error: Some("connection refused".into()),
            consecutive_failures: 4,
            // Nanoseconds, as the shipper records them: shown to the second.
            next_attempt_at: Timestamp::from_unix_nanos((NOW + 60) * 1_000_000_000 + 760_715_047),
            delivered_reports_total: 12,
            failed_requests_total: 4,
            spool: SpoolStatus {
                reports: 3,
                bytes: 3 * 1024 * 1024 / 2,
                max_bytes: 256 * 1024 * 1024,
                oldest_collected_at: Some(at(NOW - 7_260)),
                superseded_snapshots_dropped_total: 2,
                events_dropped_total: 5,
                reports_dropped_total: 1,
                held_in_memory: 1,
                rejected_total: 2,
            },
            certificate: Some(CertificateStatus {
                path: "/etc/guestward/tls/agent.pem".into(),
                subject: "i-0123456789abcdef0".into(),
                not_after: Some(at(NOW + 3 * 86_400)),
                days_left: Some(3),
                sha256: None,
                names: Some("host i-0aaaaaaaaaaaaaaaa (SAN URI)".into()),
                identity_problem: Some(
                    "names host i-0aaaaaaaaaaaaaaaa (SAN URI), but this agent reports as host i-0123456789abcdef0: the collector refuses its reports (403)".into(),
                ),
            }),
            ..TransportStatus::default()
        };
        let mut out = Vec::new();
        render_transport(&t, 1, at(NOW), Width::Terminal(WIDTH), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "transport   https://collector.internal:8443 not connected (4 failed attempt(s) in a row)"
        );
        assert!(lines[1].contains("(5m ago); 12 report(s) delivered, 4 failed request(s)"), "{out}");
        assert!(
            out.contains("spool     3 report(s), 1.5 MiB of 256.0 MiB, oldest")
                && out.contains("(2h 1m old)"),
            "{out}"
        );
        assert!(
            out.contains("superseded snapshots 2, events 5, whole reports 1; reports not spooled 1"),
            "{out}"
        );
        assert!(out.contains("CN=i-0123456789abcdef0") && out.contains("(only 3 days left)"), "{out}");
        // Wrapped at the terminal's width, indented under the label.
        assert!(
            out.contains("  IDENTITY  the certificate names host i-0aaaaaaaaaaaaaaaa (SAN URI), but this agent reports as host\n            i-0123456789abcdef0: the collector refuses its reports (403)\n"),
            "{out}"
        );
        assert!(out.contains("error     connection refused"), "{out}");
        assert!(out.contains(&format!("  retry     {}\n", at(NOW + 60))), "{out}");
        assert!(out.contains("IN MEMORY 1 report(s) the disk refused"), "{out}");
        assert!(
            out.contains("  rejected  2 report(s) refused by the collector or unusable: set aside, see spool/rejected/*.reason\n"),
            "{out}"
        );
        assert!(
            out.lines().filter(|l| l.starts_with("  rejected")).all(|l| l.chars().count() <= WIDTH),
            "{out}"
        );
    }

    #[test]
    fn transport_block_flags_an_expired_certificate() {
        let t = TransportStatus {
            url: "https://c:1".into(),
            connected: true,
            certificate: Some(CertificateStatus {
                path: "a.pem".into(),
                subject: "h".into(),
                not_after: Some(at(NOW - 2 * 86_400)),
                days_left: Some(-2),
                sha256: None,
                ..CertificateStatus::default()
            }),
            ..TransportStatus::default()
        };
        let mut out = Vec::new();
        render_transport(&t, 0, at(NOW), Width::Terminal(WIDTH), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("transport   https://c:1 connected\n"), "{out}");
        assert!(out.contains("none yet"), "{out}");
        assert!(out.contains("expired") && out.contains("(2 days ago)"), "{out}");
        assert!(!out.contains("error ") && !out.contains("IDENTITY"), "{out}");
    }

    /// `status` cut reasons and errors at 100 characters even into a pipe, so a refused
    /// reload's `file:line: key` or a collector's "connection refused" at the end never showed.
    #[test]
    fn reasons_and_errors_are_whole_off_a_terminal_and_wrapped_at_its_width_on_one() {
        let cause = "agent.toml:41:7: key `transport.url`: connection refused";
        let mut status = full();
        let long = format!("{}{cause}", "the collector at https://collector.internal:8443 said ".repeat(3));
        status.health.reasons = vec![long.clone()];
        if let Some(r) = status.reload.as_mut() {
            r.error = Some(long.clone());
        }
        if let Some(t) = status.transport.as_mut() {
            t.last_error = Some(long.clone());
        }
        status.collectors[1].last_error = Some(long.clone());

        let mut out = Vec::new();
        render(&status, at(NOW), Width::Unlimited, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        for prefix in ["  - ", "reload      ", "  error     ", "    error: "] {
            let line = &out.lines().nth(line_of(&out, prefix)).unwrap();
            assert!(line.contains(&long), "{prefix:?} cut: {line}");
        }

        let mut out = Vec::new();
        render(&status, at(NOW), Width::Terminal(60), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.lines().all(|l| l.chars().count() <= 60), "a line is wider than 60:\n{out}");
        // Joined back, every wrapped value is whole.
        let joined = out.lines().map(str::trim).collect::<Vec<_>>().join(" ");
        assert_eq!(joined.matches(&long).count(), 4, "{out}");
        // Table columns stay aligned.
        assert!(out.contains("  host      ok        5m ago     1.2 s    in 10m\n"), "{out}");
    }

    #[test]
    fn wrapping_breaks_at_spaces_indents_what_follows_and_splits_only_words_too_long() {
        assert_eq!(wrap("  - aaa bbb ccc", 9, 4), "  - aaa\n    bbb\n    ccc");
        assert_eq!(wrap("ab", 9, 4), "ab");
        assert_eq!(wrap("x: 0123456789abcdef", 8, 2), "x:\n  012345\n  6789ab\n  cdef");
    }

    #[test]
    fn ages_sizes_and_cuts_read_at_a_glance() {
        assert_eq!(
            [human_millis(850), human_millis(1_234), human_millis(125_000)],
            ["850 ms", "1.2 s", "2m"]
        );
        assert_eq!([group_thousands(7), group_thousands(1_234_567)], ["7", "1,234,567"]);
        assert_eq!([cut("abcdef", 4), cut("ab\ncd", 10)], ["abc…", "ab cd"]);
    }
}
