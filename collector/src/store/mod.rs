//! Where accepted reports go: the [`Store`] trait and its SQLite implementation.
//!
//! The trait is shaped for a PostgreSQL backend to follow, where several collector replicas
//! share one database:
//! - one [`Store::ingest`] call is one transaction: a request is stored whole or not at all;
//! - idempotency is the database's, by a unique key on `batch_id` (insert-or-ignore), never an
//!   in-process cache that other replicas could not see;
//! - every host statistic (`reports_stored`, `last_sequence`, `missing_sequences`) is an
//!   aggregate over the reports table, so it is derivable in SQL from any replica. They describe
//!   the reports stored now: retention ([`Retention`]) deletes a host's oldest reports, so
//!   `reports_stored` falls and the span of sequences shrinks from below with them.
//!
//! The methods are synchronous: the server calls them on tokio's blocking pool. A pooled
//! PostgreSQL client can implement them the same way.

mod listeners;
mod sqlite;

pub use listeners::{
    ListenerIndex, ListenerQuery, ListenerRow, MAX_INDEXED_LISTENERS, MAX_PROCESS_PATTERN_LEN,
    parse_process_pattern, parse_protocol, parse_scope,
};
pub use sqlite::{CompactOptions, CompactSummary, SqliteStore, VacuumOutcome, compact};

use guestward_core::{Event, Finding, Timestamp};
use guestward_report::ingest::{
    BatchStatus, CertificateInfo, FleetFindings, FleetListeners, FleetPackages, HostDetail, HostSummary,
};
use std::path::PathBuf;

/// Most events returned in [`HostDetail::recent_events`].
pub const RECENT_EVENTS: usize = 100;
/// The most bytes of event JSON a host's detail carries (see `HostDetail::recent_events`).
pub const RECENT_EVENTS_MAX_BYTES: u64 = 1 << 20;

/// How long and how much the store keeps (`[retention]` in the config).
///
/// Age and the cap never delete a host's latest report nor its row, so `GET /v1/hosts` and
/// `/v1/hosts/{id}` keep answering for every host still reporting. Only a host silent for
/// `forget_idle_hosts_after_days` is deleted whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Reports received more than this many days ago are deleted with their findings and
    /// events, all but each host's latest; 0 keeps them for good.
    pub max_age_days: u32,
    /// The most bytes one host's reports, findings and events may take in the store, counted
    /// as stored (compressed) with what their rows cost besides; a host over it loses its
    /// oldest reports until it is under. 0: no cap.
    pub max_bytes_per_host: u64,
    /// A host whose last delivery (`hosts.last_seen`) is more than this many days ago is
    /// deleted whole: its row, its reports with their findings and events, its tombstones. In
    /// an autoscaling fleet terminated instances never report again, and each would otherwise
    /// keep its row and latest report for good. 0: hosts are never forgotten.
    pub forget_idle_hosts_after_days: u32,
}

impl Retention {
    /// Nothing is ever deleted.
    pub const KEEP_EVERYTHING: Self =
        Self { max_age_days: 0, max_bytes_per_host: 0, forget_idle_hosts_after_days: 0 };

    /// The age limit, when there is one.
    pub fn max_age(&self) -> Option<jiff::SignedDuration> {
        (self.max_age_days > 0).then(|| jiff::SignedDuration::from_hours(i64::from(self.max_age_days) * 24))
    }

    /// How long a host may stay silent before it is forgotten, when it ever is.
    pub fn forget_after(&self) -> Option<jiff::SignedDuration> {
        (self.forget_idle_hosts_after_days > 0)
            .then(|| jiff::SignedDuration::from_hours(i64::from(self.forget_idle_hosts_after_days) * 24))
    }

    /// The per-host cap, when there is one.
    pub fn cap(&self) -> Option<u64> {
        (self.max_bytes_per_host > 0).then_some(self.max_bytes_per_host)
    }
}

impl Default for Retention {
    /// 90 days, 1 GiB per host, hosts silent for 90 days forgotten (see
    /// `RawRetention::forget_idle_hosts_after_days` for why the same as the age limit).
    fn default() -> Self {
        Self { max_age_days: 90, max_bytes_per_host: 1 << 30, forget_idle_hosts_after_days: 90 }
    }
}

