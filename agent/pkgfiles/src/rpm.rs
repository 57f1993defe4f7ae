//! rpm's view of its files: the file arrays of each installed package's header, read from the
//! database by `guestward-rpmdb` (every backend; each header's own digests verified before it
//! is trusted), decoded with every array length and index checked.

use guestward_core::{HostRoot, Problem};
use guestward_fim::package::{DigestAlgo, PackageDigest, PackageManager, PackageOwner};
use guestward_rpmdb::header::{Header, tags};
use guestward_rpmdb::{Found, HeaderError, Limits, RawBlob};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `FILEFLAGS` bits (rpm's `rpmfileAttrs`).
pub mod flags {
    /// `%config`.
    pub const CONFIG: u32 = 1 << 0;
    /// `%doc`.
    pub const DOC: u32 = 1 << 1;
    /// `%config(missingok)`: its absence is not reported.
    pub const MISSINGOK: u32 = 1 << 3;
    /// `%ghost`: not in the payload; only its existence, mode and owner mean something.
    pub const GHOST: u32 = 1 << 6;
}

/// `FILESTATES` values (rpm's `rpmfileState`).
pub mod states {
    /// Installed by this package.
    pub const NORMAL: u8 = 0;
    /// Replaced by another package's file: only its existence is checked.
    pub const REPLACED: u8 = 1;
    /// Not installed (`--excludedocs`, `%_install_langs`): not checked.
    pub const NOT_INSTALLED: u8 = 2;
    /// On a network share (`%_netsharedpath`): not checked.
    pub const NET_SHARED: u8 = 3;
    /// The other architecture's copy of a multilib file: no content checks.
    pub const WRONG_COLOR: u8 = 4;
}

/// `FILEVERIFYFLAGS` bits (rpm's `rpmVerifyAttrs`), also the attributes `verify` reports.
pub mod verify_flags {
    /// Content digest (`5`).
    pub const DIGEST: u32 = 1 << 0;
    /// Size (`S`).
    pub const SIZE: u32 = 1 << 1;
    /// Symlink target (`L`).
    pub const LINKTO: u32 = 1 << 2;
    /// Owner (`U`).
    pub const USER: u32 = 1 << 3;
    /// Group (`G`).
    pub const GROUP: u32 = 1 << 4;
    /// Modification time (`T`).
    pub const MTIME: u32 = 1 << 5;
    /// Mode, type included (`M`).
    pub const MODE: u32 = 1 << 6;
    /// What a package without `FILEVERIFYFLAGS` asks for: everything.
    pub const ALL: u32 = u32::MAX;
}

/// One file of an rpm package header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmFile {
    /// Absolute host path.
    pub path: PathBuf,
    /// Content digest (regular files; `None` when the header records an empty one).
    pub digest: Option<PackageDigest>,
    /// `st_mode` (type and permissions).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Owner name.
    pub user: String,
    /// Group name.
    pub group: String,
    /// [`flags`] bits.
    pub flags: u32,
    /// [`states`] value; `None` when the header has no FILESTATES (rpm then checks the file).
    pub state: Option<u8>,
    /// Symlink target (empty for other types).
    pub link_to: Vec<u8>,
    /// Modification time (seconds).
    pub mtime: u32,
    /// [`verify_flags`] bits.
    pub verify_flags: u32,
}

impl RpmFile {
    /// Whether rpm installed this file (its state is not `not installed` or `net shared`).
    pub fn installed(&self) -> bool {
        !matches!(self.state, Some(states::NOT_INSTALLED | states::NET_SHARED))
    }
}

/// The files of one installed rpm package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmPackageFiles {
    /// Name, `[epoch:]version-release`, arch.
    pub owner: PackageOwner,
    /// Record number in the database (the key to read it again).
    pub record: u32,
    /// INSTALLTIME (seconds since the epoch).
    pub install_time: Option<u64>,
    /// Its files, in header order.
    pub files: Vec<RpmFile>,
}

/// Why a header's file list could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RpmFilesError {
    /// The header itself is not valid (or its digest is BAD).
    #[error("{0}")]
    Header(#[from] HeaderError),
    /// An array's length differs from the number of files, or an index is out of range.
    #[error("inconsistent file arrays: {0}")]
    Inconsistent(String),
    /// FILEDIGESTALGO names an algorithm rpm does not define.
    #[error("unknown file digest algorithm {0}")]
    UnknownDigestAlgo(u64),
}

