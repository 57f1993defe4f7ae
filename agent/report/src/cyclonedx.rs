//! CycloneDX 1.6 JSON SBOM of everything the inventory found: dpkg and rpm packages and the
//! language packages (PyPI, Maven, npm), each with a package URL that vulnerability scanners
//! (grype, trivy, Dependency-Track) match on.
//!
//! purls written:
//! - dpkg: `pkg:deb/<os-release ID>/<name>@<version>?arch=<arch>&distro=<ID>-<VERSION_ID>`
//!   (+ `upstream=<source>[@<source version>]` when the source package differs), the form syft
//!   writes and grype reads the distro from.
//! - rpm: `pkg:rpm/<os-release ID>/<name>@<version>-<release>?arch=..&distro=..&epoch=..`
//!   (+ `upstream=<source rpm>`); `gpg-pubkey` pseudo-packages are keys, not software, and are
//!   left out.
//! - `pkg:pypi/<PEP 503 name>@<version>`, `pkg:maven/<group>/<artifact>@<version>`,
//!   `pkg:npm/<%40scope>/<name>@<version>`.
//!
//! The same purl found in several places (a jar in two applications) is one component with
//! one `evidence.occurrences` entry per place (`path`, or `path!/path/inside/archive`).
//! The operating system is a component of type `operating-system`, which is where scanners
//! look for the distribution.

use guestward_core::{Problem, Timestamp};
use guestward_lang::{Ecosystem, LangPackage, LangReport};
use guestward_packages::dpkg::{DebPackage, DpkgInventory};
use guestward_rpmdb::{RpmInventory, RpmPackage};
use packageurl::PackageUrl;
use std::collections::BTreeMap;

/// The CycloneDX version written.
pub const SPEC_VERSION: &str = "1.6";

/// Why an SBOM could not be written (single bad packages are [`Problem`]s instead).
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// Serializing to JSON failed.
    #[error("writing the SBOM as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The distribution the OS packages came from, from os-release (`ID`, `VERSION_ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    /// `ID` (`debian`, `ubuntu`, `amzn`, `rhel`, `opensuse-leap`...): the purl namespace.
    pub id: String,
    /// `VERSION_ID` (`12`, `2023`, `22.04`); absent on rolling distributions.
    pub version_id: Option<String>,
}

impl Distro {
    /// The `distro` qualifier value: `<id>-<version_id>` (`debian-12`, `amzn-2023`).
    pub fn qualifier(&self) -> String {
        match &self.version_id {
            Some(v) => format!("{}-{v}", self.id),
            None => self.id.clone(),
        }
    }
}

/// Who and what the SBOM describes.
#[derive(Debug, Clone, PartialEq)]
pub struct SbomContext {
    /// The host's name (metadata.component).
    pub host_name: Option<String>,
    /// The distribution; without it dpkg purls use the `debian` namespace and rpm ones `redhat`
    /// and carry no `distro` qualifier.
    pub distro: Option<Distro>,
    /// The agent's version, recorded as the tool that made the SBOM.
    pub tool_version: String,
    /// When the inventory was taken.
    pub timestamp: Timestamp,
}

/// What goes into the SBOM.
#[derive(Debug, Clone, Copy, Default)]
pub struct SbomSources<'a> {
    /// dpkg inventory (installed packages only are listed).
    pub dpkg: Option<&'a DpkgInventory>,
    /// rpm databases read (usually one).
    pub rpm: &'a [RpmInventory],
    /// Language packages.
    pub language: Option<&'a LangReport>,
}

fn purl_err(package: &str, e: packageurl::Error) -> Problem {
    Problem::new("sbom_purl", format!("no package URL for `{package}`: {e}"))
}

