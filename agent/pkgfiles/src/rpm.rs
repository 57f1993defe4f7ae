//! rpm's view of its files: the file arrays of each installed package's header, read from the
//! database by `guestward-rpmdb` (every backend; each header's own digests verified before it
//! is trusted), decoded with every array length and index checked.

use guestward_core::{HostRoot, Problem};
use guestward_fim::package::{DigestAlgo, PackageDigest, PackageManager, PackageOwner};
use guestward_rpmdb::header::{Header, Ints, Strings, tags};
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
        installed(self.state)
    }
}

/// Whether rpm installed a file in `state` (see [`RpmFile::installed`]).
fn installed(state: Option<u8>) -> bool {
    !matches!(state, Some(states::NOT_INSTALLED | states::NET_SHARED))
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

/// Decodes the file list of one header blob as stored in the database, whole (see
/// [`PackageHeader`] for one file at a time).
pub fn decode(record: u32, blob: &[u8]) -> Result<RpmPackageFiles, RpmFilesError> {
    let header = PackageHeader::parse(record, blob)?;
    let files = header.files().collect();
    let PackageHeader { owner, record, install_time, .. } = header;
    Ok(RpmPackageFiles { owner, record, install_time, files })
}

/// One installed package's header: its name and file arrays, checked, read one file at a
/// time. Decoding every file first cost about 600 bytes a file at once, 82 MB for a package
/// of 139k files (heaptrack), so the largest package set the agent's peak memory; read one at
/// a time, a file's strings live only while it is looked at, and what stays is the blob.
#[derive(Debug)]
pub struct PackageHeader<'a> {
    /// Name, `[epoch:]version-release`, arch.
    pub owner: PackageOwner,
    /// Record number in the database (the key to read it again).
    pub record: u32,
    /// INSTALLTIME (seconds since the epoch).
    pub install_time: Option<u64>,
    arrays: FileArrays<'a>,
}

/// The per-file arrays of a header, each checked to hold one value per file.
#[derive(Debug, Clone)]
struct FileArrays<'a> {
    /// BASENAMES with DIRNAMES and DIRINDEXES, or OLDFILENAMES (rpm < 4.0 packages).
    names: Names<'a>,
    digests: Option<Strings<'a>>,
    algo: DigestAlgo,
    modes: Option<Ints<'a>>,
    sizes: Option<Ints<'a>>,
    users: Option<Strings<'a>>,
    groups: Option<Strings<'a>>,
    flags: Option<Ints<'a>>,
    states: Option<&'a [u8]>,
    links: Option<Strings<'a>>,
    mtimes: Option<Ints<'a>>,
    verify_flags: Option<Ints<'a>>,
}

#[derive(Debug, Clone)]
enum Names<'a> {
    /// DIRNAMES (one per directory, few) and each file's BASENAMES and DIRINDEXES value.
    Split {
        dirs: Vec<&'a [u8]>,
        bases: Strings<'a>,
        dir_indexes: Ints<'a>,
    },
    Old(Strings<'a>),
    /// A package without files (gpg-pubkey).
    None,
}

