//! The operator's side of the collector API: `guestward-collector hosts`, `host ID`,
//! `findings` and `packages NAME` ask a running collector, over mutual TLS with an operator
//! certificate, what `GET /v1/hosts`, `GET /v1/hosts/{id}`, `GET /v1/findings` and
//! `GET /v1/packages` answer, and print it for a person (tables, agent-sent text escaped) or
//! as JSON.
//!
//! The same rules as the agent's shipper: the collector's certificate is verified against the
//! CA given (never the system's roots: the fleet's CA is private), HTTPS only, no redirects
//! (a redirect would present the operator's certificate elsewhere), every answer bounded in
//! size and time.

use crate::store::{ListenerQuery, PackageQuery};
use crate::tls::{self, TlsError};
use guestward_core::text::{TerminalSafe, escape_control, write_columns};
use guestward_core::{FindingFilter, Severity, Timestamp, human};
use guestward_report::ingest::{
    CertificateInfo, ErrorBody, FINDINGS_PATH, FleetFindings, FleetListeners, FleetPackages, HostDetail,
    HostList, HostSummary, LISTENERS_PATH, PACKAGES_PATH, PackageKey, ServiceKey,
};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// The most bytes of one answer read: a host's latest report may be as large as the collector's
/// `max_decompressed_bytes` lets it be (64 MiB by default), and its events come with it.
pub const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// How long a connection (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the collector is and who asks it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The collector's base URL (`https://collector.example:8443`).
    pub url: String,
    /// The CA that issued the collector's server certificate (PEM).
    pub ca: PathBuf,
    /// The operator's certificate (PEM).
    pub cert: PathBuf,
    /// The operator's private key (PEM, mode 0600).
    pub key: PathBuf,
    /// How long one request may take, answer included.
    pub timeout: Duration,
}

/// Why an operator's question got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The URL is not an `https://` address.
    #[error("`{url}` is not a collector URL: {reason}")]
    Url {
        /// As given (truncated).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA, certificate or key file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTPS client: {0}")]
    Client(String),
    /// No answer: the connection, the TLS handshake or the time limit failed.
    #[error("GET {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why, with a hint where one helps.
        reason: String,
    },
    /// The collector answered with an error.
    #[error("GET {url}: the collector answered {status} ({code}): {message}")]
    Refused {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error code of its `ErrorBody` (`forbidden`, `not_found`...).
        code: String,
        /// Its message.
        message: String,
    },
    /// An answer that is too large or not what the protocol says.
    #[error("GET {url}: the answer is unusable: {reason}")]
    Answer {
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A client of one collector, with one operator identity.
#[derive(Debug)]
pub struct OperatorClient {
    client: reqwest::Client,
    base: reqwest::Url,
}

impl OperatorClient {
    /// Reads the CA, certificate and key, and sets up the client. Nothing is sent yet.
    pub fn new(connection: &Connection) -> Result<Self, OperatorError> {
        let url_error = |reason: &str| OperatorError::Url {
            url: guestward_core::text::truncate_chars(&connection.url, 200).into_owned(),
            reason: reason.to_string(),
        };
        let base = reqwest::Url::parse(&connection.url).map_err(|e| url_error(&e.to_string()))?;
        if base.scheme() != "https" {
            return Err(url_error("the collector speaks HTTPS only (https://HOST:PORT)"));
        }
        if base.query().is_some() || base.fragment().is_some() || !base.username().is_empty() {
            return Err(url_error("give the collector's address only, without a query, fragment or user"));
        }
        let config = tls::operator_client_config(&connection.ca, &connection.cert, &connection.key)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT.min(connection.timeout))
            .timeout(connection.timeout)
            .user_agent(concat!("guestward-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OperatorError::Client(error_chain(&e)))?;
        Ok(Self { client, base })
    }

    /// `GET /v1/hosts`.
    pub async fn hosts(&self) -> Result<HostList, OperatorError> {
        self.get(self.endpoint(&["v1", "hosts"], &[])).await
    }

    /// `GET /v1/hosts/{host_id}`.
    pub async fn host(&self, host_id: &str) -> Result<HostDetail, OperatorError> {
        self.get(self.endpoint(&["v1", "hosts", host_id], &[])).await
    }

    /// `GET /v1/findings` with `query`.
    pub async fn findings(&self, query: &FindingFilter) -> Result<FleetFindings, OperatorError> {
        let severity = query.min_severity.map(|s| s.to_string());
        let mut pairs: Vec<(&str, &str)> = query.ids.iter().map(|id| ("id", id.as_str())).collect();
        if let Some(s) = &severity {
            pairs.push(("min_severity", s));
        }
        let path: Vec<&str> = FINDINGS_PATH.trim_start_matches('/').split('/').collect();
        self.get(self.endpoint(&path, &pairs)).await
    }

    /// `GET /v1/packages` with `query`.
    pub async fn packages(&self, query: &PackageQuery) -> Result<FleetPackages, OperatorError> {
        let mut pairs: Vec<(&str, &str)> = vec![("name", query.name.as_str())];
        pairs.extend(query.versions.iter().map(|v| ("version", v.as_str())));
        if let Some(below) = &query.below {
            pairs.push(("below", below));
        }
        if let Some(source) = query.source {
            pairs.push(("source", source.as_str()));
        }
        let path: Vec<&str> = PACKAGES_PATH.trim_start_matches('/').split('/').collect();
        self.get(self.endpoint(&path, &pairs)).await
    }

    /// `GET /v1/listeners` with `query`.
    pub async fn listeners(&self, query: &ListenerQuery) -> Result<FleetListeners, OperatorError> {
        let ports: Vec<String> = query.ports.iter().map(u16::to_string).collect();
        let protocol = query.protocol.map(|p| p.to_string());
        let scopes: Vec<String> = query.scopes.iter().map(|s| s.to_string()).collect();
        let mut pairs: Vec<(&str, &str)> = ports.iter().map(|p| ("port", p.as_str())).collect();
        pairs.extend(protocol.as_deref().map(|p| ("protocol", p)));
        pairs.extend(scopes.iter().map(|s| ("scope", s.as_str())));
        pairs.extend(query.process.as_deref().map(|p| ("process", p)));
        if query.public_only {
            pairs.push(("public", "true"));
        }
        let path: Vec<&str> = LISTENERS_PATH.trim_start_matches('/').split('/').collect();
        self.get(self.endpoint(&path, &pairs)).await
    }

    /// The base URL with `segments` appended (each percent-encoded as one segment: a host id
    /// cannot reach another path) and the query `pairs`.
    fn endpoint(&self, segments: &[&str], pairs: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        url
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: reqwest::Url) -> Result<T, OperatorError> {
        let shown = url.to_string();
        let response =
            self.client.get(url).send().await.map_err(|e| OperatorError::Unreachable {
                url: shown.clone(),
                reason: unreachable_reason(&e),
            })?;
        let status = response.status();
        let body = read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|reason| OperatorError::Answer { url: shown.clone(), reason })?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => (e.error, e.message),
                Err(_) => ("no error body".to_string(), snippet(&body)),
            };
            return Err(OperatorError::Refused { url: shown, status: status.as_u16(), code, message });
        }
        serde_json::from_slice(&body).map_err(|e| OperatorError::Answer {
            url: shown,
            reason: format!("not the protocol's JSON ({e}): is this a guestward collector of this version?"),
        })
    }
}