/// `pkg:deb/...` for a dpkg package.
pub fn deb_purl(p: &DebPackage, distro: Option<&Distro>) -> Result<String, Problem> {
    let namespace = distro.map_or("debian", |d| d.id.as_str());
    let mut purl = PackageUrl::new("deb", p.name.as_str()).map_err(|e| purl_err(&p.name, e))?;
    purl.with_namespace(namespace)
        .and_then(|u| u.with_version(p.version.full.as_str()))
        .map_err(|e| purl_err(&p.name, e))?;
    if let Some(arch) = &p.architecture {
        purl.add_qualifier("arch", arch.as_str()).map_err(|e| purl_err(&p.name, e))?;
    }
    if let Some(d) = distro {
        purl.add_qualifier("distro", d.qualifier()).map_err(|e| purl_err(&p.name, e))?;
    }
    let upstream = match (p.source_name != p.name, p.source_version != p.version.full) {
        (_, true) => Some(format!("{}@{}", p.source_name, p.source_version)),
        (true, false) => Some(p.source_name.clone()),
        (false, false) => None,
    };
    if let Some(up) = upstream {
        purl.add_qualifier("upstream", up).map_err(|e| purl_err(&p.name, e))?;
    }
    Ok(purl.to_string())
}

/// `pkg:rpm/...` for an rpm package.
pub fn rpm_purl(p: &RpmPackage, distro: Option<&Distro>) -> Result<String, Problem> {
    let namespace = distro.map_or("redhat", |d| d.id.as_str());
    let mut purl = PackageUrl::new("rpm", p.name.as_str()).map_err(|e| purl_err(&p.name, e))?;
    purl.with_namespace(namespace)
        .and_then(|u| u.with_version(format!("{}-{}", p.version, p.release)))
        .map_err(|e| purl_err(&p.name, e))?;
    if let Some(arch) = &p.arch {
        purl.add_qualifier("arch", arch.as_str()).map_err(|e| purl_err(&p.name, e))?;
    }
    if let Some(epoch) = p.epoch {
        purl.add_qualifier("epoch", epoch.to_string()).map_err(|e| purl_err(&p.name, e))?;
    }
    if let Some(d) = distro {
        purl.add_qualifier("distro", d.qualifier()).map_err(|e| purl_err(&p.name, e))?;
    }
    if let Some(src) = &p.source_rpm {
        purl.add_qualifier("upstream", src.as_str()).map_err(|e| purl_err(&p.name, e))?;
    }
    Ok(purl.to_string())
}

/// `pkg:pypi/...`, `pkg:maven/...` or `pkg:npm/...` for a language package.
pub fn lang_purl(p: &LangPackage) -> Result<String, Problem> {
    let mut purl =
        PackageUrl::new(p.ecosystem.as_str(), p.name.as_str()).map_err(|e| purl_err(&p.name, e))?;
    if let Some(ns) = &p.namespace {
        let ns = if p.ecosystem == Ecosystem::Npm { format!("@{ns}") } else { ns.clone() };
        purl.with_namespace(ns).map_err(|e| purl_err(&p.name, e))?;
    }
    if !p.version.is_empty() {
        purl.with_version(p.version.as_str()).map_err(|e| purl_err(&p.name, e))?;
    }
    Ok(purl.to_string())
}

/// The subset of the CycloneDX 1.6 JSON format this module writes, typed with serde: field
/// names, `type` values and nesting follow `tests/fixtures/sbom/bom-1.6.schema.json`, and the
/// tests validate every document shape written here against that official schema. (Typed here
/// instead of a generated crate: serde-cyclonedx's generated types and builders for the whole
/// specification cost binary size for the few objects we write; see docs/benchmarks.md.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bom {
    /// Always `CycloneDX`.
    pub bom_format: &'static str,
    /// [`SPEC_VERSION`].
    pub spec_version: &'static str,
    /// `urn:uuid:<random UUID>`, new for every document.
    pub serial_number: String,
    /// The document's version (1: each SBOM is written once).
    pub version: u32,
    /// When, by what tool, about which host.
    pub metadata: Metadata,
    /// The operating system first (when known), then one component per package URL.
    pub components: Vec<Component>,
    /// The host depends on its operating system (when known).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
}

