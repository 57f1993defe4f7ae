//! Reads rpm package databases in pure Rust, read-only, without librpm or libdb.
//!
//! All three storage formats rpm has used are supported, detected by file presence and
//! magic bytes in a configurable rpm directory:
//! - [`Backend::Sqlite`]: `rpmdb.sqlite` (Amazon Linux 2023, Fedora, RHEL 9), treated as
//!   hostile: under a non-live root a private copy is read (nothing is written under the
//!   root, a `-wal` is still applied), the schema must be rpm's, every query runs under a
//!   deadline with no temporary files, and records are read one by one so damage costs only
//!   what it touches (see the `sqlite` module);
//! - [`Backend::Bdb`]: Berkeley DB hash `Packages` (Amazon Linux 2, RHEL/CentOS 7-8), both
//!   byte orders, read page by page ([`bdb`]);
//! - [`Backend::Ndb`]: rpm's own `Packages.db` (SUSE) ([`ndb`]).
//!
//! Each stored header blob is parsed by a bounded parser ([`header`]) and its own SHA-256 and
//! SHA-1 digests are checked as rpm checks them; a header that fails is listed in
//! [`RpmInventory::corrupt`], never among the packages. A damaged database yields every
//! package that could be read plus [`RpmInventory::problems`] naming byte offsets; nothing
//! here panics or loops on bad input (the readers are fuzzed: see `fuzz/`).
//!
//! [`vercmp`] orders rpm versions exactly as rpm does (`~`, `^`, epochs).
//!
//! The readers are the default feature `collect` (SQLite, the digests, the page formats).
//! Without it the crate is the model ([`RpmInventory`] and its parts), [`vercmp`], [`Limits`]
//! and [`render_table`], for crates that carry or show reports. Integer conversions in the
//! parsers are checked (`clippy::cast_possible_truncation` is on): a length read from a file
//! that does not fit is reported, never truncated.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]
#![warn(missing_docs)]
#![warn(clippy::cast_possible_truncation)]

#[cfg(feature = "collect")]
pub mod bdb;
#[cfg(feature = "collect")]
mod error;
#[cfg(feature = "collect")]
pub mod header;
mod model;
#[cfg(feature = "collect")]
pub mod ndb;
mod render;
#[cfg(feature = "collect")]
pub mod source;
#[cfg(feature = "collect")]
mod sqlite;
pub mod vercmp;

#[cfg(feature = "collect")]
pub use error::{FormatError, RpmdbError};
#[cfg(feature = "collect")]
pub use header::HeaderError;
#[cfg(feature = "collect")]
pub use model::package_from_blob;
pub use model::{Backend, CorruptHeader, HeaderDigests, RpmInventory, RpmPackage};
pub use render::render_table;

#[cfg(feature = "collect")]
use guestward_core::HostRoot;
#[cfg(feature = "collect")]
use source::{FileSource, ReadAt};
#[cfg(feature = "collect")]
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where rpm keeps its database, newest convention last; both are looked at by default.
pub const DEFAULT_RPM_DIRS: [&str; 2] = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

#[cfg(feature = "collect")]
/// One header blob as stored in the database, before parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBlob {
    /// Record number (sqlite `hnum`, bdb key, ndb package index).
    pub record: u32,
    /// Byte offset of the blob in the file, when the format has one.
    pub offset: Option<u64>,
    /// The blob, or why it was not loaded (over the size limit).
    pub data: Result<Vec<u8>, HeaderError>,
}

/// Bounds on what one database read may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header blob loaded (one is held in memory at a time). Real headers are
    /// kilobytes to a few MiB (file lists); rpm's own limit is 256 MiB.
    pub max_header_bytes: u64,
    /// Most header records read from one database.
    pub max_headers: usize,
    /// Wall-clock budget for reading one `rpmdb.sqlite`: opening, the schema check, listing
    /// the records and fetching every blob. SQLite's progress handler enforces it inside
    /// each query, so a hostile database cannot keep a scan busy for longer; the packages
    /// read before it ran out are kept and the rest is reported. Default
    /// [`DEFAULT_SQLITE_TIME_LIMIT`].
    pub sqlite_time_limit: Duration,
    /// Under a non-live root (`scan --root`), `rpmdb.sqlite` and its `-wal`/`-journal` are
    /// copied into a private temporary directory before SQLite sees them (see
    /// `src/sqlite/open.rs` for why); a database larger than this together with its
    /// sidecars is refused instead. Default [`DEFAULT_MAX_SNAPSHOT_COPY_BYTES`].
    pub max_snapshot_copy_bytes: u64,
}

