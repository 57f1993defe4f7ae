//! rpm version ordering (`rpmvercmp`), for telling upgrades from downgrades.
//!
//! The comparison itself comes from the `rpm-version` crate (maintained by the rpm-rs
//! project, "sort algorithm is identical to RPM"); this module fixes the API the rest of
//! guestward uses and holds the tests that pin its behaviour to rpm's own test cases
//! (rpm's `tests/rpmvercmp.at`) and, where rpm is installed, to rpm itself.
//!
//! Rules: versions split into runs of digits and runs of letters, other characters only
//! separate; digit runs compare numerically (leading zeros ignored) and beat letter runs;
//! `~` sorts before anything, even the end of the string (`1.0~rc1 < 1.0`); `^` sorts after
//! the end of the string but before any other run (`1.0 < 1.0^git1 < 1.0.1`). A missing
//! epoch is 0.

use std::cmp::Ordering;

/// Compares two version (or release) strings as rpm's `rpmvercmp` does.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    // Evr's ordering compares epoch, version, release in turn; with the same empty epoch
    // and release only the version strings decide.
    let ea = rpm_version::Evr::new("", a, "");
    let eb = rpm_version::Evr::new("", b, "");
    ea.cmp(&eb)
}

/// Compares full `[epoch:]version[-release]` strings (a missing epoch is 0).
pub fn compare_evr(a: &str, b: &str) -> Ordering {
    rpm_version::rpm_evr_compare(a, b)
}