/// `metadata`: when the inventory was taken, the tool that wrote it, the host it describes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    /// RFC 3339 time of the inventory.
    pub timestamp: String,
    /// The tool that wrote the SBOM (the 1.5+ form: tools as components).
    pub tools: Tools,
    /// The host (type `device`, `bom-ref` `host`).
    pub component: Component,
}

/// `metadata.tools` in its object form (`components`), not the deprecated array of tools.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tools {
    /// The agent, as an `application` component.
    pub components: Vec<Component>,
}

/// The `type` of a component (the values of the schema's `component.type` enum we write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentType {
    /// The agent itself (in `metadata.tools`).
    Application,
    /// The host (`metadata.component`).
    Device,
    /// A package (dpkg, rpm, PyPI, Maven, npm).
    Library,
    /// The distribution, where scanners look for the purl namespace's release.
    OperatingSystem,
}

/// A CycloneDX `component`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Component {
    /// What it is.
    #[serde(rename = "type")]
    pub kind: ComponentType,
    /// The identifier other objects refer to it by (the purl for packages).
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    pub bom_ref: Option<String>,
    /// Maven group id or npm scope (`@scope`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Package, distribution, host or tool name (required by the schema).
    pub name: String,
    /// Version; absent when the package declared none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Package URL, what vulnerability scanners match on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    /// `guestward:*` name/value pairs (source of the package, installer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
    /// Where the package was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

impl Component {
    fn new(kind: ComponentType, name: impl Into<String>) -> Self {
        Component {
            kind,
            bom_ref: None,
            group: None,
            name: name.into(),
            version: None,
            purl: None,
            properties: Vec::new(),
            evidence: None,
        }
    }
}

/// A CycloneDX `property` (a name/value pair).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Property {
    /// `guestward:...`.
    pub name: String,
    /// The value.
    pub value: String,
}

/// `component.evidence`, of which we write the `occurrences`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Evidence {
    /// Every place the component was found (one entry per place).
    pub occurrences: Vec<Occurrence>,
}

/// One `evidence.occurrences` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Occurrence {
    /// A file path, or `path!/path/inside/archive`.
    pub location: String,
}

/// A CycloneDX `dependency`: `ref` depends on each of `dependsOn`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// The `bom-ref` of the dependent.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The `bom-ref`s it depends on.
    pub depends_on: Vec<String>,
}

/// One component being assembled (merged by purl).
struct Pending {
    name: String,
    group: Option<String>,
    version: String,
    source: &'static str,
    occurrences: Vec<String>,
    properties: Vec<(String, String)>,
}

