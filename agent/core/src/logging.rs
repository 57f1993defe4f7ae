//! Logging of the binaries (`guestward-agent`, `guestward-collector`): one line per event on
//! standard error, fit for a terminal, a file and the systemd journal alike.
//!
//! - Colour only when standard error is a terminal: a file or the journal would keep the escape
//!   codes as text. Not even then when `NO_COLOR` is set and not empty (no-color.org) or `TERM`
//!   is `dumb` (a terminal that shows escape codes as text, such as an Emacs shell buffer).
//! - Under systemd (standard error connected to the journal, which systemd announces in
//!   `JOURNAL_STREAM` as the `DEVICE:INODE` of that stream) each line starts with the
//!   sd-daemon priority prefix (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace)
//!   and carries no timestamp (the journal stamps every entry). journald strips the prefix and
//!   files the line at that priority, so `journalctl -p warning -u guestward-agent` works.
//!   Chosen over writing to the journal's socket (tracing-journald): no new dependency, and it
//!   also works with `StandardError=journal+console` or a log forwarder reading the stream; the
//!   check of the device and inode keeps a `JOURNAL_STREAM` inherited by a child whose stderr was
//!   redirected (`guestward-agent scan 2>file` from a service's shell) from prefixing a file.
//! - The level: `RUST_LOG` (or its older name `GUESTWARD_LOG`) when set, else the configuration
//!   ([`apply_config_level`], `[agent] log_level`), else the binary's default. A directive is
//!   a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or a comma-separated list of
//!   levels for targets (`info,guestward_fim=debug`): tracing-subscriber's `Targets`, not its
//!   `EnvFilter`. Span and field filters (`[span{field=x}]`) are not offered: `EnvFilter` compiles
//!   them with a regex engine (`matchers`, a dense DFA builder) that cost the agent binary its size
//!   budget (docs/benchmarks.md, "Binary size"), and an agent's logs are read by target and level.

use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// Environment variables that set the level, first wins.
const ENV_VARS: [&str; 2] = ["RUST_LOG", "GUESTWARD_LOG"];

/// The filter of the installed subscriber, replaceable at run time (the configuration is read
/// after logging starts, and again on reload).
static FILTER: OnceLock<reload::Handle<Targets, tracing_subscriber::Registry>> = OnceLock::new();
/// Whether the level came from the environment (then the configuration does not override it).
static FROM_ENV: OnceLock<bool> = OnceLock::new();

/// Where standard error goes, as far as the format is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// A terminal: colours and timestamps.
    Terminal,
    /// The systemd journal: `<N>` priority prefixes, no timestamp, no colour.
    Journal,
    /// Anything else (a file, a pipe): timestamps, no colour.
    Plain,
}

/// Where standard error goes: the journal when `JOURNAL_STREAM` names exactly the stream that
/// standard error is (systemd's documented check), else a terminal or plain output.
pub fn stderr_destination() -> Destination {
    if journal_stream_is_stderr(std::env::var("JOURNAL_STREAM").ok().as_deref()) {
        Destination::Journal
    } else if std::io::stderr().is_terminal() {
        Destination::Terminal
    } else {
        Destination::Plain
    }
}