/// Why a request got no answer: the causes under reqwest's own message (which repeats the URL
/// the error already names), with a hint for the failures an operator can fix.
fn unreachable_reason(e: &reqwest::Error) -> String {
    let text = match std::error::Error::source(e) {
        Some(cause) => error_chain(cause),
        None => e.to_string(),
    };
    let hint = if e.is_timeout() {
        " (no answer in time: is the collector up, and the address right? --timeout waits longer)"
    } else if text.contains("UnknownIssuer") {
        " (the collector's certificate was not issued by the CA given: --ca must be the collector's CA)"
    } else if text.contains("NotValidForName") {
        " (the collector's certificate does not name this host: use a name it was issued for, or reissue it with `pki issue-server`)"
    } else if text.contains("alert") {
        " (the collector refused this certificate: is it an operator certificate from the collector's CA, and not expired?)"
    } else if e.is_connect() {
        " (is the collector running and listening there? --url, or GUESTWARD_COLLECTOR_URL, names it)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// An error and its causes on one line, each message once.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    guestward_core::text::error_chain(std::iter::successors(Some(e), |e| e.source()))
}

/// Reads an answer body, at most `cap` bytes.
async fn read_capped(mut response: reqwest::Response, cap: u64) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > cap) {
        return Err(format!("larger than {} (the most this command reads)", human::bytes(cap)));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX) > cap {
                    return Err(format!("larger than {} (the most this command reads)", human::bytes(cap)));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("reading it: {}", error_chain(&e))),
        }
    }
}

/// At most 200 characters of a body that is not an `ErrorBody`, control characters escaped.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    if text.trim().is_empty() { "no message".to_string() } else { escape_control(text.trim()).into_owned() }
}

/// `hosts --silent-for`: the hosts listed are those silent longer than `secs`, of `of`.
#[derive(Debug, Clone, Copy)]
pub struct Silent {
    /// The age given.
    pub secs: u64,
    /// How many hosts the collector listed before the filter.
    pub of: usize,
}

