//! Time: [`Timestamp`] (RFC 3339 on the wire) and the parser of time arguments
//! ([`parse_time_arg`]: `--since 1h` or an RFC 3339 time) shared by both binaries.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A UTC instant, serialized as an RFC 3339 string (`2026-11-29T16:32:55Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub jiff::Timestamp);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(jiff::Timestamp::now())
    }

    /// From whole seconds since the Unix epoch; `None` when out of range.
    pub fn from_unix_secs(secs: i64) -> Option<Self> {
        jiff::Timestamp::from_second(secs).ok().map(Self)
    }

    /// Whole seconds since the Unix epoch.
    pub fn unix_secs(&self) -> i64 {
        self.0.as_second()
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Timestamp {
    /// For people: whole seconds (`2026-11-29T16:32:55Z`), the same width on every line, as
    /// every human table and line prints a time. `Display` keeps the full precision: it is also
    /// what is stored and compared (baseline times, file times in change records).
    pub fn human(&self) -> HumanTime {
        HumanTime(*self)
    }
}

/// A [`Timestamp`] shown to whole seconds (see [`Timestamp::human`]).
#[derive(Debug, Clone, Copy)]
pub struct HumanTime(Timestamp);

impl std::fmt::Display for HumanTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Truncated, not rounded: a time shown is never later than the event.
        match jiff::Timestamp::from_second(self.0.0.as_second()) {
            Ok(t) => f.pad(&t.to_string()),
            Err(_) => f.pad(&self.0.0.to_string()),
        }
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "UTC instant in RFC 3339 form."
        })
    }
}

impl Timestamp {
    /// From nanoseconds since the Unix epoch (a file's `mtime`/`ctime`); `None` when out of range.
    pub fn from_unix_nanos(nanos: i64) -> Option<Self> {
        jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok().map(Self)
    }
}

/// The forms a time argument accepts, for error messages and `--help`.
pub const TIME_ARG_FORMS: &str =
    "an RFC 3339 time (2026-11-29T17:00:00Z) or an age back from now (30s, 15m, 1h, 2d, 1w; combined: 1h30m)";

/// A `--since`/`--until` value that is neither an RFC 3339 time nor an age.
#[derive(Debug, thiserror::Error)]
pub enum TimeArgError {
    /// Not in any accepted form.
    #[error("`{text}` is not a time: expected {TIME_ARG_FORMS}")]
    Unrecognized {
        /// What was given (truncated).
        text: String,
    },
    /// An age so large it is before any representable time.
    #[error("`{text}` reaches back before any representable time")]
    TooFarBack {
        /// What was given.
        text: String,
    },
}

/// Parses a time argument (`--since 1h`, `--since 2026-11-29T17:00:00Z`): an RFC 3339 time, or
/// an age back from now made of `<number><unit>` groups, units `s`, `m`, `h`, `d` (24 h) and
/// `w` (7 d): `30s`, `15m`, `1h`, `2d`, `1w`, `1h30m`. Meant as a clap `value_parser`, so that
/// clap's error names the flag and this one the accepted forms.
pub fn parse_time_arg(text: &str) -> Result<Timestamp, TimeArgError> {
    parse_time_arg_at(text, Timestamp::now())
}

/// [`parse_time_arg`] with the current time given (ages count back from `now`).
pub fn parse_time_arg_at(text: &str, now: Timestamp) -> Result<Timestamp, TimeArgError> {
    let trimmed = text.trim();
    // Shown back in the error: bounded and escaped, since it may be anything a script passed.
    let shown = || crate::text::escape_control(&crate::text::truncate_chars(trimmed, 64)).into_owned();
    if let Ok(t) = trimmed.parse::<jiff::Timestamp>() {
        return Ok(Timestamp(t));
    }
    let secs = parse_age_secs(trimmed).ok_or_else(|| TimeArgError::Unrecognized { text: shown() })?;
    now.0
        .checked_sub(jiff::SignedDuration::from_secs(secs))
        .map(Timestamp)
        .map_err(|_| TimeArgError::TooFarBack { text: shown() })
}

/// The forms an age argument accepts, for error messages and `--help`.
pub const AGE_ARG_FORMS: &str = "an age: 30s, 15m, 1h, 2d, 1w; combined: 1h30m";

