//! The rule set: a few explicit checks over the language inventory, each producing
//! [`Finding`]s with the evidence that triggered them.
//!
//! - `GW-LANG-001` Log4Shell by version: `log4j-core` in `[2.0-beta9, 2.16.0)`, except the
//!   backported fixes 2.12.2+ (Java 7) and 2.3.1+ (Java 6) (CVE-2021-44228, CVE-2021-45046).
//!   Critical while `JndiLookup.class` is present; medium when it was removed from the jar (the
//!   vendor's interim mitigation: the remote code execution path is gone, the version is not).
//! - `GW-LANG-002` an archive still containing `JndiLookup.class` whose log4j-core version is
//!   unknown (shaded or renamed copies, jars without pom.properties).
//! - `GW-LANG-003` a PyPI package whose name is on the known-malicious list shipped in
//!   `data/pypi-malicious.txt` (typosquats, the `torchtriton` dependency confusion).

use crate::model::{Ecosystem, LangPackage, LangReport};
use guestward_core::{Finding, Severity};
use serde_json::json;

/// Log4Shell by version (`log4j-core` in the affected ranges).
pub const LOG4SHELL_VERSION: &str = "GW-LANG-001";
/// `JndiLookup.class` in an archive whose log4j-core version is unknown.
pub const JNDI_LOOKUP_UNKNOWN_VERSION: &str = "GW-LANG-002";
/// A PyPI package on the known-malicious list.
pub const MALICIOUS_PYPI_PACKAGE: &str = "GW-LANG-003";

/// Every finding id these rules can raise (the finding catalogue checks it is complete).
pub const FINDING_IDS: &[&str] = &[LOG4SHELL_VERSION, JNDI_LOOKUP_UNKNOWN_VERSION, MALICIOUS_PYPI_PACKAGE];

/// The malicious-package list compiled into the agent (reviewable in the repository).
pub const PYPI_MALICIOUS_LIST: &str = include_str!("../data/pypi-malicious.txt");

/// One entry of the malicious PyPI list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaliciousPackage {
    /// PEP 503-normalized name.
    pub name: String,
    /// What it pretends to be.
    pub impersonates: String,
    /// The public report it comes from.
    pub reference: String,
}

/// Parses the list format (`name | impersonates | reference`, `#` comments).
pub fn parse_malicious_list(text: &str) -> Vec<MaliciousPackage> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.splitn(3, '|').map(str::trim);
            MaliciousPackage {
                name: crate::python::normalize_name(parts.next().unwrap_or_default()),
                impersonates: parts.next().unwrap_or_default().to_string(),
                reference: parts.next().unwrap_or_default().to_string(),
            }
        })
        .filter(|m| !m.name.is_empty())
        .collect()
}

/// A Log4j 2 version, ordered: `(major, minor, patch, stage, stage number)` where the stage is
/// alpha < beta < rc/other pre-release < release.
type Log4jKey = (u32, u32, u32, u8, u32);

/// Parses `2.14.1`, `2.0-beta9`, `2.0-rc1`, `2.15.0-SNAPSHOT`.
pub fn log4j_version_key(version: &str) -> Option<Log4jKey> {
    let (numbers, qualifier) = match version.trim().split_once('-') {
        Some((n, q)) => (n, Some(q)),
        None => (version.trim(), None),
    };
    let mut nums = numbers.split('.').map(|p| p.parse::<u32>());
    let major = nums.next()?.ok()?;
    let minor = nums.next().unwrap_or(Ok(0)).ok()?;
    let patch = nums.next().unwrap_or(Ok(0)).ok()?;
    let (stage, n) = match qualifier.map(str::to_ascii_lowercase) {
        None => (3, 0),
        Some(q) => {
            let digits_at = q.find(|c: char| c.is_ascii_digit()).unwrap_or(q.len());
            let n = q[digits_at..].parse::<u32>().unwrap_or(0);
            match &q[..digits_at] {
                "alpha" => (0, n),
                "beta" => (1, n),
                _ => (2, n),
            }
        }
    };
    Some((major, minor, patch, stage, n))
}