/// `GET /v1/hosts` as a table: each host's last delivery, what it stored, its certificate.
pub fn render_hosts(
    list: &HostList,
    silent: Option<Silent>,
    now: Timestamp,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let out: &mut dyn Write = &mut TerminalSafe::new(out);
    let age = |secs: u64| human::duration(i64::try_from(secs).unwrap_or(i64::MAX));
    match silent {
        Some(s) if list.hosts.is_empty() => {
            return match s.of {
                0 => writeln!(out, "no host has reported to this collector yet"),
                1 => writeln!(out, "the one host has not been silent for more than {}", age(s.secs)),
                n => writeln!(out, "none of the {n} hosts has been silent for more than {}", age(s.secs)),
            };
        }
        None if list.hosts.is_empty() => return writeln!(out, "no host has reported to this collector yet"),
        _ => {}
    }
    let rows: Vec<[String; 7]> = list
        .hosts
        .iter()
        .map(|h| {
            [
                h.host_id.clone(),
                format!("{} ago", age(h.secs_since_last_seen)),
                h.reports_stored.to_string(),
                h.missing_sequences.to_string(),
                h.agent_version.clone(),
                human::bytes(h.stored_bytes),
                certificate_expiry(h, now),
            ]
        })
        .collect();
    write_columns(
        out,
        ["HOST", "LAST SEEN", "REPORTS", "MISSING", "AGENT", "STORED", "CERTIFICATE EXPIRES"],
        &rows,
    )?;
    let missing: u64 = list.hosts.iter().map(|h| h.missing_sequences).sum();
    let hosts = match silent {
        Some(s) => format!("{} of {} silent for more than {}", list.hosts.len(), s.of, age(s.secs)),
        None => guestward_core::text::counted(list.hosts.len() as u64, "host", "hosts"),
    };
    let mut footer = vec![hosts];
    if missing > 0 {
        footer.push(format!(
            "{} never received (MISSING: lost or dropped by an agent's full spool)",
            guestward_core::text::counted(missing, "report", "reports")
        ));
    }
    // An agent whose certificate has expired cannot deliver, so it cannot say so itself
    // (GW-TLS-001 warns from the agent while it still can): the collector's record is where
    // the operator sees it.
    let left = |h: &HostSummary| h.client_certificate.as_ref().map(|c| secs_left(c, now));
    let expired = list.hosts.iter().filter(|h| left(h).is_some_and(|s| s <= 0)).count();
    let expiring =
        list.hosts.iter().filter(|h| left(h).is_some_and(|s| s > 0 && s < EXPIRY_SOON_SECS)).count();
    if expired > 0 {
        footer.push(format!(
            "{} EXPIRED (its agent cannot deliver until it has a new one)",
            guestward_core::text::counted(expired as u64, "client certificate", "client certificates")
        ));
    }
    if expiring > 0 {
        footer.push(format!(
            "{} within 7 days",
            guestward_core::text::counted(
                expiring as u64,
                "client certificate expires",
                "client certificates expire"
            )
        ));
    }
    writeln!(out, "\n{}", footer.join("; "))
}

/// A client certificate this close to its end is called out below the hosts table: the
/// agent's own warning (GW-TLS-001) starts at the same 7 days.
const EXPIRY_SOON_SECS: i64 = 7 * 86_400;

/// Seconds from `now` to the end of `cert` (0 or less once it has ended).
fn secs_left(cert: &CertificateInfo, now: Timestamp) -> i64 {
    cert.not_after.unix_secs().saturating_sub(now.unix_secs())
}

/// `2027-12-07 (in 364d)`, `2026-12-08 (in 20h 5m)`, `2026-12-01 (EXPIRED 6d ago)`, or `-`
/// before any certificate. Whole days once a day or more is left: hours beside a year are noise.
fn certificate_expiry(host: &HostSummary, now: Timestamp) -> String {
    let Some(cert) = &host.client_certificate else {
        return "-".to_string();
    };
    let date = cert.not_after.human().to_string();
    let date = date.get(..10).unwrap_or(&date).to_string();
    let left = secs_left(cert, now);
    const DAY: i64 = 86_400;
    match left {
        ..=0 => format!("{date} (EXPIRED {} ago)", human::duration(-left)),
        1..DAY => format!("{date} (in {})", human::duration(left)),
        _ => format!("{date} (in {}d)", left / DAY),
    }
}

/// How many of a host's recent events are shown; `--json` has them all.
const RECENT_EVENTS_SHOWN: usize = 20;