/// Default [`Limits::sqlite_time_limit`]. A real database of a few thousand packages reads in
/// well under a second from a warm disk; the margin is for cold block storage (an EBS
/// volume restored from a snapshot fetches every block on first read).
pub const DEFAULT_SQLITE_TIME_LIMIT: Duration = Duration::from_secs(30);

/// Default [`Limits::max_snapshot_copy_bytes`]: above the largest `rpmdb.sqlite` seen on
/// real hosts (a desktop with ~2,500 packages is around 200 MiB).
pub const DEFAULT_MAX_SNAPSHOT_COPY_BYTES: u64 = 512 << 20;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 << 20,
            max_headers: 200_000,
            sqlite_time_limit: DEFAULT_SQLITE_TIME_LIMIT,
            max_snapshot_copy_bytes: DEFAULT_MAX_SNAPSHOT_COPY_BYTES,
        }
    }
}

#[cfg(feature = "collect")]
/// Decides the backend of a file from its first bytes.
pub fn detect_format(start: &[u8]) -> Option<Backend> {
    if start.starts_with(b"SQLite format 3\0") {
        Some(Backend::Sqlite)
    } else if ndb::looks_like_ndb(start) {
        Some(Backend::Ndb)
    } else if bdb::looks_like_bdb_hash(start) {
        Some(Backend::Bdb)
    } else {
        None
    }
}

#[cfg(feature = "collect")]
/// A database file found in an rpm directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file as seen on the host (e.g. `/var/lib/rpm/rpmdb.sqlite`).
    pub host_path: PathBuf,
    /// Its format, from its magic bytes.
    pub backend: Backend,
}

#[cfg(feature = "collect")]
/// Looks in one rpm directory (a host path, read through `root`) for database files, in the
/// order rpm prefers them when several exist (sqlite, ndb, bdb). A file whose magic does not
/// match its name is reported as [`RpmdbError::UnknownFormat`]; a missing file is not an
/// error.
pub fn detect_in_dir(root: &HostRoot, dir: &Path) -> (Vec<Found>, Vec<RpmdbError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for expected in [Backend::Sqlite, Backend::Ndb, Backend::Bdb] {
        let host_path = dir.join(expected.file_name());
        if !root.exists(&host_path) {
            continue;
        }
        let mut start = [0u8; 512];
        let read = root.open(&host_path).and_then(|(f, real)| {
            let src = FileSource::new(f).map_err(|e| guestward_core::HostFsError::from_io(&real, e))?;
            let n = usize::try_from(src.len()).unwrap_or(usize::MAX).min(start.len());
            src.read_exact_at(&mut start[..n], 0)
                .map_err(|e| guestward_core::HostFsError::from_io(&real, e))?;
            Ok(n)
        });
        match read {
            Ok(n) => match detect_format(&start[..n]) {
                Some(b) if b == expected => found.push(Found { host_path, backend: b }),
                other => errors.push(RpmdbError::UnknownFormat {
                    path: host_path,
                    detail: match other {
                        Some(b) => format!("named like a {expected} database but has {b} magic"),
                        None => format!("no {expected} magic in its first bytes"),
                    },
                }),
            },
            Err(e) => errors.push(e.into()),
        }
    }
    (found, errors)
}

#[cfg(feature = "collect")]
/// Parses every raw blob into packages or corrupt entries of `inv`.
fn absorb(inv: &mut RpmInventory, path: &Path, blob: RawBlob) {
    let result = blob.data.map_err(|e| (e, None)).and_then(|bytes| package_from_blob(blob.record, &bytes));
    match result {
        Ok(p) => inv.packages.push(p),
        Err((source, nevra)) => {
            let e = RpmdbError::Header {
                path: path.to_owned(),
                record: blob.record,
                offset: blob.offset,
                source,
            };
            inv.corrupt.push(CorruptHeader {
                record: blob.record,
                offset: blob.offset,
                nevra,
                code: e.code().to_owned(),
                reason: e.to_string(),
            });
        }
    }
}

