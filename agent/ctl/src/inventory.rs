//! `agentctl inventory [NAME]`: the packages of the latest full report as one table (dpkg,
//! rpm and language packages together), filtered by name.

use guestward_packages::PackagesReport;
use serde::Serialize;
use std::io::Write;

/// One installed package, whatever its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Package name (Maven: `groupId:artifactId`; npm: `@scope/name`).
    pub name: String,
    /// Version as the package manager writes it (rpm: `[epoch:]version-release`).
    pub version: String,
    /// `dpkg`, `rpm`, `pypi`, `maven` or `npm`.
    pub source: String,
    /// Architecture (`amd64`, `x86_64`, `noarch`...); absent for language packages.
    pub arch: Option<String>,
    /// Where a language package was found (its metadata directory or archive); absent for
    /// dpkg and rpm.
    pub location: Option<String>,
}

/// Every installed package in `report`, sorted by name then source, whose name contains
/// `filter` (case-insensitive; `None`: all).
pub fn rows(report: &PackagesReport, filter: Option<&str>) -> Vec<Row> {
    let needle = filter.map(str::to_lowercase);
    let mut rows = Vec::new();
    if let Some(d) = &report.dpkg {
        rows.extend(d.installed.iter().map(|p| Row {
            name: p.name.clone(),
            version: p.version.full.clone(),
            source: "dpkg".into(),
            arch: p.architecture.clone(),
            location: None,
        }));
    }
    if let Some(r) = &report.rpm {
        rows.extend(r.packages.iter().map(|p| Row {
            name: p.name.clone(),
            version: p.evr(),
            source: "rpm".into(),
            arch: p.arch.clone(),
            location: None,
        }));
    }
    if let Some(l) = &report.language {
        rows.extend(l.packages.iter().map(|p| {
            let name = match (&p.namespace, p.ecosystem) {
                (Some(ns), guestward_lang::Ecosystem::Npm) => format!("@{ns}/{}", p.name),
                (Some(ns), _) => format!("{ns}:{}", p.name),
                (None, _) => p.name.clone(),
            };
            let location = match &p.path_in_archive {
                Some(inner) => format!("{}!/{inner}", p.location),
                None => p.location.clone(),
            };
            Row {
                name,
                version: p.version.clone(),
                source: p.ecosystem.as_str().to_string(),
                arch: None,
                location: Some(location),
            }
        }));
    }
    if let Some(needle) = &needle {
        rows.retain(|r| r.name.to_lowercase().contains(needle.as_str()));
    }
    rows.sort_by(|a, b| (&a.name, &a.source, &a.version).cmp(&(&b.name, &b.source, &b.version)));
    rows
}

/// The table: NAME, VERSION, SOURCE, ARCH, then the location of language packages. Names and
/// versions come from scanned files, so the table goes through the terminal-escaping writer.
pub fn render(rows: &[Row], out: &mut dyn Write) -> std::io::Result<()> {
    let mut out = guestward_core::text::TerminalSafe::new(out);
    // Columns as wide as their widest value, within reason: a 200-character jar name must not
    // push every other row off the screen.
    let width = |f: &dyn Fn(&Row) -> usize, header: &str, cap: usize| {
        rows.iter().map(f).max().unwrap_or(0).max(header.len()).min(cap)
    };
    let name_w = width(&|r| r.name.chars().count(), "NAME", 40);
    let version_w = width(&|r| r.version.chars().count(), "VERSION", 32);
    let source_w = width(&|r| r.source.len(), "SOURCE", 6);
    let arch_w = width(&|r| r.arch.as_deref().map_or(1, |a| a.chars().count()), "ARCH", 10);
    writeln!(
        out,
        "{:<name_w$} {:<version_w$} {:<source_w$} {:<arch_w$} LOCATION",
        "NAME", "VERSION", "SOURCE", "ARCH"
    )?;
    for r in rows {
        let line = format!(
            "{:<name_w$} {:<version_w$} {:<source_w$} {:<arch_w$} {}",
            crate::status::cut(&r.name, name_w),
            crate::status::cut(&r.version, version_w),
            r.source,
            crate::status::cut(r.arch.as_deref().unwrap_or("-"), arch_w),
            r.location.as_deref().unwrap_or(""),
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn deb(name: &str, version: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name, "version": {"full": version, "epoch": null, "upstream": version, "revision": null},
            "architecture": "amd64", "source_name": name, "source_version": version,
            "status": {"want": "install", "flag": "ok", "state": "installed"}
        })
    }

    fn report() -> PackagesReport {
        let dpkg = serde_json::from_value(serde_json::json!({
            "status_file": "/var/lib/dpkg/status",
            "installed": [deb("openssl", "3.0.15-1~deb12u1"), deb("libssl3", "3.0.15-1~deb12u1"), deb("bash", "5.2.15-2+b7")],
            "not_fully_installed": []
        }))
        .unwrap();
        let language = guestward_lang::LangReport {
            packages: vec![guestward_lang::LangPackage {
                ecosystem: guestward_lang::Ecosystem::Pypi,
                namespace: None,
                name: "pyopenssl".into(),
                version: "24.2.1".into(),
                location: "/usr/lib/python3/dist-packages/pyOpenSSL-24.2.1.dist-info".into(),
                path_in_archive: None,
                installer: None,
                evidence: guestward_lang::Evidence::DistInfoMetadata,
            }],
            ..Default::default()
        };
        PackagesReport { dpkg: Some(dpkg), rpm: None, language: Some(language) }
    }

    #[test]
    fn filters_by_name_case_insensitively_across_sources_and_sorts() {
        let report = report();
        let found = rows(&report, Some("OpenSSL"));
        let names: Vec<(&str, &str)> = found.iter().map(|r| (r.name.as_str(), r.source.as_str())).collect();
        assert_eq!(names, [("openssl", "dpkg"), ("pyopenssl", "pypi")]);
        assert_eq!(rows(&report, None).len(), 4);
        assert!(rows(&report, Some("nothing-like-it")).is_empty());

        let mut out = Vec::new();
        render(&found, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME      VERSION          SOURCE ARCH  LOCATION");
        assert_eq!(lines[1], "openssl   3.0.15-1~deb12u1 dpkg   amd64");
        assert_eq!(
            lines[2],
            "pyopenssl 24.2.1           pypi   -     /usr/lib/python3/dist-packages/pyOpenSSL-24.2.1.dist-info"
        );
    }
}