/// `GET /v1/hosts/{id}`: the delivery record, then the latest report as `guestward-agent scan`
/// prints it, then the host's recent events (across its reports; the latest report's own
/// events are among them, so they are shown there only).
pub fn render_host(mut detail: HostDetail, now: Timestamp, out: &mut dyn Write) -> std::io::Result<()> {
    let s = &detail.summary;
    {
        let out: &mut dyn Write = &mut TerminalSafe::new(&mut *out);
        writeln!(out, "host                {}", s.host_id)?;
        writeln!(
            out,
            "last seen           {} ({} ago)",
            s.last_seen.human(),
            human::duration(i64::try_from(s.secs_since_last_seen).unwrap_or(i64::MAX))
        )?;
        writeln!(
            out,
            "reports             {} stored, last sequence {}, {} missing",
            s.reports_stored,
            s.last_sequence.map_or("-".to_string(), |n| n.to_string()),
            s.missing_sequences
        )?;
        writeln!(out, "agent               {}", s.agent_version)?;
        writeln!(out, "stored              {}", human::bytes(s.stored_bytes))?;
        match &s.client_certificate {
            Some(cert) => writeln!(
                out,
                "client certificate  serial {}, expires {}",
                cert.serial,
                certificate_expiry(s, now)
            )?,
            None => writeln!(out, "client certificate  -")?,
        }
        writeln!(out)?;
    }
    match detail.latest_report.as_mut() {
        Some(report) => {
            report.events.clear();
            guestward_report::render::render_human(report, out)?;
        }
        None => writeln!(out, "no report stored")?,
    }
    let out: &mut dyn Write = &mut TerminalSafe::new(out);
    let events = &detail.recent_events;
    writeln!(out, "\nrecent events ({}, newest last):", events.len())?;
    let skip = events.len().saturating_sub(RECENT_EVENTS_SHOWN);
    if skip > 0 {
        writeln!(out, "  ... {skip} earlier (see --json)")?;
    }
    for e in events.iter().skip(skip) {
        writeln!(out, "  {}", guestward_report::render::event_line(e))?;
    }
    if detail.recent_events_omitted > 0 {
        writeln!(
            out,
            "  ({} more left out by the answer's 1 MiB bound on events)",
            detail.recent_events_omitted
        )?;
    }
    Ok(())
}

/// How `findings` shows the fleet's findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingsView {
    /// One row per finding of a host, most severe first (then by host), its place last.
    PerHost,
    /// One row per finding id (`--summary`), most severe and most widespread first: its
    /// highest severity, how many hosts have it, and the title one of them gave (titles name
    /// the host's own path or package, so they differ).
    PerId,
}

/// `GET /v1/findings` as a table (see [`FindingsView`]), the counts below, and how many the
/// answer's bounds left out.
pub fn render_findings(
    answer: &FleetFindings,
    view: FindingsView,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    use std::collections::BTreeSet;
    let out: &mut dyn Write = &mut TerminalSafe::new(out);
    let searched = guestward_core::text::counted(answer.hosts_searched, "host", "hosts");
    if answer.findings.is_empty() && answer.omitted == 0 {
        return writeln!(out, "no finding matches ({searched} searched)");
    }
    let listed = match view {
        FindingsView::PerHost => per_host_table(answer, out)?,
        FindingsView::PerId => per_id_table(answer, out)?,
    };
    let hosts: BTreeSet<&str> = answer.findings.iter().map(|f| f.host_id.as_str()).collect();
    writeln!(
        out,
        "\n{listed} on {}; {searched} searched",
        guestward_core::text::counted(hosts.len() as u64, "host", "hosts"),
    )?;
    if answer.omitted > 0 {
        writeln!(
            out,
            "{} more matching left out{}: an answer holds at most {} findings and {} of them; narrow the query (--id, --min-severity)",
            answer.omitted,
            if view == FindingsView::PerId { " (and not counted above)" } else { "" },
            guestward_report::ingest::MAX_FLEET_FINDINGS,
            human::bytes(guestward_report::ingest::MAX_FLEET_FINDINGS_BYTES)
        )?;
    }
    Ok(())
}

/// The rows of [`FindingsView::PerHost`]; what they list (`3 findings (1 critical, 2 high)`).
fn per_host_table(answer: &FleetFindings, out: &mut dyn Write) -> std::io::Result<String> {
    let mut sorted: Vec<_> = answer.findings.iter().collect();
    // Stable: within a severity, the collector's order (by host, then the report's order).
    sorted.sort_by_key(|f| std::cmp::Reverse(f.finding.severity));
    let rows: Vec<[String; 5]> = sorted
        .iter()
        .map(|f| {
            [
                f.finding.severity.to_string(),
                f.finding.id.clone(),
                f.host_id.clone(),
                escape_control(&f.finding.title).into_owned(),
                guestward_report::render::finding_location(&f.finding)
                    .map_or(String::new(), |at| escape_control(&at).into_owned()),
            ]
        })
        .collect();
    if !rows.is_empty() {
        write_columns(out, ["SEVERITY", "ID", "HOST", "TITLE", "AT"], &rows)?;
    }
    let counts =
        guestward_report::render::severity_counts(answer.findings.iter().map(|f| f.finding.severity));
    let counts = if counts.is_empty() { String::new() } else { format!(" ({counts})") };
    Ok(format!(
        "{}{counts}",
        guestward_core::text::counted(answer.findings.len() as u64, "finding", "findings")
    ))
}