/// Whether a terminal may get colour, given `NO_COLOR` and `TERM`: the user's word wins over
/// the terminal test (no-color.org: set and not empty means no colour), and a dumb terminal
/// would print the escape codes as text.
fn colour_allowed(no_color: Option<std::ffi::OsString>, term: Option<std::ffi::OsString>) -> bool {
    let no_color = no_color.is_some_and(|v| !v.is_empty());
    let dumb = term.is_some_and(|t| t == "dumb");
    !no_color && !dumb
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`, decimal) is the device and inode of standard error.
fn journal_stream_is_stderr(value: Option<&str>) -> bool {
    let Some((dev, ino)) = value.and_then(|v| v.split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.trim().parse::<u64>(), ino.trim().parse::<u64>()) else { return false };
    match nix::sys::stat::fstat(std::io::stderr()) {
        #[allow(clippy::useless_conversion)] // st_dev/st_ino widths differ between libcs.
        Ok(st) => u64::from(st.st_dev) == dev && u64::from(st.st_ino) == ino,
        Err(_) => false,
    }
}

/// The level set in the environment, if any: `RUST_LOG`, else `GUESTWARD_LOG`. An invalid
/// value is reported on standard error and ignored (the binary still starts and logs).
fn env_filter() -> Option<Targets> {
    for var in ENV_VARS {
        let Ok(value) = std::env::var(var) else { continue };
        if value.trim().is_empty() {
            continue;
        }
        // The same rules as `[agent] log_level`: a misspelt level is refused, not read as a
        // target that silences the rest.
        match parse_level(&value) {
            Ok(filter) => return Some(filter),
            Err(e) => crate::stdio::error_line(format_args!("{var}: {e}; ignored")),
        }
    }
    None
}

/// Starts logging to standard error at `default` (a directive, e.g. `info`) unless `RUST_LOG`
/// or `GUESTWARD_LOG` says otherwise. Call once, first thing in `main`; a second call does
/// nothing.
pub fn init(default: &str) {
    let from_env = env_filter();
    let _ = FROM_ENV.set(from_env.is_some());
    // `default` is the binary's own constant; were it not a directive, `info` rather than
    // nothing.
    let filter = from_env.unwrap_or_else(|| {
        parse_level(default)
            .unwrap_or_else(|_| Targets::new().with_default(tracing_subscriber::filter::LevelFilter::INFO))
    });
    let (filter, handle) = reload::Layer::new(filter);
    let destination = stderr_destination();
    let format = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let format = match destination {
        Destination::Journal => {
            format.with_ansi(false).without_time().event_format(JournalPrefix::new()).boxed()
        }
        Destination::Terminal => {
            format.with_ansi(colour_allowed(std::env::var_os("NO_COLOR"), std::env::var_os("TERM"))).boxed()
        }
        Destination::Plain => format.with_ansi(false).boxed(),
    };
    if tracing_subscriber::registry().with(filter).with(format).try_init().is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Applies the configured level (`[agent] log_level`; `None`: `default`) unless the
/// environment set one at [`init`] (`RUST_LOG` wins, so one run can be debugged without
/// editing the file). Returns the directive in effect, for the start-up line. Call after the
/// configuration is loaded and after every reload.
pub fn apply_config_level(configured: Option<&str>, default: &str) -> Result<String, InvalidLevel> {
    if FROM_ENV.get().copied().unwrap_or(false) {
        let env = ENV_VARS.iter().find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()));
        return Ok(env.unwrap_or_default());
    }
    let directive = configured.unwrap_or(default);
    let filter = parse_level(directive)?;
    if let Some(handle) = FILTER.get() {
        // Fails only when the subscriber is gone (process exiting): nothing left to filter.
        let _ = handle.reload(filter);
    }
    Ok(directive.to_string())
}

/// A `log_level` that is neither a level nor a list of levels for targets.
#[derive(Debug, thiserror::Error)]
#[error("`{value}` is not a log level (error, warn, info, debug, trace) or filter directive: {reason}")]
pub struct InvalidLevel {
    /// The value as written.
    pub value: String,
    /// What the parser said.
    pub reason: String,
}

/// Parses a level or a list of levels for targets (`info`, `warn,guestward_fim=debug`), as
/// `[agent] log_level` accepts it.
pub fn parse_level(directive: &str) -> Result<Targets, InvalidLevel> {
    let invalid = |reason: String| InvalidLevel { value: directive.to_string(), reason };
    if directive.trim().is_empty() {
        return Err(invalid("empty".to_string()));
    }
    // `Targets` reads a bare word as a target enabled at every level, so a misspelt level
    // (`inof`) would silence everything else: each directive must name a level, alone or
    // after `target=`.
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for part in directive.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let level = part.rsplit_once('=').map_or(part, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(invalid(format!(
                "`{part}` names no level (use e.g. `info` or `guestward_fim=debug`)"
            )));
        }
    }
    directive.parse::<Targets>().map_err(|e| invalid(e.to_string()))
}

/// The event format under the journal: the sd-daemon priority prefix, then the usual line.
struct JournalPrefix {
    inner: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl JournalPrefix {
    fn new() -> Self {
        Self { inner: tracing_subscriber::fmt::format().without_time().with_ansi(false) }
    }
}

/// The sd-daemon(3) priority of a level: `<3>` err, `<4>` warning, `<6>` info, `<7>` debug.
pub fn priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N> FormatEvent<S, N> for JournalPrefix
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn levels_and_directives_parse_and_nonsense_is_refused_with_the_value() {
        for ok in ["error", "warn", "info", "debug", "trace", "info,guestward_fim=debug"] {
            parse_level(ok).unwrap();
        }
        for bad in ["", "loud", "inof", "info,guestward_fim=lots"] {
            let e = parse_level(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn a_target_s_own_level_overrides_the_default_for_it_and_its_modules_only() {
        use tracing::Level;
        let f = parse_level("warn,guestward_fim=debug").unwrap();
        assert!(f.would_enable("guestward_fim::scan", &Level::DEBUG));
        assert!(!f.would_enable("guestward_fim::scan", &Level::TRACE));
        assert!(f.would_enable("guestward_transport", &Level::WARN));
        assert!(!f.would_enable("guestward_transport", &Level::INFO));
        assert!(!parse_level("off").unwrap().would_enable("guestward_agent", &Level::ERROR));
    }

    #[test]
    fn a_journal_stream_that_is_not_stderr_is_ignored() {
        assert!(!journal_stream_is_stderr(None));
        assert!(!journal_stream_is_stderr(Some("garbage")));
        assert!(!journal_stream_is_stderr(Some("0:0")));
    }
}