/// Whether a log4j-core version is affected by CVE-2021-44228 / CVE-2021-45046.
pub fn log4j_core_affected(version: &str) -> Option<bool> {
    let v = log4j_version_key(version)?;
    const RELEASE: u8 = 3;
    let first_affected = (2, 0, 0, 1, 9);
    let fixed = (2, 16, 0, RELEASE, 0);
    let java7_fix = ((2, 12, 2, RELEASE, 0), (2, 13, 0, 0, 0));
    let java6_fix = ((2, 3, 1, RELEASE, 0), (2, 4, 0, 0, 0));
    let in_range = |(lo, hi): (Log4jKey, Log4jKey)| v >= lo && v < hi;
    Some(in_range((first_affected, fixed)) && !in_range(java7_fix) && !in_range(java6_fix))
}

fn is_log4j_core(p: &LangPackage) -> bool {
    p.ecosystem == Ecosystem::Maven
        && p.name == "log4j-core"
        && p.namespace.as_deref().is_none_or(|g| g == "org.apache.logging.log4j")
}

fn finding(
    id: &str,
    severity: Severity,
    title: String,
    evidence: serde_json::Value,
    remediation: &str,
) -> Finding {
    Finding {
        id: id.to_string(),
        severity,
        title,
        evidence,
        remediation: remediation.to_string(),
        source: "packages".to_string(),
    }
}

const LOG4J_REMEDIATION: &str = "Upgrade log4j-core to 2.17.1 or later (2.12.4 on Java 7, 2.3.2 on Java 6) in the application that ships this archive and redeploy it; until then remove the class with `zip -q -d <jar> org/apache/logging/log4j/core/lookup/JndiLookup.class` and restart the JVM.";