/// Builds the SBOM. Packages whose purl cannot be formed are left out and returned as
/// problems; everything else is in the document.
pub fn build(ctx: &SbomContext, sources: SbomSources<'_>) -> (Bom, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut add = |purl: Result<String, Problem>, entry: Pending, problems: &mut Vec<Problem>| match purl {
        Ok(purl) => match pending.get_mut(&purl) {
            Some(existing) => {
                for o in entry.occurrences {
                    if !existing.occurrences.contains(&o) {
                        existing.occurrences.push(o);
                    }
                }
            }
            None => {
                pending.insert(purl, entry);
            }
        },
        Err(problem) => problems.push(problem),
    };
    let distro = ctx.distro.as_ref();
    if let Some(dpkg) = sources.dpkg {
        for p in &dpkg.installed {
            let entry = Pending {
                name: p.name.clone(),
                group: None,
                version: p.version.full.clone(),
                source: "dpkg",
                occurrences: vec![dpkg.status_file.clone()],
                properties: Vec::new(),
            };
            add(deb_purl(p, distro), entry, &mut problems);
        }
    }
    for db in sources.rpm {
        for p in db.packages.iter().filter(|p| p.name != "gpg-pubkey") {
            let version = match p.epoch {
                Some(e) => format!("{e}:{}-{}", p.version, p.release),
                None => format!("{}-{}", p.version, p.release),
            };
            let entry = Pending {
                name: p.name.clone(),
                group: None,
                version,
                source: "rpm",
                occurrences: vec![db.db_path.clone()],
                properties: Vec::new(),
            };
            add(rpm_purl(p, distro), entry, &mut problems);
        }
    }
    if let Some(lang) = sources.language {
        for p in &lang.packages {
            let location = match &p.path_in_archive {
                Some(inner) => format!("{}!/{inner}", p.location),
                None => p.location.clone(),
            };
            let mut properties = Vec::new();
            if let Some(installer) = &p.installer {
                properties.push(("guestward:installer".to_string(), installer.clone()));
            }
            let group = match (p.ecosystem, &p.namespace) {
                (Ecosystem::Npm, Some(ns)) => Some(format!("@{ns}")),
                (_, ns) => ns.clone(),
            };
            let entry = Pending {
                name: p.name.clone(),
                group,
                version: p.version.clone(),
                source: p.ecosystem.as_str(),
                occurrences: vec![location],
                properties,
            };
            add(lang_purl(p), entry, &mut problems);
        }
    }

    let mut components = Vec::with_capacity(pending.len() + 1);
    let mut dependencies = Vec::new();
    if let Some(d) = distro {
        let bom_ref = format!("os:{}", d.qualifier());
        let mut os = Component::new(ComponentType::OperatingSystem, d.id.as_str());
        os.bom_ref = Some(bom_ref.clone());
        os.version = d.version_id.clone();
        components.push(os);
        dependencies.push(Dependency { reference: "host".to_string(), depends_on: vec![bom_ref] });
    }
    for (purl, p) in pending {
        let mut properties =
            vec![Property { name: "guestward:package:source".to_string(), value: p.source.to_string() }];
        properties.extend(p.properties.into_iter().map(|(name, value)| Property { name, value }));
        let mut c = Component::new(ComponentType::Library, p.name);
        c.bom_ref = Some(purl.clone());
        c.purl = Some(purl);
        c.group = p.group;
        // The schema allows a component without a version; an empty one says nothing.
        c.version = Some(p.version).filter(|v| !v.is_empty());
        c.properties = properties;
        c.evidence = Some(Evidence {
            occurrences: p.occurrences.into_iter().map(|location| Occurrence { location }).collect(),
        });
        components.push(c);
    }

    let mut tool = Component::new(ComponentType::Application, "guestward-agent");
    tool.version = Some(ctx.tool_version.clone());
    let mut host = Component::new(
        ComponentType::Device,
        ctx.host_name.clone().unwrap_or_else(|| "unknown-host".to_string()),
    );
    host.bom_ref = Some("host".to_string());
    let bom = Bom {
        bom_format: "CycloneDX",
        spec_version: SPEC_VERSION,
        serial_number: format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        version: 1,
        metadata: Metadata {
            timestamp: ctx.timestamp.to_string(),
            tools: Tools { components: vec![tool] },
            component: host,
        },
        components,
        dependencies,
    };
    (bom, problems)
}

/// The SBOM as pretty-printed JSON.
pub fn to_json(bom: &Bom) -> Result<String, SbomError> {
    Ok(serde_json::to_string_pretty(bom)?)
}