#[cfg(feature = "collect")]
fn format_problem(path: &Path, backend: Backend, e: FormatError) -> guestward_core::Problem {
    RpmdbError::Format { path: path.to_owned(), backend: backend.as_str(), source: e }.to_problem()
}

#[cfg(feature = "collect")]
/// Reads blobs from a Berkeley DB or NDB byte source. Shared by files and the fuzz targets.
pub fn read_page_format<R: ReadAt + ?Sized>(
    src: &R,
    backend: Backend,
    shown_path: &Path,
    limits: &Limits,
) -> Result<RpmInventory, RpmdbError> {
    let mut inv = RpmInventory {
        db_path: shown_path.display().to_string(),
        backend,
        packages: Vec::new(),
        corrupt: Vec::new(),
        problems: Vec::new(),
    };
    let mut count = 0usize;
    let mut over = false;
    let mut sink = |b: RawBlob| {
        if count >= limits.max_headers {
            over = true;
            return;
        }
        count += 1;
        absorb(&mut inv, shown_path, b);
    };
    let result = match backend {
        Backend::Bdb => bdb::read_blobs(src, limits.max_header_bytes, &mut sink),
        Backend::Ndb => ndb::read_blobs(src, limits.max_header_bytes, &mut sink),
        Backend::Sqlite => {
            return Err(RpmdbError::UnknownFormat {
                path: shown_path.to_owned(),
                detail: "sqlite is not a page format".into(),
            });
        }
    };
    let problems = result.map_err(|source| RpmdbError::Format {
        path: shown_path.to_owned(),
        backend: backend.as_str(),
        source,
    })?;
    inv.problems.extend(problems.into_iter().map(|e| format_problem(shown_path, backend, e)));
    if over {
        inv.problems.push(
            RpmdbError::TooManyHeaders { path: shown_path.to_owned(), limit: limits.max_headers }
                .to_problem(),
        );
    }
    Ok(inv)
}

#[cfg(feature = "collect")]
/// Reads one database file. `host_path` is the path on the host, read through `root`
/// (symlinks cannot escape it). The error is for a file that cannot be read at all;
/// damage inside it is reported in the inventory.
pub fn read_database(
    root: &HostRoot,
    host_path: &Path,
    backend: Backend,
    limits: &Limits,
) -> Result<RpmInventory, RpmdbError> {
    match backend {
        Backend::Sqlite => {
            let mut inv = RpmInventory {
                db_path: host_path.display().to_string(),
                backend,
                packages: Vec::new(),
                corrupt: Vec::new(),
                problems: Vec::new(),
            };
            let problems =
                sqlite::read_blobs(root, host_path, limits, &mut |b| absorb(&mut inv, host_path, b))?;
            inv.problems.extend(problems.iter().map(RpmdbError::to_problem));
            Ok(inv)
        }
        Backend::Bdb | Backend::Ndb => {
            let (file, real) = root.open(host_path)?;
            let src = FileSource::new(file).map_err(|e| guestward_core::HostFsError::from_io(&real, e))?;
            read_page_format(&src, backend, host_path, limits)
        }
    }
}

#[cfg(feature = "collect")]
/// The result of looking through the configured rpm directories.
#[derive(Debug)]
pub struct DirScan {
    /// The database read, if one was found and could be opened.
    pub inventory: Option<RpmInventory>,
    /// Everything that went wrong, plus notes about extra databases not read.
    pub errors: Vec<RpmdbError>,
    /// Other database files found but not read (only one database is authoritative).
    pub ignored: Vec<Found>,
}

#[cfg(feature = "collect")]
/// `dirs` that resolve inside `root`, each real directory once (the
/// `/var/lib/rpm -> /usr/lib/sysimage/rpm` symlink names the same database twice).
fn distinct_dirs<'a>(root: &'a HostRoot, dirs: &'a [PathBuf]) -> impl Iterator<Item = &'a PathBuf> + 'a {
    let mut seen = Vec::new();
    dirs.iter().filter(move |dir| match root.resolve(dir) {
        Ok(real) if !seen.contains(&real) => {
            seen.push(real);
            true
        }
        _ => false,
    })
}