/// Runs every rule over a language inventory.
pub fn evaluate(report: &LangReport) -> Vec<Finding> {
    let mut out = Vec::new();
    let jndi_at = |location: &str, inner: &Option<String>| {
        report.jndi_lookup.iter().find(|h| h.location == location && &h.path_in_archive == inner)
    };
    for p in report.packages.iter().filter(|p| is_log4j_core(p)) {
        if log4j_core_affected(&p.version) != Some(true) {
            continue;
        }
        let hit = jndi_at(&p.location, &p.path_in_archive);
        let (severity, title) = match hit {
            Some(_) => (
                Severity::Critical,
                format!(
                    "log4j-core {} is vulnerable to Log4Shell (CVE-2021-44228, CVE-2021-45046)",
                    p.version
                ),
            ),
            None => (
                Severity::Medium,
                format!(
                    "log4j-core {} is a Log4Shell-affected version (JndiLookup.class removed, the remote code execution path is mitigated)",
                    p.version
                ),
            ),
        };
        let evidence = json!({
            "path": p.location,
            "path_in_archive": p.path_in_archive,
            "group": p.namespace,
            "artifact": p.name,
            "version": p.version,
            "jndi_lookup_class": hit.map(|h| h.class_entry.clone()),
            "cves": ["CVE-2021-44228", "CVE-2021-45046"],
        });
        out.push(finding(LOG4SHELL_VERSION, severity, title, evidence, LOG4J_REMEDIATION));
    }
    for hit in &report.jndi_lookup {
        let known_version = report.packages.iter().any(|p| {
            is_log4j_core(p)
                && p.location == hit.location
                && p.path_in_archive == hit.path_in_archive
                && log4j_core_affected(&p.version).is_some()
        });
        if known_version {
            continue;
        }
        let evidence = json!({
            "path": hit.location,
            "path_in_archive": hit.path_in_archive,
            "class_entry": hit.class_entry,
        });
        out.push(finding(
            JNDI_LOOKUP_UNKNOWN_VERSION,
            Severity::High,
            "archive contains Log4j's JndiLookup class and no recognizable log4j-core version".to_string(),
            evidence,
            "Identify the Log4j copy bundled in this archive (it may be shaded under another package); if it is older than 2.17.1, upgrade the application or remove the JndiLookup class from it.",
        ));
    }
    let malicious = parse_malicious_list(PYPI_MALICIOUS_LIST);
    for p in report.of(Ecosystem::Pypi) {
        let Some(m) = malicious.iter().find(|m| m.name == p.name) else {
            continue;
        };
        let evidence = json!({
            "path": p.location,
            "name": p.name,
            "version": p.version,
            "installer": p.installer,
            "impersonates": m.impersonates,
            "reference": m.reference,
        });
        out.push(finding(
            MALICIOUS_PYPI_PACKAGE,
            Severity::Critical,
            format!("known malicious PyPI package `{}` is installed (impersonates {})", p.name, m.impersonates),
            evidence,
            "Uninstall the package, then treat the host as compromised: rotate every credential the installing user could read (SSH keys, cloud and API keys, tokens) and rebuild the instance from a known-good image.",
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn log4j_ranges() {
        for v in ["2.0-beta9", "2.0-rc1", "2.0", "2.14.1", "2.15.0", "2.12.1", "2.3", "2.15.0-SNAPSHOT"] {
            assert_eq!(log4j_core_affected(v), Some(true), "{v}");
        }
        for v in [
            "2.0-beta8",
            "2.0-alpha1",
            "2.16.0",
            "2.17.1",
            "2.12.2",
            "2.12.4",
            "2.3.1",
            "2.3.2",
            "1.2.17",
            "3.0.0",
        ] {
            assert_eq!(log4j_core_affected(v), Some(false), "{v}");
        }
        assert_eq!(log4j_core_affected("garbage"), None);
        assert_eq!(log4j_core_affected(""), None);
    }

    /// Each rule fires once on a report built for it, and the ids raised are exactly
    /// [`FINDING_IDS`]: a rule added without its id would leave the finding catalogue short.
    #[test]
    fn every_rule_raises_an_id_listed_in_finding_ids() {
        let package =
            |ecosystem, namespace: Option<&str>, name: &str, version: &str, location: &str| LangPackage {
                ecosystem,
                namespace: namespace.map(str::to_string),
                name: name.to_string(),
                version: version.to_string(),
                location: location.to_string(),
                path_in_archive: None,
                installer: None,
                evidence: crate::Evidence::FileName,
            };
        let report = LangReport {
            packages: vec![
                package(
                    Ecosystem::Maven,
                    Some("org.apache.logging.log4j"),
                    "log4j-core",
                    "2.14.1",
                    "/opt/a.jar",
                ),
                package(
                    Ecosystem::Pypi,
                    None,
                    "torchtriton",
                    "2.0.0",
                    "/usr/lib/python3/torchtriton.dist-info",
                ),
            ],
            jndi_lookup: vec![crate::JndiLookupHit {
                location: "/opt/shaded.jar".to_string(),
                path_in_archive: None,
                class_entry: "shaded/org/apache/logging/log4j/core/lookup/JndiLookup.class".to_string(),
            }],
            stats: crate::WalkStats::default(),
        };
        let mut raised: Vec<String> = evaluate(&report).into_iter().map(|f| f.id).collect();
        raised.sort_unstable();
        let mut listed: Vec<&str> = FINDING_IDS.to_vec();
        listed.sort_unstable();
        assert_eq!(raised, listed);
    }

    #[test]
    fn malicious_list_parses_and_normalizes() {
        let list = parse_malicious_list(PYPI_MALICIOUS_LIST);
        assert!(list.iter().any(|m| m.name == "torchtriton"));
        assert!(list.iter().all(|m| !m.reference.is_empty() && !m.impersonates.is_empty()), "{list:?}");
        assert_eq!(parse_malicious_list("# c\n\nFoo_Bar | foo | ref\n")[0].name, "foo-bar");
    }
}