impl<'a> PackageHeader<'a> {
    /// Parses `blob` and checks its own SHA-256/SHA-1 first
    /// ([`guestward_rpmdb::package_from_blob`]): a header rpm would refuse is refused here
    /// too. Every per-file array must have one value per file and every DIRINDEXES value must
    /// name a directory: a shorter array would misattribute every later file, so the package
    /// is refused rather than guessed at (before any file is read).
    pub fn parse(record: u32, blob: &'a [u8]) -> Result<Self, RpmFilesError> {
        let pkg = guestward_rpmdb::package_from_blob(record, blob).map_err(|(e, _)| e)?;
        let h = Header::parse(blob)?;
        let owner = PackageOwner {
            manager: PackageManager::Rpm,
            name: pkg.name.clone(),
            version: pkg.evr(),
            arch: pkg.arch.clone(),
        };
        let (names, n) = names(&h)?;
        let check = |name: &str, len: Option<usize>| -> Result<(), RpmFilesError> {
            match len {
                Some(l) if l != n => {
                    Err(RpmFilesError::Inconsistent(format!("{name} has {l} values for {n} files")))
                }
                _ => Ok(()),
            }
        };
        let strings = |tag: u32, name: &str| -> Result<Option<Strings<'a>>, RpmFilesError> {
            let s = h.strings(tag);
            check(name, s.as_ref().map(Strings::len))?;
            Ok(s)
        };
        let ints = |tag: u32, name: &str| -> Result<Option<Ints<'a>>, RpmFilesError> {
            let v = h.ints(tag);
            check(name, v.as_ref().map(ExactSizeIterator::len))?;
            Ok(v)
        };
        let states = h.int8_array(tags::FILESTATES);
        check("FILESTATES", states.map(<[u8]>::len))?;
        let algo_n = h.integer(tags::FILEDIGESTALGO).unwrap_or(1);
        let arrays = FileArrays {
            names,
            digests: strings(tags::FILEDIGESTS, "FILEDIGESTS")?,
            algo: digest_algo(algo_n).ok_or(RpmFilesError::UnknownDigestAlgo(algo_n))?,
            modes: ints(tags::FILEMODES, "FILEMODES")?,
            sizes: match h.ints(tags::LONGFILESIZES) {
                Some(long) => {
                    check("FILESIZES", Some(long.len()))?;
                    Some(long)
                }
                None => ints(tags::FILESIZES, "FILESIZES")?,
            },
            users: strings(tags::FILEUSERNAME, "FILEUSERNAME")?,
            groups: strings(tags::FILEGROUPNAME, "FILEGROUPNAME")?,
            flags: ints(tags::FILEFLAGS, "FILEFLAGS")?,
            states,
            links: strings(tags::FILELINKTOS, "FILELINKTOS")?,
            mtimes: ints(tags::FILEMTIMES, "FILEMTIMES")?,
            verify_flags: ints(tags::FILEVERIFYFLAGS, "FILEVERIFYFLAGS")?,
        };
        Ok(Self { owner, record, install_time: h.integer(tags::INSTALLTIME), arrays })
    }

    /// Its files, in header order, each decoded as it is reached.
    pub fn files(&self) -> impl Iterator<Item = RpmFile> + '_ {
        let mut a = self.arrays.clone();
        std::iter::from_fn(move || {
            let path = a.names.next_path()?;
            let next_str = |s: &mut Option<Strings<'a>>| s.as_mut().and_then(Iterator::next);
            let next_int = |v: &mut Option<Ints<'a>>| v.as_mut().and_then(Iterator::next);
            let digest = next_str(&mut a.digests)
                .map(|d| String::from_utf8_lossy(d).trim().to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .map(|hex| PackageDigest { algo: a.algo, hex });
            let owner_name = |s: Option<&[u8]>| {
                s.map_or_else(|| "root".to_owned(), |s| String::from_utf8_lossy(s).into_owned())
            };
            let state = next_state(&mut a.states);
            Some(RpmFile {
                path,
                digest,
                mode: next_int(&mut a.modes).map_or(0, |v| u32::try_from(v).unwrap_or(0)),
                size: next_int(&mut a.sizes).unwrap_or(0),
                user: owner_name(next_str(&mut a.users)),
                group: owner_name(next_str(&mut a.groups)),
                flags: next_int(&mut a.flags).map_or(0, |v| u32::try_from(v).unwrap_or(0)),
                state,
                link_to: next_str(&mut a.links).map_or_else(Vec::new, <[u8]>::to_vec),
                mtime: next_int(&mut a.mtimes).map_or(0, |v| u32::try_from(v).unwrap_or(0)),
                verify_flags: next_int(&mut a.verify_flags)
                    .map_or(verify_flags::ALL, |v| u32::try_from(v).unwrap_or(verify_flags::ALL)),
            })
        })
    }

    /// The path of each file rpm installed (see [`RpmFile::installed`]), in header order,
    /// without the rest of what the header says of it: all the package index keeps.
    pub fn installed_paths(&self) -> impl Iterator<Item = PathBuf> + '_ {
        let mut names = self.arrays.names.clone();
        let mut states = self.arrays.states;
        std::iter::from_fn(move || {
            loop {
                let path = names.next_path()?;
                let state = next_state(&mut states);
                if installed(state) {
                    return Some(path);
                }
            }
        })
    }
}

