//! Baseline integrity: a keyed seal over the rows of `fim.db`, so that a baseline rewritten
//! behind the agent's back (a row's hash replaced by a trojan's, a row deleted to hide a
//! removed file) is detected at the next check and reported as tampering, and what the agent
//! cannot verify is said, never passed over.
//!
//! AIDE users get this by keeping the database read-only somewhere else. Our database has to
//! stay writable where the agent runs (the realtime monitor updates it), so the *key* lives
//! elsewhere instead: `fim.baseline_key_file` (e.g. `/etc/guestward/fim-baseline.key`, mode
//! 0600, never inside the state directory: a key next to the database would protect nothing).
//! `fim init` creates it when it is configured and absent.
//!
//! Two levels, both HMAC-SHA256 under that key:
//! - **rows**: each row of `files` (and of `staging`/`resume`, so a resumed scan cannot be fed
//!   forged rows either) carries `mac = HMAC(key, canonical row)`, the canonical row including
//!   the path. A rewritten or inserted row is detected and named by its path.
//! - **set**: `meta['baseline.seal']` holds the number of rows, the XOR of every row MAC, and
//!   `HMAC(key, count ‖ xor)`. A deleted row (the way to hide a removed file) or rows spliced
//!   from elsewhere change the count or the XOR. The store updates the seal in the same
//!   transaction as each write (a realtime update costs two point reads), so the seal is never
//!   recomputed from what is on disk, which would launder a tampering.
//!
//! Limits, stated: whoever can read the key (root, normally) can reseal anything, so the seal
//! protects against writers of the state directory who cannot read the key, against offline
//! edits of the database, and makes silent damage loud. Putting back a whole older database
//! with its own valid seal (rollback) cannot be detected with a key kept on the same host.
//!
//! **Seam for the transport**: once reports reach a collector, the collector's acknowledgement
//! of the baseline's root digest ([`crate::store::Store::root_digest`]: SHA-256 over the
//! canonical rows in path order, unkeyed) replaces this key: the agent sends the root digest
//! after each accepted baseline, the collector keeps it off the host and acknowledges it, and
//! a check compares the recomputed root digest with the last acknowledged one, which also
//! detects a rollback. [`KeyState`] is the one place a check learns what it can verify with,
//! and [`BaselineCheck`] is what it reports either way.

pub use crate::model::{BaselineCheck, Integrity, MAX_BASELINE_PROBLEMS};
use crate::record::FileRecord;
use hmac::{KeyInit, Mac};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Bytes of key material (256 bits), stored as 64 hexadecimal characters.
pub const KEY_BYTES: usize = 32;

const ROW_DOMAIN: &[u8] = b"guestward-fim-row-v1\0";
const SEAL_DOMAIN: &[u8] = b"guestward-fim-seal-v1\0";
/// Domain of the tag over the trust anchor's kept verdict (see [`crate::verdict`]).
const VERDICT_DOMAIN: &[u8] = b"guestward-fim-anchor-verdict-v1\0";
const KEY_ID_DOMAIN: &[u8] = b"guestward-fim-key-id-v1\0";

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// It does not exist.
    #[error("{}: no such key file", path.display())]
    Missing {
        /// The key file.
        path: PathBuf,
    },
    /// It could not be opened, read or created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It is not a regular file (a FIFO would block us, a symlink could point anywhere).
    #[error("{}: the key must be a regular file, not a {kind}", path.display())]
    NotRegular {
        /// The key file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// Others can read or write it, or it belongs to another user.
    #[error("{}: the key must be owned by root or by this user and have mode 0600 or stricter (found owner {uid}, mode {mode:04o})", path.display())]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not 64 hexadecimal characters.
    #[error("{}: the key must be 64 hexadecimal characters (256 bits) and a newline", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
}

/// The baseline key, loaded. Its bytes are never printed (the `Debug` form shows the id).
#[derive(Clone)]
pub struct BaselineKey {
    mac: HmacSha256,
    id: String,
    path: PathBuf,
}