/// An age alone (`--silent-for 1h`), in seconds: the `<number><unit>` groups of
/// [`parse_time_arg`]'s ages, without the RFC 3339 form. A clap `value_parser`.
pub fn parse_age_arg(text: &str) -> Result<u64, String> {
    parse_age_secs(text.trim()).and_then(|secs| u64::try_from(secs).ok()).ok_or_else(|| {
        let shown = crate::text::escape_control(&crate::text::truncate_chars(text.trim(), 64)).into_owned();
        format!("`{shown}` is not an age: expected {AGE_ARG_FORMS}")
    })
}

/// `1h30m` -> 5400; `None` unless the whole text is `<digits><unit>` groups.
fn parse_age_secs(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return None;
        }
        let (number, tail) = rest.split_at(digits);
        let number: i64 = number.parse().ok()?;
        let mut chars = tail.chars();
        let unit: i64 = match chars.next()? {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit)?)?;
        rest = chars.as_str().trim_start();
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn now() -> Timestamp {
        Timestamp("2026-12-02T12:00:00Z".parse().unwrap())
    }

    fn at(text: &str) -> String {
        parse_time_arg_at(text, now()).unwrap().to_string()
    }

    #[test]
    fn a_time_for_people_is_whole_seconds_truncated_and_pads_like_a_string() {
        let t = Timestamp("2026-12-06T05:33:41.999999999Z".parse().unwrap());
        assert_eq!(t.human().to_string(), "2026-12-06T05:33:41Z");
        assert_eq!(t.to_string(), "2026-12-06T05:33:41.999999999Z", "Display keeps the precision");
        assert_eq!(format!("[{:<22}]", t.human()), "[2026-12-06T05:33:41Z  ]");
    }

    #[test]
    fn an_age_alone_is_seconds_and_a_time_is_not_an_age() {
        assert_eq!(
            ["90s", "1h30m", " 2d ", "1w"].map(|t| parse_age_arg(t).unwrap()),
            [90, 5_400, 172_800, 604_800]
        );
        for bad in ["", "1", "h", "-1h", "2026-12-02T12:00:00Z", "1y"] {
            let err = parse_age_arg(bad).unwrap_err();
            assert!(
                err.ends_with("is not an age: expected an age: 30s, 15m, 1h, 2d, 1w; combined: 1h30m"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn ages_in_every_unit_count_back_from_now() {
        assert_eq!(at("30s"), "2026-12-02T11:59:30Z");
        assert_eq!(at("15m"), "2026-12-02T11:45:00Z");
        assert_eq!(at("1h"), "2026-12-02T11:00:00Z");
        assert_eq!(at("2d"), "2026-11-30T12:00:00Z");
        assert_eq!(at("1w"), "2026-11-25T12:00:00Z");
        assert_eq!(at("1h30m"), "2026-12-02T10:30:00Z");
        assert_eq!(at(" 1h 30m "), "2026-12-02T10:30:00Z");
        assert_eq!(at("0s"), "2026-12-02T12:00:00Z");
    }

    #[test]
    fn rfc3339_times_are_taken_as_given() {
        assert_eq!(at("2026-11-29T17:00:00Z"), "2026-11-29T17:00:00Z");
        assert_eq!(at("2026-11-29T18:00:00+01:00"), "2026-11-29T17:00:00Z");
    }

    #[test]
    fn anything_else_is_refused_with_the_accepted_forms() {
        for bad in ["", "yesterday", "1", "h", "1x", "-1h", "1h-", "1.5h", "1 hour", "2026-11-29"] {
            let e = parse_time_arg_at(bad, now()).unwrap_err().to_string();
            assert!(e.contains("RFC 3339") && e.contains("1h"), "{bad:?}: {e}");
        }
        let e = parse_time_arg_at("999999999999w", now()).unwrap_err();
        assert!(matches!(e, TimeArgError::TooFarBack { .. }), "{e}");
        let e = parse_time_arg_at(&"9".repeat(40), now()).unwrap_err().to_string();
        assert!(e.len() < 300, "the echo is bounded: {e}");
    }
}