/// The next file's FILESTATES value (`None` for every file when the header has none).
fn next_state(states: &mut Option<&[u8]>) -> Option<u8> {
    let (first, rest) = states.as_ref()?.split_first()?;
    *states = Some(rest);
    Some(*first)
}

impl Names<'_> {
    /// The next file's path: DIRNAMES[DIRINDEXES[i]] + BASENAMES[i], or OLDFILENAMES[i].
    fn next_path(&mut self) -> Option<PathBuf> {
        match self {
            Names::Split { dirs, bases, dir_indexes } => {
                let base = bases.next()?;
                // Every value was checked against DIRNAMES when the header was parsed.
                let dir = usize::try_from(dir_indexes.next()?).ok().and_then(|d| dirs.get(d))?;
                let mut full = Vec::with_capacity(dir.len() + base.len());
                full.extend_from_slice(dir);
                full.extend_from_slice(base);
                Some(path_of(&full))
            }
            Names::Old(names) => names.next().map(path_of),
            Names::None => None,
        }
    }
}

/// How the header names its files, and how many there are.
fn names<'a>(h: &Header<'a>) -> Result<(Names<'a>, usize), RpmFilesError> {
    if let Some(bases) = h.strings(tags::BASENAMES) {
        let dirs = h
            .string_array_bytes(tags::DIRNAMES)
            .ok_or_else(|| RpmFilesError::Inconsistent("BASENAMES without DIRNAMES".into()))?;
        let dir_indexes = h
            .ints(tags::DIRINDEXES)
            .ok_or_else(|| RpmFilesError::Inconsistent("BASENAMES without DIRINDEXES".into()))?;
        if dir_indexes.len() != bases.len() {
            return Err(RpmFilesError::Inconsistent(format!(
                "DIRINDEXES has {} values for {} files",
                dir_indexes.len(),
                bases.len()
            )));
        }
        if let Some(d) = dir_indexes.clone().find(|d| usize::try_from(*d).map_or(true, |d| d >= dirs.len())) {
            return Err(RpmFilesError::Inconsistent(format!(
                "DIRINDEXES value {d} past {} DIRNAMES",
                dirs.len()
            )));
        }
        let n = bases.len();
        return Ok((Names::Split { dirs, bases, dir_indexes }, n));
    }
    Ok(match h.strings(tags::OLDFILENAMES) {
        Some(old) => {
            let n = old.len();
            (Names::Old(old), n)
        }
        None => (Names::None, 0),
    })
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

/// Reads every header of the database `found` and hands each package to `sink`, its files
/// read one at a time through [`PackageHeader::files`] (`want`: only these records, `None` for
/// all). A header that cannot be decoded becomes a problem naming its record.
pub fn read_headers(
    root: &HostRoot,
    found: &Found,
    want: Option<&[u32]>,
    sink: &mut dyn FnMut(&PackageHeader<'_>),
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let shown: &Path = &found.host_path;
    let mut on_blob = |b: RawBlob| {
        if want.is_some_and(|w| !w.contains(&b.record)) {
            return;
        }
        let record = b.record;
        let decoded = match b.data {
            Ok(bytes) => PackageHeader::parse(record, &bytes).map(|h| sink(&h)),
            Err(e) => Err(RpmFilesError::from(e)),
        };
        if let Err(e) = decoded {
            problems.push(
                Problem::new(
                    "rpm_header",
                    format!("rpm header record {record}: {e}; its files are not checked"),
                )
                .with_path(shown.display().to_string()),
            );
        }
    };
    let result = guestward_rpmdb::for_each_blob(root, found, &Limits::default(), &mut on_blob);
    match result {
        Ok(more) => problems.extend(more),
        Err(e) => problems.push(e.to_problem()),
    }
    problems
}

/// [`read_headers`], each package's files decoded whole: for one package at a time (the
/// package index's cache of recent lists, a single package's verification).
pub fn read_packages(
    root: &HostRoot,
    found: &Found,
    want: Option<&[u32]>,
    sink: &mut dyn FnMut(RpmPackageFiles),
) -> Vec<Problem> {
    read_headers(root, found, want, &mut |h| {
        sink(RpmPackageFiles {
            owner: h.owner.clone(),
            record: h.record,
            install_time: h.install_time,
            files: h.files().collect(),
        });
    })
}