impl std::fmt::Debug for BaselineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaselineKey").field("id", &self.id).field("path", &self.path).finish()
    }
}

impl BaselineKey {
    /// A key from raw bytes (the files hold them in hex). `None` only if HMAC refused the
    /// length, which it never does (HMAC takes keys of any length).
    pub fn from_bytes(bytes: &[u8; KEY_BYTES], path: &Path) -> Option<Self> {
        let mac = HmacSha256::new_from_slice(bytes).ok()?;
        let mut id_mac = mac.clone();
        id_mac.update(KEY_ID_DOMAIN);
        let id = crate::record::hex(id_mac.finalize().into_bytes().get(..8)?);
        Some(Self { mac, id, path: path.to_path_buf() })
    }

    /// Loads `path`: a regular file, owned by root or us, mode 0600 or stricter, holding 64
    /// hex characters. Opened without following symlinks and without blocking on a FIFO.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        use guestward_core::HostFsError;
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let io = |source: std::io::Error| KeyError::Io { path: path.to_path_buf(), source };
        // The shared door for files outside a root: no final symlink, no blocking on a FIFO,
        // a regular file checked on the open descriptor.
        let file = match guestward_core::open_regular_file(path, false) {
            Ok(f) => f,
            Err(HostFsError::NotFound { .. }) => return Err(KeyError::Missing { path: path.to_path_buf() }),
            Err(HostFsError::NotRegularFile { kind, .. }) => {
                return Err(KeyError::NotRegular { path: path.to_path_buf(), kind });
            }
            Err(HostFsError::SymlinkLoop { .. }) => {
                return Err(KeyError::NotRegular { path: path.to_path_buf(), kind: "symlink" });
            }
            Err(e) => return Err(io(std::io::Error::other(e.to_string()))),
        };
        let meta = file.metadata().map_err(io)?;
        let me = nix::unistd::geteuid().as_raw();
        if meta.mode() & 0o077 != 0 || (meta.uid() != 0 && meta.uid() != me) {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                uid: meta.uid(),
                mode: meta.mode() & 0o7777,
            });
        }
        let mut text = Vec::new();
        file.take(256).read_to_end(&mut text).map_err(io)?;
        let hex = text.trim_ascii();
        let malformed = || KeyError::Malformed { path: path.to_path_buf() };
        if hex.len() != KEY_BYTES * 2 {
            return Err(malformed());
        }
        let mut bytes = [0u8; KEY_BYTES];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| malformed())?;
            let b = u8::from_str_radix(s, 16).map_err(|_| malformed())?;
            if let Some(slot) = bytes.get_mut(i) {
                *slot = b;
            }
        }
        Self::from_bytes(&bytes, path).ok_or_else(malformed)
    }

    /// Creates `path` with a fresh random key (mode 0600, never overwriting: `O_EXCL`, no
    /// symlink followed), creating its directory (0700) if needed. Another process creating
    /// it first is fine: that key is loaded.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        use std::io::{Read, Write};
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |source: std::io::Error| KeyError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        let mut bytes = [0u8; KEY_BYTES];
        std::fs::File::open("/dev/urandom").and_then(|mut r| r.read_exact(&mut bytes)).map_err(io)?;
        let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC;
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flags.bits())
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Self::load(path),
            Err(e) => return Err(io(e)),
        };
        let text = format!("{}\n", crate::record::hex(&bytes));
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
        Self::from_bytes(&bytes, path).ok_or(KeyError::Malformed { path: path.to_path_buf() })
    }

    /// A short public identifier of the key (a keyed hash: it reveals nothing of the key), so
    /// messages can tell "sealed with another key" from "not sealed".
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the key was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// MAC of one row (`path` plus every recorded attribute).
    pub fn row_mac(&self, path: &[u8], rec: &FileRecord) -> [u8; 32] {
        let mut m = self.mac.clone();
        let mut buf = Vec::with_capacity(256);
        canonical_row(path, rec, &mut buf);
        m.update(&buf);
        m.finalize().into_bytes().into()
    }

    /// Whether `mac` is the MAC of the row (constant time).
    pub fn verify_row(&self, path: &[u8], rec: &FileRecord, mac: &[u8]) -> bool {
        let mut m = self.mac.clone();
        let mut buf = Vec::with_capacity(256);
        canonical_row(path, rec, &mut buf);
        m.update(&buf);
        m.verify_slice(mac).is_ok()
    }

    /// Tag of the row set: `rows` rows whose MACs XOR to `xor`.
    pub fn seal_tag(&self, rows: u64, xor: &[u8; 32]) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(SEAL_DOMAIN);
        m.update(&rows.to_be_bytes());
        m.update(xor);
        m.finalize().into_bytes().into()
    }

    /// Tag of the trust anchor's kept verdict, `body` as stored (see [`crate::verdict`]).
    pub fn verdict_tag(&self, body: &[u8]) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(VERDICT_DOMAIN);
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of the verdict `body` (constant time).
    pub fn verify_verdict(&self, body: &[u8], tag: &[u8]) -> bool {
        let mut m = self.mac.clone();
        m.update(VERDICT_DOMAIN);
        m.update(body);
        m.verify_slice(tag).is_ok()
    }

    /// Whether `tag` seals `rows` and `xor` (constant time).
    pub fn verify_seal(&self, rows: u64, xor: &[u8; 32], tag: &[u8]) -> bool {
        let mut m = self.mac.clone();
        m.update(SEAL_DOMAIN);
        m.update(&rows.to_be_bytes());
        m.update(xor);
        m.verify_slice(tag).is_ok()
    }
}