/// Compares (epoch, version, release) triples.
pub fn compare(a: (Option<u32>, &str, &str), b: (Option<u32>, &str, &str)) -> Ordering {
    a.0.unwrap_or(0)
        .cmp(&b.0.unwrap_or(0))
        .then_with(|| rpmvercmp(a.1, b.1))
        .then_with(|| rpmvercmp(a.2, b.2))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::cmp::Ordering::{Equal, Greater, Less};

    /// rpm's own table (tests/rpmvercmp.at, rpm 4.18): (a, b, rpmvercmp(a, b)).
    pub(crate) const RPM_CASES: &[(&str, &str, i8)] = &[
        ("1.0", "1.0", 0),
        ("1.0", "2.0", -1),
        ("2.0", "1.0", 1),
        ("2.0.1", "2.0.1", 0),
        ("2.0", "2.0.1", -1),
        ("2.0.1", "2.0", 1),
        ("2.0.1a", "2.0.1a", 0),
        ("2.0.1a", "2.0.1", 1),
        ("2.0.1", "2.0.1a", -1),
        ("5.5p1", "5.5p1", 0),
        ("5.5p1", "5.5p2", -1),
        ("5.5p2", "5.5p1", 1),
        ("5.5p10", "5.5p10", 0),
        ("5.5p1", "5.5p10", -1),
        ("5.5p10", "5.5p1", 1),
        ("10xyz", "10.1xyz", -1),
        ("10.1xyz", "10xyz", 1),
        ("xyz10", "xyz10", 0),
        ("xyz10", "xyz10.1", -1),
        ("xyz10.1", "xyz10", 1),
        ("xyz.4", "xyz.4", 0),
        ("xyz.4", "8", -1),
        ("8", "xyz.4", 1),
        ("xyz.4", "2", -1),
        ("2", "xyz.4", 1),
        ("5.5p2", "5.6p1", -1),
        ("5.6p1", "5.5p2", 1),
        ("5.6p1", "6.5p1", -1),
        ("6.5p1", "5.6p1", 1),
        ("6.0.rc1", "6.0", 1),
        ("6.0", "6.0.rc1", -1),
        ("10b2", "10a1", 1),
        ("10a2", "10b2", -1),
        ("1.0aa", "1.0aa", 0),
        ("1.0a", "1.0aa", -1),
        ("1.0aa", "1.0a", 1),
        ("10.0001", "10.0001", 0),
        ("10.0001", "10.1", 0),
        ("10.1", "10.0001", 0),
        ("10.0001", "10.0039", -1),
        ("10.0039", "10.0001", 1),
        ("4.999.9", "5.0", -1),
        ("5.0", "4.999.9", 1),
        ("20101121", "20101121", 0),
        ("20101121", "20101122", -1),
        ("20101122", "20101121", 1),
        ("2_0", "2_0", 0),
        ("2.0", "2_0", 0),
        ("2_0", "2.0", 0),
        ("a", "a", 0),
        ("a+", "a+", 0),
        ("a+", "a_", 0),
        ("a_", "a+", 0),
        ("+a", "+a", 0),
        ("+a", "_a", 0),
        ("_a", "+a", 0),
        ("+_", "+_", 0),
        ("_+", "+_", 0),
        ("_+", "_+", 0),
        ("+", "_", 0),
        ("_", "+", 0),
        ("1.0~rc1", "1.0~rc1", 0),
        ("1.0~rc1", "1.0", -1),
        ("1.0", "1.0~rc1", 1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("1.0~rc2", "1.0~rc1", 1),
        ("1.0~rc1~git123", "1.0~rc1~git123", 0),
        ("1.0~rc1~git123", "1.0~rc1", -1),
        ("1.0~rc1", "1.0~rc1~git123", 1),
        ("1.0^", "1.0^", 0),
        ("1.0^", "1.0", 1),
        ("1.0", "1.0^", -1),
        ("1.0^git1", "1.0^git1", 0),
        ("1.0^git1", "1.0", 1),
        ("1.0", "1.0^git1", -1),
        ("1.0^git1", "1.0^git2", -1),
        ("1.0^git2", "1.0^git1", 1),
        ("1.0^git1", "1.01", -1),
        ("1.01", "1.0^git1", 1),
        ("1.0^20160101", "1.0^20160101", 0),
        ("1.0^20160101", "1.0.1", -1),
        ("1.0.1", "1.0^20160101", 1),
        ("1.0^20160101^git1", "1.0^20160101^git1", 0),
        ("1.0^20160102", "1.0^20160101^git1", 1),
        ("1.0^20160101^git1", "1.0^20160102", -1),
        ("1.0~rc1^git1", "1.0~rc1^git1", 0),
        ("1.0~rc1^git1", "1.0~rc1", 1),
        ("1.0~rc1", "1.0~rc1^git1", -1),
        ("1.0^git1~pre", "1.0^git1~pre", 0),
        ("1.0^git1", "1.0^git1~pre", 1),
        ("1.0^git1~pre", "1.0^git1", -1),
    ];

    fn ord(v: i8) -> Ordering {
        v.cmp(&0)
    }

    #[test]
    fn matches_rpms_own_test_table() {
        for (a, b, want) in RPM_CASES {
            assert_eq!(rpmvercmp(a, b), ord(*want), "rpmvercmp({a:?}, {b:?})");
        }
    }

    #[test]
    fn epochs_and_releases() {
        assert_eq!(compare_evr("1:1.0-1", "2.0-1"), Greater);
        assert_eq!(compare_evr("0:1.0-1", "1.0-1"), Equal);
        assert_eq!(compare_evr("1.0-1.el8", "1.0-1.el8_8"), Less);
        assert_eq!(compare((None, "1.0", "1"), (Some(0), "1.0", "1")), Equal);
        assert_eq!(compare((Some(1), "0.1", "1"), (None, "9.9", "9")), Greater);
        assert_eq!(compare((None, "3.0.8", "1.amzn2023.0.4"), (None, "3.0.8", "1.amzn2023.0.10")), Less);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "",
            "~",
            "^",
            "~~",
            "^^",
            "é1",
            "1é",
            "..",
            "0",
            "00",
            "a~b^c",
            "\u{0}",
            "9999999999999999999999999",
        ];
        for a in odd {
            for b in odd {
                let x = rpmvercmp(a, b);
                assert_eq!(rpmvercmp(b, a), x.reverse(), "antisymmetry for {a:?} {b:?}");
            }
        }
    }
}