/// rpm's `FILEDIGESTALGO` number (a PGP hash algorithm id) as a [`DigestAlgo`].
pub fn digest_algo(n: u64) -> Option<DigestAlgo> {
    Some(match n {
        1 => DigestAlgo::Md5,
        2 => DigestAlgo::Sha1,
        8 => DigestAlgo::Sha256,
        9 => DigestAlgo::Sha384,
        10 => DigestAlgo::Sha512,
        11 => DigestAlgo::Sha224,
        _ => return None,
    })
}

fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

/// Decodes the file list of one header blob as stored in the database. The blob is parsed and
/// its own SHA-256/SHA-1 checked first ([`guestward_rpmdb::package_from_blob`]): a header rpm
/// would refuse is refused here too.
pub fn decode(record: u32, blob: &[u8]) -> Result<RpmPackageFiles, RpmFilesError> {
    let pkg = guestward_rpmdb::package_from_blob(record, blob).map_err(|(e, _)| e)?;
    let h = Header::parse(blob)?;
    let owner = PackageOwner {
        manager: PackageManager::Rpm,
        name: pkg.name.clone(),
        version: pkg.evr(),
        arch: pkg.arch.clone(),
    };
    let paths = file_paths(&h)?;
    let n = paths.len();
    // Every per-file array must have one value per file; a shorter one would misattribute
    // every later file, so the package is refused rather than guessed at.
    let check = |name: &str, len: Option<usize>| -> Result<(), RpmFilesError> {
        match len {
            Some(l) if l != n => {
                Err(RpmFilesError::Inconsistent(format!("{name} has {l} values for {n} files")))
            }
            _ => Ok(()),
        }
    };
    let digests = h.string_array(tags::FILEDIGESTS);
    let modes = h.int_array(tags::FILEMODES);
    let sizes = h.int_array(tags::LONGFILESIZES).or_else(|| h.int_array(tags::FILESIZES));
    let users = h.string_array(tags::FILEUSERNAME);
    let groups = h.string_array(tags::FILEGROUPNAME);
    let fflags = h.int_array(tags::FILEFLAGS);
    let fstates = h.int8_array(tags::FILESTATES);
    let links = h.string_array_bytes(tags::FILELINKTOS);
    let mtimes = h.int_array(tags::FILEMTIMES);
    let vflags = h.int_array(tags::FILEVERIFYFLAGS);
    check("FILEDIGESTS", digests.as_ref().map(Vec::len))?;
    check("FILEMODES", modes.as_ref().map(Vec::len))?;
    check("FILESIZES", sizes.as_ref().map(Vec::len))?;
    check("FILEUSERNAME", users.as_ref().map(Vec::len))?;
    check("FILEGROUPNAME", groups.as_ref().map(Vec::len))?;
    check("FILEFLAGS", fflags.as_ref().map(Vec::len))?;
    check("FILESTATES", fstates.map(<[u8]>::len))?;
    check("FILELINKTOS", links.as_ref().map(Vec::len))?;
    check("FILEMTIMES", mtimes.as_ref().map(Vec::len))?;
    check("FILEVERIFYFLAGS", vflags.as_ref().map(Vec::len))?;
    let algo_n = h.integer(tags::FILEDIGESTALGO).unwrap_or(1);
    let algo = digest_algo(algo_n).ok_or(RpmFilesError::UnknownDigestAlgo(algo_n))?;
    let mut files = Vec::with_capacity(n);
    for (i, path) in paths.into_iter().enumerate() {
        let digest = digests
            .as_ref()
            .map(|d| d[i].trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .map(|hex| PackageDigest { algo, hex });
        files.push(RpmFile {
            path,
            digest,
            mode: modes.as_ref().map_or(0, |v| u32::try_from(v[i]).unwrap_or(0)),
            size: sizes.as_ref().map_or(0, |v| v[i]),
            user: users.as_ref().map_or_else(|| "root".to_owned(), |v| v[i].clone().into_owned()),
            group: groups.as_ref().map_or_else(|| "root".to_owned(), |v| v[i].clone().into_owned()),
            flags: fflags.as_ref().map_or(0, |v| u32::try_from(v[i]).unwrap_or(0)),
            state: fstates.map(|v| v[i]),
            link_to: links.as_ref().map_or_else(Vec::new, |v| v[i].to_vec()),
            mtime: mtimes.as_ref().map_or(0, |v| u32::try_from(v[i]).unwrap_or(0)),
            verify_flags: vflags
                .as_ref()
                .map_or(verify_flags::ALL, |v| u32::try_from(v[i]).unwrap_or(verify_flags::ALL)),
        });
    }
    Ok(RpmPackageFiles { owner, record, install_time: h.integer(tags::INSTALLTIME), files })
}

/// The file paths: DIRNAMES[DIRINDEXES[i]] + BASENAMES[i], or OLDFILENAMES (rpm < 4.0
/// packages); none for a package without files (gpg-pubkey).
fn file_paths(h: &Header<'_>) -> Result<Vec<PathBuf>, RpmFilesError> {
    if let Some(bases) = h.string_array_bytes(tags::BASENAMES) {
        let dirs = h
            .string_array_bytes(tags::DIRNAMES)
            .ok_or_else(|| RpmFilesError::Inconsistent("BASENAMES without DIRNAMES".into()))?;
        let idx = h
            .int_array(tags::DIRINDEXES)
            .ok_or_else(|| RpmFilesError::Inconsistent("BASENAMES without DIRINDEXES".into()))?;
        if idx.len() != bases.len() {
            return Err(RpmFilesError::Inconsistent(format!(
                "DIRINDEXES has {} values for {} files",
                idx.len(),
                bases.len()
            )));
        }
        let mut out = Vec::with_capacity(bases.len());
        for (base, d) in bases.iter().zip(idx) {
            let dir = usize::try_from(d).ok().and_then(|d| dirs.get(d)).ok_or_else(|| {
                RpmFilesError::Inconsistent(format!("DIRINDEXES value {d} past {} DIRNAMES", dirs.len()))
            })?;
            let mut full = Vec::with_capacity(dir.len() + base.len());
            full.extend_from_slice(dir);
            full.extend_from_slice(base);
            out.push(path_of(&full));
        }
        return Ok(out);
    }
    Ok(h.string_array_bytes(tags::OLDFILENAMES).unwrap_or_default().into_iter().map(path_of).collect())
}

/// The rpm databases looked at, as [`guestward_rpmdb::DEFAULT_RPM_DIRS`].
pub fn default_dirs() -> Vec<PathBuf> {
    guestward_rpmdb::DEFAULT_RPM_DIRS.iter().map(PathBuf::from).collect()
}

/// Finds the rpm database under `root` (`None` and no problem when there is none: a dpkg
/// host). Problems are for a database that exists but cannot be used.
pub fn find(root: &HostRoot, dirs: &[PathBuf]) -> (Option<Found>, Vec<Problem>) {
    let (found, errors) = guestward_rpmdb::find_database(root, dirs);
    let problems = errors
        .iter()
        .filter(|e| !matches!(e, guestward_rpmdb::RpmdbError::NotFound { .. }))
        .map(guestward_rpmdb::RpmdbError::to_problem)
        .collect();
    (found, problems)
}

/// Reads every header of the database `found` and hands each decoded package to `sink`
/// (`want`: only these records, `None` for all). A header that cannot be decoded becomes a
/// problem naming its record.
pub fn read_packages(
    root: &HostRoot,
    found: &Found,
    want: Option<&[u32]>,
    sink: &mut dyn FnMut(RpmPackageFiles),
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let shown: &Path = &found.host_path;
    let mut on_blob = |b: RawBlob| {
        if want.is_some_and(|w| !w.contains(&b.record)) {
            return;
        }
        let decoded = b.data.map_err(RpmFilesError::from).and_then(|bytes| decode(b.record, &bytes));
        match decoded {
            Ok(p) => sink(p),
            Err(e) => problems.push(
                Problem::new(
                    "rpm_header",
                    format!("rpm header record {}: {e}; its files are not checked", b.record),
                )
                .with_path(shown.display().to_string()),
            ),
        }
    };
    let result = guestward_rpmdb::for_each_blob(root, found, &Limits::default(), &mut on_blob);
    match result {
        Ok(more) => problems.extend(more),
        Err(e) => problems.push(e.to_problem()),
    }
    problems
}