/// One accepted report, checked and ready to store.
#[derive(Debug, Clone)]
pub struct NewReport {
    /// Its unique id.
    pub batch_id: String,
    /// The host (equal to the delivering client's identity).
    pub host_id: String,
    /// Per-host position.
    pub sequence: u64,
    /// When the agent collected it.
    pub collected_at: Timestamp,
    /// The agent's version.
    pub agent_version: String,
    /// The report as JSON (the store may compress it).
    pub json: Vec<u8>,
    /// Its findings, kept for [`HostDetail::findings`].
    pub findings: Vec<Finding>,
    /// Its events, kept for [`HostDetail::recent_events`].
    pub events: Vec<Event>,
    /// Its package inventory (`None` when it carried none: a partial report, or the packages
    /// collector failed), indexed for [`Store::packages`] when the report is the host's latest.
    pub packages: Option<PackageInventory>,
    /// Its listening sockets (`None` when it carried no network scan), indexed for
    /// [`Store::listeners`] when the report is the host's latest.
    pub listeners: Option<ListenerIndex>,
}

/// One package of an inventory, as the agent's change tracking names it.
pub use guestward_packages::delta::{Item as PackageItem, PackageSource};

/// A host's packages as a report carries them, flattened as the agent's change tracking
/// flattens them, in one buffer: a report's typed inventory is thousands of small allocations,
/// and keeping those alive while the request waits for the store's writer slowed every
/// request (docs/benchmarks.md, "The fleet's package index"). The writer reads the packages
/// back only when the inventory's digest differs from the host's: a host reports the same
/// packages scan after scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageInventory {
    /// Per package: the source's index in `PackageSource::ALL`, then name, version, arch
    /// and location, each a 4-byte little-endian length (`u32::MAX`: absent) and its bytes.
    encoded: Vec<u8>,
}

impl PackageInventory {
    /// The packages of a report's packages section.
    pub fn from_report(data: &guestward_packages::PackagesReport) -> Self {
        let mut out = Self::default();
        guestward_packages::delta::visit_items(
            data.dpkg.as_ref(),
            data.rpm.as_slice(),
            data.language.as_ref(),
            |i| out.push(&i),
        );
        out
    }

    /// These packages.
    pub fn from_items(items: &[PackageItem]) -> Self {
        let mut out = Self::default();
        for i in items {
            out.push(&guestward_packages::delta::ItemRef {
                source: i.source,
                name: &i.name,
                arch: i.arch.as_deref(),
                location: i.location.as_deref(),
                version: &i.version,
            });
        }
        out
    }

    fn push(&mut self, item: &guestward_packages::delta::ItemRef<'_>) {
        let index = PackageSource::ALL.iter().position(|s| *s == item.source).unwrap_or(0);
        self.encoded.push(index as u8);
        for field in [Some(item.name), Some(item.version), item.arch, item.location] {
            match field {
                // A field is at most a report's size, far below 4 GiB (the ingest limits).
                Some(text) => {
                    let len = u32::try_from(text.len()).unwrap_or(u32::MAX - 1);
                    self.encoded.extend_from_slice(&len.to_le_bytes());
                    self.encoded.extend_from_slice(&text.as_bytes()[..len as usize]);
                }
                None => self.encoded.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
        }
    }

    /// SHA-256 of the packages as listed: equal digests mean equal packages in the same order.
    /// The same packages in another order (or repeated) have another digest; that costs a
    /// comparison of rows, never a wrong answer.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(&self.encoded).into()
    }

    /// The packages, in the order listed, borrowed from the buffer.
    pub fn iter(&self) -> impl Iterator<Item = guestward_packages::delta::ItemRef<'_>> {
        // Each field as `push` wrote it; `None` at the end (or on a buffer it did not write).
        fn field<'a>(rest: &mut &'a [u8]) -> Option<Option<&'a str>> {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len);
            if len == u32::MAX {
                *rest = tail;
                return Some(None);
            }
            let (text, tail) = tail.split_at_checked(len as usize)?;
            *rest = tail;
            Some(Some(std::str::from_utf8(text).ok()?))
        }
        let mut rest = self.encoded.as_slice();
        std::iter::from_fn(move || {
            let (&index, tail) = rest.split_first()?;
            rest = tail;
            let source = *PackageSource::ALL.get(usize::from(index))?;
            let (name, version) = (field(&mut rest)??, field(&mut rest)??);
            let (arch, location) = (field(&mut rest)?, field(&mut rest)?);
            Some(guestward_packages::delta::ItemRef { source, name, arch, location, version })
        })
    }

    /// The packages, sorted, without duplicates.
    pub fn items(&self) -> Vec<PackageItem> {
        let mut items: Vec<PackageItem> = self.iter().map(|i| i.to_item()).collect();
        items.sort_unstable();
        items.dedup();
        items
    }
}