/// The report's software inventory as a CycloneDX 1.6 JSON SBOM, with the packages left out
/// of it (and why). The distribution (purl
/// namespace and `distro` qualifier) and host name come from the host section when it ran.
pub fn report_to_json(report: &crate::Report) -> Result<(String, Vec<Problem>), SbomError> {
    let facts = report.host.as_ref().and_then(|s| s.data.as_ref());
    let context = SbomContext {
        host_name: facts.and_then(|f| f.hostname.clone()).or_else(|| report.agent.host_id.clone()),
        distro: facts
            .and_then(|f| f.os.as_ref())
            .map(|os| Distro { id: os.id.clone(), version_id: os.version_id.clone() }),
        tool_version: report.agent.version.clone(),
        timestamp: report.collected_at,
    };
    let data = report.packages.as_ref().and_then(|s| s.data.as_ref());
    let sources = SbomSources {
        dpkg: data.and_then(|d| d.dpkg.as_ref()),
        rpm: data.and_then(|d| d.rpm.as_ref()).map(std::slice::from_ref).unwrap_or_default(),
        language: data.and_then(|d| d.language.as_ref()),
    };
    let (bom, problems) = build(&context, sources);
    Ok((to_json(&bom)?, problems))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use guestward_lang::Evidence;
    use guestward_packages::dpkg::{DebVersion, DpkgStatus};
    use guestward_rpmdb::{Backend, HeaderDigests};

    fn deb(name: &str, version: &str, arch: &str, source: Option<(&str, &str)>) -> DebPackage {
        let (source_name, source_version) = source.unwrap_or((name, version));
        DebPackage {
            name: name.to_string(),
            version: DebVersion::parse(version).unwrap(),
            architecture: Some(arch.to_string()),
            source_name: source_name.to_string(),
            source_version: source_version.to_string(),
            status: DpkgStatus { want: "install".into(), flag: "ok".into(), state: "installed".into() },
            installed_size_kib: None,
            maintainer: None,
            multi_arch: None,
        }
    }

    fn rpm(name: &str, epoch: Option<u32>, version: &str, release: &str, arch: Option<&str>) -> RpmPackage {
        RpmPackage {
            record: 1,
            name: name.to_string(),
            epoch,
            version: version.to_string(),
            release: release.to_string(),
            arch: arch.map(str::to_string),
            source_rpm: arch.map(|_| format!("{name}-{version}-{release}.src.rpm")),
            size_bytes: None,
            vendor: None,
            license: None,
            install_time: None,
            digests: HeaderDigests::default(),
        }
    }

    fn lang(
        ecosystem: Ecosystem,
        ns: Option<&str>,
        name: &str,
        version: &str,
        location: &str,
        inner: Option<&str>,
    ) -> LangPackage {
        LangPackage {
            ecosystem,
            namespace: ns.map(str::to_string),
            name: name.to_string(),
            version: version.to_string(),
            location: location.to_string(),
            path_in_archive: inner.map(str::to_string),
            installer: None,
            evidence: Evidence::PomProperties,
        }
    }

    fn debian() -> Distro {
        Distro { id: "debian".into(), version_id: Some("12".into()) }
    }

    #[test]
    fn deb_purls() {
        let d = debian();
        assert_eq!(
            deb_purl(&deb("curl", "7.88.1-10+deb12u5", "amd64", None), Some(&d)).unwrap(),
            "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            deb_purl(&deb("libc6", "2.36-9+deb12u4", "amd64", Some(("glibc", "2.36-9+deb12u4"))), Some(&d))
                .unwrap(),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc"
        );
        assert_eq!(
            deb_purl(&deb("passwd", "1:4.13+dfsg1-1", "amd64", Some(("shadow", "1:4.13+dfsg1-1"))), None)
                .unwrap(),
            "pkg:deb/debian/passwd@1:4.13%2Bdfsg1-1?arch=amd64&upstream=shadow"
        );
    }

    #[test]
    fn rpm_purls() {
        let d = Distro { id: "amzn".into(), version_id: Some("2023".into()) };
        assert_eq!(
            rpm_purl(&rpm("bash", None, "5.2.15", "1.amzn2023.0.2", Some("x86_64")), Some(&d)).unwrap(),
            "pkg:rpm/amzn/bash@5.2.15-1.amzn2023.0.2?arch=x86_64&distro=amzn-2023&upstream=bash-5.2.15-1.amzn2023.0.2.src.rpm"
        );
        assert_eq!(
            rpm_purl(&rpm("openssl-libs", Some(1), "3.0.8", "1.amzn2023.0.14", Some("x86_64")), Some(&d))
                .unwrap(),
            "pkg:rpm/amzn/openssl-libs@3.0.8-1.amzn2023.0.14?arch=x86_64&distro=amzn-2023&epoch=1&upstream=openssl-libs-3.0.8-1.amzn2023.0.14.src.rpm"
        );
    }

    #[test]
    fn language_purls() {
        let log4j = lang(
            Ecosystem::Maven,
            Some("org.apache.logging.log4j"),
            "log4j-core",
            "2.14.1",
            "/opt/a.jar",
            None,
        );
        assert_eq!(lang_purl(&log4j).unwrap(), "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1");
        let scoped = lang(Ecosystem::Npm, Some("aws-sdk"), "client-s3", "3.450.0", "/x", None);
        assert_eq!(lang_purl(&scoped).unwrap(), "pkg:npm/%40aws-sdk/client-s3@3.450.0");
        let py = lang(Ecosystem::Pypi, None, "zope-interface", "6.0", "/x", None);
        assert_eq!(lang_purl(&py).unwrap(), "pkg:pypi/zope-interface@6.0");
        let unversioned = lang(Ecosystem::Maven, None, "app", "", "/x", None);
        assert_eq!(lang_purl(&unversioned).unwrap(), "pkg:maven/app");
        assert_eq!(
            lang_purl(&lang(Ecosystem::Npm, None, "", "1", "/x", None)).unwrap_err().code,
            "sbom_purl"
        );
    }

    fn sample() -> (SbomContext, DpkgInventory, Vec<RpmInventory>, LangReport) {
        let ctx = SbomContext {
            host_name: Some("ip-10-0-0-1".into()),
            distro: Some(debian()),
            tool_version: "0.1.0".into(),
            timestamp: Timestamp::from_unix_secs(1_800_000_000).unwrap(),
        };
        let dpkg = DpkgInventory {
            status_file: "/var/lib/dpkg/status".into(),
            installed: vec![
                deb("curl", "7.88.1-10+deb12u5", "amd64", None),
                deb("libc6", "2.36-9+deb12u4", "amd64", Some(("glibc", "2.36-9+deb12u4"))),
            ],
            not_fully_installed: vec![],
        };
        let rpm_db = RpmInventory {
            db_path: "/var/lib/rpm/rpmdb.sqlite".into(),
            backend: Backend::Sqlite,
            packages: vec![
                rpm("bash", None, "5.2.15", "1.amzn2023.0.2", Some("x86_64")),
                rpm("gpg-pubkey", None, "d832c631", "5e1f3f1a", None),
            ],
            corrupt: vec![],
            problems: vec![],
        };
        let lang = LangReport {
            packages: vec![
                lang(
                    Ecosystem::Maven,
                    Some("org.apache.logging.log4j"),
                    "log4j-core",
                    "2.14.1",
                    "/opt/a.jar",
                    Some("BOOT-INF/lib/log4j-core-2.14.1.jar"),
                ),
                lang(
                    Ecosystem::Maven,
                    Some("org.apache.logging.log4j"),
                    "log4j-core",
                    "2.14.1",
                    "/opt/b.war",
                    Some("WEB-INF/lib/log4j-core-2.14.1.jar"),
                ),
                lang(
                    Ecosystem::Pypi,
                    None,
                    "requests",
                    "2.31.0",
                    "/usr/lib/python3/dist-packages/requests-2.31.0.dist-info",
                    None,
                ),
                lang(
                    Ecosystem::Npm,
                    Some("types"),
                    "node",
                    "20.1.0",
                    "/srv/app/node_modules/@types/node",
                    None,
                ),
            ],
            ..Default::default()
        };
        (ctx, dpkg, vec![rpm_db], lang)
    }

    fn validator() -> jsonschema::Validator {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sbom");
        let load = |name: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(format!("{dir}/{name}")).unwrap()).unwrap()
        };
        let bom_schema = load("bom-1.6.schema.json");
        let registry = jsonschema::Registry::new()
            .add("http://cyclonedx.org/schema/spdx.schema.json", load("spdx.schema.json"))
            .unwrap()
            .add("http://cyclonedx.org/schema/jsf-0.82.schema.json", load("jsf-0.82.schema.json"))
            .unwrap()
            .prepare()
            .unwrap();
        jsonschema::options()
            .with_registry(&registry)
            .should_validate_formats(true)
            .build(&bom_schema)
            .unwrap()
    }

    #[test]
    fn sbom_validates_against_the_cyclonedx_1_6_schema() {
        let (ctx, dpkg, rpm_dbs, lang) = sample();
        let sources = SbomSources { dpkg: Some(&dpkg), rpm: &rpm_dbs, language: Some(&lang) };
        let (bom, problems) = build(&ctx, sources);
        assert!(problems.is_empty(), "{problems:?}");
        let json: serde_json::Value = serde_json::from_str(&to_json(&bom).unwrap()).unwrap();
        let validator = validator();
        let errors: Vec<String> =
            validator.iter_errors(&json).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{errors:#?}");

        assert_eq!(json["specVersion"], "1.6");
        let components = json["components"].as_array().unwrap();
        let purls: Vec<&str> = components.iter().filter_map(|c| c["purl"].as_str()).collect();
        assert_eq!(
            purls,
            vec![
                "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64&distro=debian-12",
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc",
                "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
                "pkg:npm/%40types/node@20.1.0",
                "pkg:pypi/requests@2.31.0",
                "pkg:rpm/debian/bash@5.2.15-1.amzn2023.0.2?arch=x86_64&distro=debian-12&upstream=bash-5.2.15-1.amzn2023.0.2.src.rpm",
            ]
        );
        // The same jar in two applications is one component found in two places.
        let log4j = components.iter().find(|c| c["name"] == "log4j-core").unwrap();
        assert_eq!(log4j["group"], "org.apache.logging.log4j");
        let places: Vec<&str> = log4j["evidence"]["occurrences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["location"].as_str().unwrap())
            .collect();
        assert_eq!(
            places,
            vec![
                "/opt/a.jar!/BOOT-INF/lib/log4j-core-2.14.1.jar",
                "/opt/b.war!/WEB-INF/lib/log4j-core-2.14.1.jar"
            ]
        );
        let os = &components[0];
        assert_eq!(
            (os["type"].as_str(), os["name"].as_str(), os["version"].as_str()),
            (Some("operating-system"), Some("debian"), Some("12"))
        );
        assert_eq!(json["metadata"]["component"]["name"], "ip-10-0-0-1");
        assert_eq!(json["metadata"]["timestamp"], "2027-01-15T08:00:00Z");
    }

    #[test]
    fn schema_validation_rejects_a_broken_document() {
        // The validator must not accept anything: a component without a name is invalid.
        let broken = serde_json::json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.6",
            "components": [{ "type": "library", "version": "1" }]
        });
        assert!(!validator().is_valid(&broken));
    }

    #[test]
    fn without_a_distro_purls_fall_back_and_no_os_component_is_written() {
        let (mut ctx, dpkg, _, _) = sample();
        ctx.distro = None;
        let (bom, _) = build(&ctx, SbomSources { dpkg: Some(&dpkg), ..Default::default() });
        let json = serde_json::to_value(&bom).unwrap();
        assert!(validator().is_valid(&json));
        assert_eq!(json["components"][0]["purl"], "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64");
        assert!(json.get("dependencies").is_none());
    }
}