#[cfg(feature = "collect")]
/// Finds and reads the rpm database: the directories are tried in order (a directory that
/// resolves to one already seen, e.g. the `/var/lib/rpm -> /usr/lib/sysimage/rpm` symlink,
/// is skipped) and the first database found that opens is read. When no directory holds one, `errors`
/// contains [`RpmdbError::NotFound`].
pub fn read_rpm_dirs(root: &HostRoot, dirs: &[PathBuf], limits: &Limits) -> DirScan {
    let mut candidates = Vec::new();
    let mut errors = Vec::new();
    for dir in distinct_dirs(root, dirs) {
        let (found, errs) = detect_in_dir(root, dir);
        candidates.extend(found);
        errors.extend(errs);
    }
    if candidates.is_empty() {
        let dirs = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
        errors.push(RpmdbError::NotFound { dirs });
        return DirScan { inventory: None, errors, ignored: Vec::new() };
    }
    // The first database that opens is authoritative; one that cannot be opened at all (say a
    // zero-length rpmdb.sqlite left by a failed migration) does not hide the next.
    let mut ignored = Vec::new();
    let mut inventory = None;
    for found in candidates {
        if inventory.is_some() {
            ignored.push(found);
            continue;
        }
        match read_database(root, &found.host_path, found.backend, limits) {
            Ok(inv) => inventory = Some(inv),
            Err(e) => errors.push(e),
        }
    }
    DirScan { inventory, errors, ignored }
}

#[cfg(feature = "collect")]
/// Streams the raw header blobs of one database file to `sink`, unparsed, with the same bounds
/// as [`read_database`] (at most [`Limits::max_headers`] blobs, each at most
/// [`Limits::max_header_bytes`]). For readers that need more of each header than
/// [`RpmPackage`] keeps (the file lists of `guestward-pkgfiles`); parse each blob with
/// [`package_from_blob`] first, which verifies its digests. The error is for a file that
/// cannot be read at all; damage inside it is returned as problems.
pub fn for_each_blob(
    root: &HostRoot,
    found: &Found,
    limits: &Limits,
    sink: &mut dyn FnMut(RawBlob),
) -> Result<Vec<guestward_core::Problem>, RpmdbError> {
    let path = found.host_path.as_path();
    let mut count = 0usize;
    let mut over = false;
    let mut bounded = |b: RawBlob| {
        if count >= limits.max_headers {
            over = true;
            return;
        }
        count += 1;
        sink(b);
    };
    let mut problems = match found.backend {
        Backend::Sqlite => {
            sqlite::read_blobs(root, path, limits, &mut bounded)?.iter().map(RpmdbError::to_problem).collect()
        }
        Backend::Bdb | Backend::Ndb => {
            let (file, real) = root.open(path)?;
            let src = FileSource::new(file).map_err(|e| guestward_core::HostFsError::from_io(&real, e))?;
            let read = match found.backend {
                Backend::Bdb => bdb::read_blobs(&src, limits.max_header_bytes, &mut bounded),
                _ => ndb::read_blobs(&src, limits.max_header_bytes, &mut bounded),
            };
            let problems = read.map_err(|source| RpmdbError::Format {
                path: path.to_owned(),
                backend: found.backend.as_str(),
                source,
            })?;
            problems.into_iter().map(|e| format_problem(path, found.backend, e)).collect::<Vec<_>>()
        }
    };
    if over {
        problems.push(
            RpmdbError::TooManyHeaders { path: path.to_owned(), limit: limits.max_headers }.to_problem(),
        );
    }
    Ok(problems)
}

#[cfg(feature = "collect")]
/// The database [`read_rpm_dirs`] would read: the first file found in `dirs` (in rpm's order
/// of preference) whose magic matches its name, without reading it. `None` with the errors
/// met (including [`RpmdbError::NotFound`]) when there is none.
pub fn find_database(root: &HostRoot, dirs: &[PathBuf]) -> (Option<Found>, Vec<RpmdbError>) {
    let mut errors = Vec::new();
    for dir in distinct_dirs(root, dirs) {
        let (found, errs) = detect_in_dir(root, dir);
        errors.extend(errs);
        if let Some(first) = found.into_iter().next() {
            return (Some(first), errors);
        }
    }
    let dirs = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    errors.push(RpmdbError::NotFound { dirs });
    (None, errors)
}