/// The rows of [`FindingsView::PerId`]; what they list (`2 finding ids`).
fn per_id_table(answer: &FleetFindings, out: &mut dyn Write) -> std::io::Result<String> {
    use std::collections::{BTreeMap, BTreeSet};
    struct Seen<'a> {
        severity: Severity,
        hosts: BTreeSet<&'a str>,
        title: &'a str,
    }
    let mut by_id: BTreeMap<&str, Seen<'_>> = BTreeMap::new();
    for f in &answer.findings {
        let seen = by_id.entry(f.finding.id.as_str()).or_insert(Seen {
            severity: f.finding.severity,
            hosts: BTreeSet::new(),
            title: &f.finding.title,
        });
        seen.severity = seen.severity.max(f.finding.severity);
        seen.hosts.insert(&f.host_id);
    }
    let mut ids: Vec<(&str, Seen<'_>)> = by_id.into_iter().collect();
    ids.sort_by_key(|(_, seen)| (std::cmp::Reverse(seen.severity), std::cmp::Reverse(seen.hosts.len())));
    let rows: Vec<[String; 4]> = ids
        .iter()
        .map(|(id, seen)| {
            [
                seen.severity.to_string(),
                id.to_string(),
                seen.hosts.len().to_string(),
                escape_control(seen.title).into_owned(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        write_columns(out, ["SEVERITY", "ID", "HOSTS", "A TITLE"], &rows)?;
    }
    Ok(guestward_core::text::counted(ids.len() as u64, "finding id", "finding ids"))
}

/// How `packages` shows the fleet's packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackagesView {
    /// One row per package of a host, with where it is and how old the host's inventory is.
    PerHost,
    /// One row per version (`--summary`): how many hosts have it.
    PerVersion,
}

/// `GET /v1/packages` as a table (see [`PackagesView`]), the counts below, what the answer's
/// bounds left out, and the hosts it cannot answer for.
pub fn render_packages(
    answer: &FleetPackages,
    query: &PackageQuery,
    view: PackagesView,
    now: Timestamp,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let out: &mut dyn Write = &mut TerminalSafe::new(out);
    let counted = guestward_core::text::counted;
    let version = |p: &PackageKey| {
        let shown = escape_control(&p.version);
        if p.order_unknown { format!("{shown} (?)") } else { shown.into_owned() }
    };
    let arch = |p: &PackageKey| p.arch.as_deref().map_or(String::new(), |a| escape_control(a).into_owned());
    if answer.versions.is_empty() && answer.versions_omitted == 0 {
        writeln!(out, "no package matches ({} searched)", counted(answer.hosts_searched, "host", "hosts"))?;
    } else {
        match view {
            PackagesView::PerHost => {
                let rows: Vec<[String; 7]> = answer
                    .packages
                    .iter()
                    .map(|p| {
                        let age = now.unix_secs().saturating_sub(p.collected_at.unix_secs()).max(0);
                        [
                            p.host_id.clone(),
                            escape_control(&p.package.name).into_owned(),
                            version(&p.package),
                            arch(&p.package),
                            p.package.source.clone(),
                            p.location.as_deref().map_or(String::new(), |l| escape_control(l).into_owned()),
                            format!("{} ago", human::duration(age)),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    write_columns(
                        out,
                        ["HOST", "PACKAGE", "VERSION", "ARCH", "SOURCE", "WHERE", "AS OF"],
                        &rows,
                    )?;
                }
            }
            PackagesView::PerVersion => {
                let rows: Vec<[String; 5]> = answer
                    .versions
                    .iter()
                    .map(|v| {
                        [
                            escape_control(&v.package.name).into_owned(),
                            version(&v.package),
                            arch(&v.package),
                            v.package.source.clone(),
                            v.hosts.to_string(),
                        ]
                    })
                    .collect();
                write_columns(out, ["PACKAGE", "VERSION", "ARCH", "SOURCE", "HOSTS"], &rows)?;
            }
        }
        let versions = answer.versions.len() as u64 + answer.versions_omitted;
        writeln!(
            out,
            "\n{} of {} {} ({})",
            answer.hosts_matching,
            counted(answer.hosts_searched, "host", "hosts"),
            if answer.hosts_matching == 1 { "has it" } else { "have it" },
            counted(versions, "version", "versions"),
        )?;
    }
    let unordered = answer.versions.iter().filter(|v| v.package.order_unknown).count() as u64;
    if let (Some(below), true) = (&query.below, unordered > 0) {
        writeln!(
            out,
            "{} cannot be ordered against {} by the package manager's rule (marked ?): compare by hand",
            counted(unordered, "version", "versions"),
            escape_control(below)
        )?;
    }
    if answer.omitted > 0 && view == PackagesView::PerHost {
        writeln!(
            out,
            "{} more (host, package) rows left out: an answer lists at most {}; narrow the query (--version, --below, --source) or count them with --summary",
            answer.omitted,
            guestward_report::ingest::MAX_FLEET_PACKAGES
        )?;
    }
    if answer.versions_omitted > 0 {
        writeln!(
            out,
            "{} more matching versions not listed: an answer counts at most {}; narrow the name",
            answer.versions_omitted,
            guestward_report::ingest::MAX_FLEET_PACKAGE_VERSIONS
        )?;
    }
    if answer.hosts_without_inventory > 0 {
        writeln!(
            out,
            "{} no package inventory at the collector yet, and cannot be answered for (each is indexed from its next report that carries one)",
            counted(answer.hosts_without_inventory, "host has", "hosts have")
        )?;
    }
    Ok(())
}

/// How `listeners` shows the fleet's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenersView {
    /// One row per listener of a host: its address, process, user, unit, public reach and how
    /// old the host's scan is.
    PerHost,
    /// One row per service (`--summary`): port, protocol, scope, process and how many hosts
    /// run it.
    PerService,
}

/// `GET /v1/listeners` as a table (see [`ListenersView`]), the counts below, what the
/// answer's bounds left out, and the hosts it cannot answer for.
pub fn render_listeners(
    answer: &FleetListeners,
    view: ListenersView,
    now: Timestamp,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let out: &mut dyn Write = &mut TerminalSafe::new(out);
    let counted = guestward_core::text::counted;
    let text = |v: &Option<String>| v.as_deref().map_or(String::new(), |t| escape_control(t).into_owned());
    let scope = |s: &ServiceKey| s.scope.map_or("?".to_string(), |s| s.to_string());
    // An owner the agent could not see (another pid namespace, no permission) is shown so.
    let process =
        |s: &ServiceKey| s.process.as_deref().map_or("?".to_string(), |p| escape_control(p).into_owned());
    if answer.services.is_empty() && answer.services_omitted == 0 {
        writeln!(out, "no listener matches ({} searched)", counted(answer.hosts_searched, "host", "hosts"))?;
    } else {
        match view {
            ListenersView::PerHost => {
                let rows: Vec<[String; 10]> = answer
                    .listeners
                    .iter()
                    .map(|l| {
                        let age = now.unix_secs().saturating_sub(l.collected_at.unix_secs()).max(0);
                        let public: Vec<String> =
                            l.public_addresses.iter().map(ToString::to_string).collect();
                        [
                            l.host_id.clone(),
                            l.service.port.to_string(),
                            l.service.protocol.to_string(),
                            match &l.interface {
                                Some(interface) => format!("{} ({})", l.address, escape_control(interface)),
                                None => l.address.to_string(),
                            },
                            scope(&l.service),
                            process(&l.service),
                            text(&l.user),
                            text(&l.systemd_unit),
                            public.join(" "),
                            format!("{} ago", human::duration(age)),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    write_columns(
                        out,
                        [
                            "HOST", "PORT", "PROTO", "ADDRESS", "SCOPE", "PROCESS", "USER", "UNIT", "PUBLIC",
                            "AS OF",
                        ],
                        &rows,
                    )?;
                }
            }
            ListenersView::PerService => {
                let rows: Vec<[String; 5]> = answer
                    .services
                    .iter()
                    .map(|s| {
                        [
                            s.service.port.to_string(),
                            s.service.protocol.to_string(),
                            scope(&s.service),
                            process(&s.service),
                            s.hosts.to_string(),
                        ]
                    })
                    .collect();
                write_columns(out, ["PORT", "PROTO", "SCOPE", "PROCESS", "HOSTS"], &rows)?;
            }
        }
        let services = answer.services.len() as u64 + answer.services_omitted;
        writeln!(
            out,
            "\n{} of {} {} ({})",
            answer.hosts_matching,
            counted(answer.hosts_searched, "host", "hosts"),
            if answer.hosts_matching == 1 { "listens so" } else { "listen so" },
            counted(services, "service", "services"),
        )?;
    }
    if answer.omitted > 0 && view == ListenersView::PerHost {
        writeln!(
            out,
            "{} more (host, listener) rows left out: an answer lists at most {}; narrow the query (--port, --protocol, --scope, --process) or count them with --summary",
            answer.omitted,
            guestward_report::ingest::MAX_FLEET_LISTENERS
        )?;
    }
    if answer.services_omitted > 0 {
        writeln!(
            out,
            "{} more matching services not listed: an answer counts at most {}; narrow the query",
            answer.services_omitted,
            guestward_report::ingest::MAX_FLEET_SERVICES
        )?;
    }
    if answer.hosts_without_scan > 0 {
        writeln!(
            out,
            "{} no network scan at the collector yet, and cannot be answered for (each is indexed from its next report that carries one)",
            counted(answer.hosts_without_scan, "host has", "hosts have")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestward_report::ingest::{CertificateInfo, HostFinding};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_secs(1_800_000_000 + secs).unwrap_or_else(Timestamp::now)
    }

    fn summary(id: &str, missing: u64, not_after: Option<i64>) -> HostSummary {
        HostSummary {
            host_id: id.into(),
            reports_stored: 5,
            last_sequence: Some(5 + missing),
            missing_sequences: missing,
            last_seen: at(-90),
            secs_since_last_seen: 90,
            stored_bytes: 1536,
            last_collected_at: at(-91),
            agent_version: "0.1.0".into(),
            client_certificate: not_after.map(|secs| CertificateInfo {
                serial: "01".into(),
                sha256: "ab".into(),
                not_after: at(secs),
            }),
        }
    }

    fn shown(render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
        let mut out = Vec::new();
        let rendered = render(&mut out);
        assert!(rendered.is_ok(), "{rendered:?}");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn hosts_show_expired_and_near_certificates_and_the_reports_never_received() {
        let list = HostList {
            hosts: vec![
                summary("i-expired", 0, Some(-6 * 86_400)),
                summary("i-near", 3, Some(20 * 3_600 + 300)),
                summary("i-new", 0, None),
            ],
        };
        let text = shown(|out| render_hosts(&list, None, at(0), out));
        let rows: Vec<&str> = text.lines().collect();
        assert!(
            rows[1].starts_with("i-expired  1m ago") && rows[1].ends_with("(EXPIRED 6d 0h ago)"),
            "{text}"
        );
        assert!(rows[2].ends_with("(in 20h 5m)"), "{text}");
        assert!(rows[3].ends_with("  -"), "{text}");
        assert_eq!(
            rows[5],
            "3 hosts; 3 reports never received (MISSING: lost or dropped by an agent's full spool); \
             1 client certificate EXPIRED (its agent cannot deliver until it has a new one); \
             1 client certificate expires within 7 days"
        );
        assert_eq!(
            shown(|out| render_hosts(&HostList { hosts: vec![] }, None, at(0), out)),
            "no host has reported to this collector yet\n"
        );
        let silent = Some(Silent { secs: 3_600, of: 4 });
        let text = shown(|out| render_hosts(&list, silent, at(0), out));
        assert!(text.contains("\n3 of 4 silent for more than 1h 0m; 3 reports never received"), "{text}");
        let empty = HostList { hosts: vec![] };
        assert_eq!(
            [4, 1, 0].map(|of| shown(|out| render_hosts(
                &empty,
                Some(Silent { secs: 3_600, of }),
                at(0),
                out
            ))),
            [
                "none of the 4 hosts has been silent for more than 1h 0m\n",
                "the one host has not been silent for more than 1h 0m\n",
                "no host has reported to this collector yet\n"
            ]
        );
    }

    #[test]
    fn findings_left_out_by_the_bounds_are_counted_with_what_to_do() {
        let finding = |host: &str, id: &str, severity| HostFinding {
            host_id: host.into(),
            sequence: 1,
            collected_at: at(0),
            finding: guestward_core::Finding {
                id: id.into(),
                severity,
                title: "t".into(),
                evidence: serde_json::json!({}),
                remediation: "-".into(),
                source: "test".into(),
            },
        };
        let answer = FleetFindings {
            hosts_searched: 7,
            findings: vec![
                finding("a", "GW-X-001", Severity::Medium),
                finding("b", "GW-X-001", Severity::Medium),
            ],
            omitted: 12,
        };
        let text = shown(|out| render_findings(&answer, FindingsView::PerHost, out));
        assert!(text.contains("\n2 findings (2 medium) on 2 hosts; 7 hosts searched\n"), "{text}");
        assert!(text.ends_with("12 more matching left out: an answer holds at most 10000 findings and 8.0 MiB of them; narrow the query (--id, --min-severity)\n"), "{text}");
        // The summary: one line per id, the highest severity, hosts counted once.
        let mut both = answer.clone();
        both.findings.push(finding("b", "GW-X-001", Severity::High));
        both.findings.push(finding("c", "GW-Y-002", Severity::Low));
        let text = shown(|out| render_findings(&both, FindingsView::PerId, out));
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["SEVERITY", "ID", "HOSTS", "A", "TITLE"]);
        assert_eq!(rows[1], ["high", "GW-X-001", "2", "t"], "{text}");
        assert_eq!(rows[2], ["low", "GW-Y-002", "1", "t"], "{text}");
        assert!(text.ends_with("\n2 finding ids on 3 hosts; 7 hosts searched\n12 more matching left out (and not counted above): an answer holds at most 10000 findings and 8.0 MiB of them; narrow the query (--id, --min-severity)\n"), "{text}");
        // Even the first matching finding over the size bound: counted, not "no finding".
        let text = shown(|out| {
            render_findings(
                &FleetFindings { hosts_searched: 1, findings: vec![], omitted: 1 },
                FindingsView::PerHost,
                out,
            )
        });
        assert!(
            text.starts_with("\n0 findings on 0 hosts; 1 host searched\n1 more matching left out"),
            "{text}"
        );
    }

    /// The packages table: a version that cannot be ordered is marked, agent-sent text is
    /// escaped, and what the answer could not hold or answer for is said below it.
    #[test]
    fn packages_show_unordered_versions_bounds_and_hosts_without_an_inventory() {
        use guestward_report::ingest::{HostPackage, PackageVersionCount};
        let key = |version: &str, order_unknown| PackageKey {
            source: "pypi".into(),
            name: "xz\u{1b}[8m".into(),
            version: version.into(),
            arch: None,
            order_unknown,
        };
        let row = |host: &str, version: &str, order_unknown| HostPackage {
            host_id: host.into(),
            package: key(version, order_unknown),
            location: Some("/srv/app/venv/lib/python3.11/site-packages".into()),
            sequence: 3,
            collected_at: at(-7_200),
        };
        let answer = FleetPackages {
            hosts_searched: 9,
            hosts_without_inventory: 2,
            hosts_matching: 2,
            versions: vec![
                PackageVersionCount { package: key("0.9", false), hosts: 1 },
                PackageVersionCount { package: key("main", true), hosts: 1 },
            ],
            packages: vec![row("a", "0.9", false), row("b", "main", true)],
            omitted: 4,
            versions_omitted: 0,
        };
        let query = PackageQuery { name: "xz*".into(), below: Some("1.0".into()), ..Default::default() };
        let text = shown(|out| render_packages(&answer, &query, PackagesView::PerHost, at(0), out));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "a",
                "xz\\x1b[8m",
                "0.9",
                "pypi",
                "/srv/app/venv/lib/python3.11/site-packages",
                "2h",
                "0m",
                "ago"
            ],
            "{text}"
        );
        assert!(lines[2].contains(" main (?) "), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert_eq!(
            lines[3..],
            [
                "",
                "2 of 9 hosts have it (2 versions)",
                "1 version cannot be ordered against 1.0 by the package manager's rule (marked ?): compare by hand",
                "4 more (host, package) rows left out: an answer lists at most 10000; narrow the query (--version, --below, --source) or count them with --summary",
                "2 hosts have no package inventory at the collector yet, and cannot be answered for (each is indexed from its next report that carries one)",
            ],
            "{text}"
        );
        // Nothing matched: said so, and still which hosts could not be asked.
        let none =
            FleetPackages { versions: vec![], packages: vec![], omitted: 0, hosts_matching: 0, ..answer };
        let text = shown(|out| render_packages(&none, &query, PackagesView::PerVersion, at(0), out));
        assert_eq!(
            text,
            "no package matches (9 hosts searched)\n2 hosts have no package inventory at the collector yet, and cannot be answered for (each is indexed from its next report that carries one)\n"
        );
    }

    /// The listeners table: an owner or scope the agent could not see is `?`, agent-sent text
    /// is escaped, a specific address names its interface, and what the answer could not hold
    /// or answer for is said below it; `--summary` counts hosts per service.
    #[test]
    fn listeners_show_unknown_owners_bounds_and_hosts_without_a_scan() {
        use guestward_network::{ExposureScope, Protocol};
        use guestward_report::ingest::{HostListener, ServiceCount};
        let service = |port, scope, process: Option<&str>| ServiceKey {
            port,
            protocol: Protocol::Tcp,
            scope,
            process: process.map(Into::into),
        };
        let row = |host: &str, key: ServiceKey, address: &str, interface: Option<&str>| HostListener {
            host_id: host.into(),
            service: key,
            address: address.parse().unwrap(),
            interface: interface.map(Into::into),
            public_addresses: vec!["203.0.113.9".parse().unwrap()],
            exe: None,
            user: Some("redis".into()),
            systemd_unit: Some("redis\u{1b}]0;x\u{7}.service".into()),
            sequence: 4,
            collected_at: at(-60),
        };
        let redis = service(6379, Some(ExposureScope::Interface), Some("redis-server"));
        let hidden = service(2024, None, None);
        let answer = FleetListeners {
            hosts_searched: 5,
            hosts_without_scan: 1,
            hosts_matching: 2,
            services: vec![
                ServiceCount { service: hidden.clone(), hosts: 1 },
                ServiceCount { service: redis.clone(), hosts: 1 },
            ],
            listeners: vec![row("b", hidden, "0.0.0.0", None), row("a", redis, "10.0.0.5", Some("ens5"))],
            omitted: 3,
            services_omitted: 1,
        };
        let text = shown(|out| render_listeners(&answer, ListenersView::PerHost, at(0), out));
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[1],
            [
                "b",
                "2024",
                "tcp",
                "0.0.0.0",
                "?",
                "?",
                "redis",
                "redis\\x1b]0;x\\x07.service",
                "203.0.113.9",
                "1m",
                "ago"
            ],
            "{text}"
        );
        assert_eq!(lines[2][..6], ["a", "6379", "tcp", "10.0.0.5", "(ens5)", "interface"], "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert_eq!(
            text.lines().skip(3).collect::<Vec<_>>(),
            [
                "",
                "2 of 5 hosts listen so (3 services)",
                "3 more (host, listener) rows left out: an answer lists at most 10000; narrow the query (--port, --protocol, --scope, --process) or count them with --summary",
                "1 more matching services not listed: an answer counts at most 10000; narrow the query",
                "1 host has no network scan at the collector yet, and cannot be answered for (each is indexed from its next report that carries one)",
            ],
            "{text}"
        );
        let summary = shown(|out| render_listeners(&answer, ListenersView::PerService, at(0), out));
        let lines: Vec<Vec<&str>> = summary.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[..3],
            [
                vec!["PORT", "PROTO", "SCOPE", "PROCESS", "HOSTS"],
                vec!["2024", "tcp", "?", "?", "1"],
                vec!["6379", "tcp", "interface", "redis-server", "1"],
            ],
            "{summary}"
        );
        assert!(!summary.contains("rows left out"), "the summary lists every row it counts: {summary}");
    }
}
