//! The typed inventory this crate produces.

#[cfg(feature = "collect")]
use crate::header::{Header, HeaderError, hex, tags};
use guestward_core::{Problem, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The three storage formats rpm has used for its package database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
// Other collectors have a `Backend` too; a distinct schema name keeps report.schema.json stable.
#[schemars(rename = "RpmBackend")]
pub enum Backend {
    /// `rpmdb.sqlite` (rpm >= 4.16: Fedora 33+, RHEL 9, Amazon Linux 2023).
    Sqlite,
    /// Berkeley DB hash `Packages` (RHEL/CentOS 7 and 8, Amazon Linux 2).
    Bdb,
    /// rpm's own "ndb" `Packages.db` (SUSE Linux Enterprise 15, openSUSE).
    Ndb,
}

impl Backend {
    /// The database file name rpm uses for this backend.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Sqlite => "rpmdb.sqlite",
            Self::Bdb => "Packages",
            Self::Ndb => "Packages.db",
        }
    }

    /// Short lower-case name (`sqlite`, `bdb`, `ndb`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Bdb => "bdb",
            Self::Ndb => "ndb",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything read from one rpm database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RpmInventory {
    /// The database file as seen on the host (e.g. `/var/lib/rpm/rpmdb.sqlite`).
    pub db_path: String,
    /// Its storage format.
    pub backend: Backend,
    /// Installed packages whose headers parsed and whose header digests (when present)
    /// matched, in database record order.
    pub packages: Vec<RpmPackage>,
    /// Headers that were found but not listed: unparseable, or failing their own
    /// SHA-256/SHA-1 digest (rpm skips these too). A non-empty list means the database is
    /// damaged or was tampered with.
    pub corrupt: Vec<CorruptHeader>,
    /// Damage in the database structure itself (bad pages, broken overflow chains,
    /// truncation), each naming the byte offset. Packages before and after were still read.
    pub problems: Vec<Problem>,
}

/// One installed package, from its rpm header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RpmPackage {
    /// Record number in the database (sqlite `hnum`, bdb key, ndb package index); rpm
    /// calls it the header instance.
    pub record: u32,
    /// `NAME`.
    pub name: String,
    /// `EPOCH`; absent for most packages (rpm prints `(none)`, and orders it as 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    /// `VERSION`.
    pub version: String,
    /// `RELEASE`.
    pub release: String,
    /// `ARCH`; absent for `gpg-pubkey` pseudo-packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// `SOURCERPM`: the source package file it was built from (absent for gpg-pubkey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_rpm: Option<String>,
    /// Installed size in bytes (`LONGSIZE`, else `SIZE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// `VENDOR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// `LICENSE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// `INSTALLTIME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_time: Option<Timestamp>,
    /// Digests and signatures carried by the header.
    pub digests: HeaderDigests,
}

impl RpmPackage {
    /// `name-[epoch:]version-release.arch`, as `rpm -q` prints it (arch omitted when absent).
    pub fn nevra(&self) -> String {
        let epoch = self.epoch.map(|e| format!("{e}:")).unwrap_or_default();
        match &self.arch {
            Some(a) => format!("{}-{epoch}{}-{}.{a}", self.name, self.version, self.release),
            None => format!("{}-{epoch}{}-{}", self.name, self.version, self.release),
        }
    }

    /// `[epoch:]version-release`, the string [`crate::vercmp::compare_evr`] orders.
    pub fn evr(&self) -> String {
        let epoch = self.epoch.map(|e| format!("{e}:")).unwrap_or_default();
        format!("{epoch}{}-{}", self.version, self.release)
    }
}

/// Digests and signatures in a package header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeaderDigests {
    /// `SHA256HEADER` (hex), verified against the header's immutable region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `SHA1HEADER` (hex), verified against the header's immutable region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// `SIGMD5` (hex): MD5 over header and payload of the package file; recorded, not
    /// checkable without that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigmd5: Option<String>,
    /// First `PAYLOADDIGEST` (hex) of the package file's payload; recorded, not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_digest: Option<String>,
    /// Header signatures present (`rsa`, `dsa`): recorded, not verified (that needs the
    /// host's rpm keyring).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<String>,
}

/// A header that was found but is not listed as a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CorruptHeader {
    /// Record number in the database.
    pub record: u32,
    /// Byte offset of the blob in the file, when the format has one (bdb, ndb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// `name-version-release.arch` when those tags could still be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nevra: Option<String>,
    /// `digest_mismatch` or `malformed_header`.
    pub code: String,
    /// What is wrong, e.g. `header SHA256 digest BAD (expected ..., computed ...)`.
    pub reason: String,
}

#[cfg(feature = "collect")]
/// Parses and verifies one header blob into a package.
pub fn package_from_blob(record: u32, blob: &[u8]) -> Result<RpmPackage, (HeaderError, Option<String>)> {
    let header = Header::parse(blob).map_err(|e| (e, None))?;
    let partial = package_fields(record, &header);
    let verified = match header.verify_digests() {
        Ok(v) => v,
        Err(e) => return Err((e, partial.ok().map(|p| p.nevra()))),
    };
    let mut package = partial.map_err(|e| (e, None))?;
    package.digests.sha256 = verified.sha256;
    package.digests.sha1 = verified.sha1;
    Ok(package)
}

#[cfg(feature = "collect")]
fn package_fields(record: u32, h: &Header<'_>) -> Result<RpmPackage, HeaderError> {
    let req = |tag, name| h.string(tag).map(|s| s.into_owned()).ok_or(HeaderError::MissingTag { tag, name });
    let opt = |tag| h.string(tag).map(|s| s.into_owned());
    let mut signatures = Vec::new();
    if h.has(tags::RSAHEADER) {
        signatures.push("rsa".to_owned());
    }
    if h.has(tags::DSAHEADER) {
        signatures.push("dsa".to_owned());
    }
    Ok(RpmPackage {
        record,
        name: req(tags::NAME, "NAME")?,
        epoch: h.integer(tags::EPOCH).and_then(|v| u32::try_from(v).ok()),
        version: req(tags::VERSION, "VERSION")?,
        release: req(tags::RELEASE, "RELEASE")?,
        arch: opt(tags::ARCH),
        source_rpm: opt(tags::SOURCERPM),
        size_bytes: h.integer(tags::LONGSIZE).or_else(|| h.integer(tags::SIZE)),
        vendor: opt(tags::VENDOR),
        license: opt(tags::LICENSE),
        install_time: h
            .integer(tags::INSTALLTIME)
            .and_then(|v| i64::try_from(v).ok())
            .and_then(Timestamp::from_unix_secs),
        digests: HeaderDigests {
            sha256: None,
            sha1: None,
            sigmd5: h.binary(tags::SIGMD5).map(hex),
            payload_digest: opt(tags::PAYLOADDIGEST),
            signatures,
        },
    })
}