/// The canonical, unambiguous encoding of a row: what row MACs and the root digest cover.
/// Every variable-length field is length-prefixed and every optional one tagged, so no two
/// different rows encode alike.
pub fn canonical_row(path: &[u8], rec: &FileRecord, out: &mut Vec<u8>) {
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u64).to_be_bytes());
        out.extend_from_slice(b);
    }
    fn opt(out: &mut Vec<u8>, b: Option<&[u8]>) {
        match b {
            None => out.push(0),
            Some(b) => {
                out.push(1);
                bytes(out, b);
            }
        }
    }
    out.extend_from_slice(ROW_DOMAIN);
    bytes(out, path);
    out.extend_from_slice(&rec.kind.code().to_be_bytes());
    out.extend_from_slice(&rec.mode.to_be_bytes());
    out.extend_from_slice(&rec.uid.to_be_bytes());
    out.extend_from_slice(&rec.gid.to_be_bytes());
    // As stored: SQLite integers are i64 (a size beyond that is stored clamped).
    out.extend_from_slice(&i64::try_from(rec.size).unwrap_or(i64::MAX).to_be_bytes());
    out.extend_from_slice(&rec.mtime_ns.to_be_bytes());
    out.extend_from_slice(&rec.ctime_ns.to_be_bytes());
    out.extend_from_slice(&rec.inode.to_be_bytes());
    opt(out, rec.link_target.as_deref());
    match &rec.xattrs {
        None => out.push(0),
        Some(x) => {
            out.push(1);
            out.extend_from_slice(&(x.len() as u64).to_be_bytes());
            for (n, v) in x {
                bytes(out, n);
                bytes(out, v);
            }
        }
    }
    opt(out, rec.sha256.as_ref().map(|h| &h[..]));
    opt(out, rec.blake3.as_ref().map(|h| &h[..]));
    out.push(rec.flags);
    // Last and only when present, so rows sealed before records kept an MD5 still verify; the
    // tag and fixed length keep the encoding unambiguous.
    if let Some(md5) = &rec.md5 {
        out.push(b'M');
        out.extend_from_slice(md5);
    }
}