/// Which packages `GET /v1/packages` lists (its query).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageQuery {
    /// The name: exact, or with `*` standing for any characters.
    pub name: String,
    /// Only these exact versions (none: any).
    pub versions: Vec<String>,
    /// Only versions lower than this one, in the package manager's order.
    pub below: Option<String>,
    /// Only this source.
    pub source: Option<PackageSource>,
}

/// Who delivered a request and when.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The client's host id.
    pub host_id: String,
    /// The client certificate it presented (or its proxy forwarded).
    pub certificate: CertificateInfo,
    /// When the request was accepted.
    pub received_at: Timestamp,
}

/// Why the store failed. The request stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening the database.
    #[error("{}: cannot open the database: {reason}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Database(String),
    /// A batch id was already stored for another host: an agent reused another host's id.
    #[error("report {batch_id}: batch_id is already stored for another host")]
    ForeignBatch {
        /// The batch id.
        batch_id: String,
    },
    /// Stored data could not be read back.
    #[error("stored data for {what} is unreadable: {reason}")]
    Corrupt {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
}

/// Which findings `GET /v1/findings` lists (its query): the rule `agentctl findings` applies too.
pub use guestward_core::FindingFilter;

/// The longest package name or version a query takes (`name`, `version`, `below`).
pub const MAX_PACKAGE_FIELD_LEN: usize = 256;

/// Checks a package name, name pattern or version of a query: 1 to [`MAX_PACKAGE_FIELD_LEN`]
/// bytes, no control characters. A clap `value_parser`; the error quotes the value, bounded
/// and escaped.
pub fn parse_package_field(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_PACKAGE_FIELD_LEN || text.chars().any(char::is_control) {
        return Err(format!(
            "{} is not a package name or version (1 to {MAX_PACKAGE_FIELD_LEN} bytes, no control characters)",
            guestward_core::text::quote_truncated(text, 64)
        ));
    }
    Ok(text.to_string())
}

/// A report store shared by every connection (and, for a networked backend, every replica).
pub trait Store: Send + Sync {
    /// Stores `reports` of one delivery in one transaction, all or nothing. Returns, per report
    /// in order, whether it was new or a duplicate (same `batch_id`, possibly earlier in the
    /// same request). Records `delivery`'s certificate as the host's latest.
    fn ingest(&self, delivery: &Delivery, reports: &[NewReport]) -> Result<Vec<BatchStatus>, StoreError>;
    /// Every host, ordered by host id.
    fn hosts(&self) -> Result<Vec<HostSummary>, StoreError>;
    /// One host; `None` when it never reported or was forgotten (`Retention`).
    fn host(&self, host_id: &str) -> Result<Option<HostDetail>, StoreError>;
    /// The findings of every host's latest report that `filter` matches, within the answer's
    /// bounds (`MAX_FLEET_FINDINGS`, `MAX_FLEET_FINDINGS_BYTES`; the rest counted).
    fn findings(&self, filter: &FindingFilter) -> Result<FleetFindings, StoreError>;
    /// The packages of every host's indexed inventory that `query` matches, within the
    /// answer's bounds (`MAX_FLEET_PACKAGES`, `MAX_FLEET_PACKAGE_VERSIONS`; the rest counted).
    fn packages(&self, query: &PackageQuery) -> Result<FleetPackages, StoreError>;
    /// The listeners of every host's indexed network scan that `query` matches, within the
    /// answer's bounds (`MAX_FLEET_LISTENERS`, `MAX_FLEET_SERVICES`; the rest counted).
    fn listeners(&self, query: &ListenerQuery) -> Result<FleetListeners, StoreError>;
    /// Whether the store answers.
    fn health(&self) -> Result<(), StoreError>;
}