/// What the engine can verify the baseline with.
#[derive(Debug, Clone)]
pub enum KeyState {
    /// `fim.baseline_key_file` is not set.
    NotConfigured,
    /// Set, but the key cannot be used (absent, unreadable, bad permissions, malformed).
    Unavailable {
        /// The configured path.
        path: PathBuf,
        /// Why (a sentence).
        reason: String,
        /// It is simply absent (so `fim init` may create it).
        missing: bool,
    },
    /// Loaded.
    Loaded(Arc<BaselineKey>),
}

impl KeyState {
    /// Loads the configured key file, if any. Never fails: what is wrong is kept to be reported.
    pub fn load(path: Option<&Path>) -> Self {
        let Some(path) = path else { return Self::NotConfigured };
        match BaselineKey::load(path) {
            Ok(k) => Self::Loaded(Arc::new(k)),
            Err(e) => Self::Unavailable {
                path: path.to_path_buf(),
                missing: matches!(e, KeyError::Missing { .. }),
                reason: e.to_string(),
            },
        }
    }

    /// The key, when loaded.
    pub fn key(&self) -> Option<&Arc<BaselineKey>> {
        match self {
            Self::Loaded(k) => Some(k),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::record::FileKind;

    fn rec() -> FileRecord {
        FileRecord {
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 3,
            mtime_ns: 1,
            ctime_ns: 2,
            inode: 3,
            link_target: None,
            xattrs: Some(vec![]),
            sha256: Some([1; 32]),
            blake3: None,
            flags: 0,
            md5: None,
        }
    }

    #[test]
    fn row_macs_bind_path_and_every_attribute() {
        let k = BaselineKey::from_bytes(&[7; 32], Path::new("/k")).unwrap();
        let mac = k.row_mac(b"/etc/passwd", &rec());
        assert!(k.verify_row(b"/etc/passwd", &rec(), &mac));
        assert!(!k.verify_row(b"/etc/shadow", &rec(), &mac), "bound to the path");
        let mut other = rec();
        other.sha256 = Some([2; 32]);
        assert!(!k.verify_row(b"/etc/passwd", &other, &mac), "bound to the hash");
        let mut with_md5 = rec();
        with_md5.md5 = Some([3; 16]);
        assert!(!k.verify_row(b"/etc/passwd", &with_md5, &mac), "bound to the MD5");
        let md5_mac = k.row_mac(b"/etc/passwd", &with_md5);
        with_md5.md5 = Some([4; 16]);
        assert!(!k.verify_row(b"/etc/passwd", &with_md5, &md5_mac), "bound to the MD5's value");
        // A row without one encodes as rows did before records kept an MD5: their MACs hold.
        let (mut old, mut new) = (Vec::new(), Vec::new());
        canonical_row(b"/etc/passwd", &rec(), &mut old);
        with_md5.md5 = Some([3; 16]);
        canonical_row(b"/etc/passwd", &with_md5, &mut new);
        assert_eq!(&new[..old.len()], &old[..]);
        assert_eq!(new.len(), old.len() + 17);
        let other_key = BaselineKey::from_bytes(&[8; 32], Path::new("/k")).unwrap();
        assert!(!other_key.verify_row(b"/etc/passwd", &rec(), &mac));
        assert_ne!(k.id(), other_key.id());
        assert!(!format!("{k:?}").contains("0707"), "the key is never printed");
    }

    #[test]
    fn key_files_must_be_private_regular_hex_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/fim.key");
        let created = BaselineKey::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(BaselineKey::load(&path).unwrap().id(), created.id());
        assert_eq!(BaselineKey::create(&path).unwrap().id(), created.id(), "never overwritten");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(BaselineKey::load(&path), Err(KeyError::Permissions { .. })));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(BaselineKey::load(&fifo), Err(KeyError::NotRegular { kind: "fifo", .. })));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(BaselineKey::load(&link), Err(KeyError::NotRegular { .. })));
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd\n").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(BaselineKey::load(&short), Err(KeyError::Malformed { .. })));
        assert!(matches!(BaselineKey::load(&dir.path().join("absent")), Err(KeyError::Missing { .. })));
    }
}
