//! Package attribution of changes: which package owns a changed file, and whether the package
//! manager made the change.
//!
//! The engine asks a [`PackageOracle`] (the agent passes one in; this crate knows only the
//! trait) about each changed path:
//! - no package owns it: the change is reported as it is;
//! - a package transaction is running, or just ended: the change is held in the
//!   transaction's group ([`Attributor`]). When the transaction has ended (no lock, no
//!   process, logs quiet for [`QUIET`]), the oracle re-reads the package databases and each
//!   held file is compared with what the *new* package version says: matching changes are
//!   folded into one `fim.package_transaction` event ([`TransactionEvent`]) listing the
//!   packages; the others are reported one by one as `outside-package-manager` (or
//!   `conffile-edit` for configuration files);
//! - no transaction: the new content is compared with the package at once. Not matching:
//!   `outside-package-manager`, naming package, expected and actual digest. Matching (a
//!   reinstall whose transaction was not seen): grouped like a transaction.
//!
//! Digests: rpm's SHA-256 is FIM's own; dpkg records MD5, computed here for the few changed
//! package files only, read through [`HostRoot`] (regular files only, capped).
//!
//! Bounded: a group holds at most [`MAX_HELD_FULL`] changes with their attributes and
//! [`MAX_HELD`] in all; beyond that changes are counted (`overflow`), and the next full
//! verification compares every package file with its package.

use crate::events::{ChangeKind, FimChange};
use crate::package::{
    AttributionReport, ChangeOrigin, DigestAlgo, ExpectedFile, HeldTransaction, MAX_REPORTED_OUTSIDE,
    OutsideChange, PackageAttribution, PackageChange, PackageDigest, PackageOracle, PackageOwner,
    PackageTransaction, TransactionEvent,
};
use guestward_core::{HostRoot, Timestamp};
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A transaction counts as ended once nothing showed it running for this long (dpkg runs
/// triggers and apt its hooks after the last file is written).
pub const QUIET: Duration = Duration::from_secs(2);
/// The oracle is asked whether a transaction runs at most this often (it reads /proc).
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Before a change to a package file is reported as made outside the package manager, the
/// transaction look is repeated unless it is at most this old (a burst of such changes,
/// handled at once, costs one look).
const RECHECK_BEFORE_ALERT: Duration = Duration::from_millis(20);
/// Held changes that keep their attributes; beyond, only path and kind are kept.
pub const MAX_HELD_FULL: usize = 2048;
/// Held changes in all; beyond, counted only.
pub const MAX_HELD: usize = 50_000;
/// Paths listed in a grouped event.
pub const MAX_SAMPLE_PATHS: usize = 32;
/// Largest file whose digest is computed (larger: unverified).
pub const MAX_DIGEST_BYTES: u64 = 1 << 30;

/// The oracle as the engine holds it (`Debug` for [`crate::Fim`]).
#[derive(Clone)]
pub struct Packages(pub Arc<dyn PackageOracle>);

impl std::fmt::Debug for Packages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Packages(..)")
    }
}

/// What was read of a file's current content, in the algorithms its packages use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// It exists (a regular file, or anything: see `digests`).
    pub present: bool,
    /// Its digests (empty: not a regular file, unreadable, or larger than the cap).
    pub digests: Vec<PackageDigest>,
    /// `st_mode` now.
    pub mode: Option<u32>,
    /// It could not be looked at for a reason of the agent's own (a directory on its path it
    /// may not search, no descriptor left, an I/O error): whether it is there is not known, so
    /// it is judged unverified, never missing. A run without root would otherwise report every
    /// package file under a 0700 directory as removed outside the package manager.
    pub unexamined: bool,
}

/// Package manager temporaries (`*.dpkg-new`, rpm's `*;5f3a2b1c`, `*.rpmnew`): made and
/// consumed by the transaction itself.
pub fn is_temporary(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else { return false };
    const SUFFIXES: &[&str] = &[
        ".dpkg-new",
        ".dpkg-tmp",
        ".dpkg-old",
        ".dpkg-dist",
        ".dpkg-bak",
        ".dpkg-remove",
        ".rpmnew",
        ".rpmsave",
        ".rpmorig",
    ];
    if SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return true;
    }
    // rpm writes `name;<8 hex digits>` and renames it over `name`.
    match name.rsplit_once(';') {
        Some((_, tail)) => tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// Reads `host` through `root` and computes each of `algos` over it in one pass.
pub fn read_content(root: &HostRoot, host: &Path, algos: &[DigestAlgo]) -> Content {
    use sha2::Digest as _;
    let meta = match root.symlink_metadata(host) {
        Ok(m) => m,
        // A path that leads to nothing is missing; any other failure is the agent's own limit.
        Err(e) if e.leads_to_nothing() => return Content::default(),
        Err(_) => return Content { unexamined: true, ..Content::default() },
    };
    let mode = Some(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()));
    let mut content = Content { present: true, digests: Vec::new(), mode, unexamined: false };
    if !meta.file_type().is_file() || meta.len() > MAX_DIGEST_BYTES || algos.is_empty() {
        return content;
    }
    let Ok((file, _)) = root.open(host) else { return content };
    let mut md5 = algos.contains(&DigestAlgo::Md5).then(md5_many::Md5State::new);
    let mut sha1 = algos.contains(&DigestAlgo::Sha1).then(sha1::Sha1::new);
    let mut sha224 = algos.contains(&DigestAlgo::Sha224).then(sha2::Sha224::new);
    let mut sha256 = algos.contains(&DigestAlgo::Sha256).then(sha2::Sha256::new);
    let mut sha384 = algos.contains(&DigestAlgo::Sha384).then(sha2::Sha384::new);
    let mut sha512 = algos.contains(&DigestAlgo::Sha512).then(sha2::Sha512::new);
    let mut reader = file.take(MAX_DIGEST_BYTES + 1);
    let mut buf = guestward_core::ReadBuffer::new(64 * 1024);
    let buf = buf.as_mut_slice();
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return content,
        };
        let chunk = &buf[..n];
        if let Some(h) = md5.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = sha1.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = sha224.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = sha256.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = sha384.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = sha512.as_mut() {
            h.update(chunk);
        }
    }
    let hex = crate::model::hex;
    let mut push = |algo, bytes: &[u8]| content.digests.push(PackageDigest { algo, hex: hex(bytes) });
    if let Some(h) = md5 {
        push(DigestAlgo::Md5, &h.finalize());
    }
    if let Some(h) = sha1 {
        push(DigestAlgo::Sha1, &h.finalize());
    }
    if let Some(h) = sha224 {
        push(DigestAlgo::Sha224, &h.finalize());
    }
    if let Some(h) = sha256 {
        push(DigestAlgo::Sha256, &h.finalize());
    }
    if let Some(h) = sha384 {
        push(DigestAlgo::Sha384, &h.finalize());
    }
    if let Some(h) = sha512 {
        push(DigestAlgo::Sha512, &h.finalize());
    }
    content
}

/// The algorithms `expected` records digests in.
pub fn algos_of(expected: &[ExpectedFile]) -> Vec<DigestAlgo> {
    let mut out: Vec<DigestAlgo> = Vec::new();
    for d in expected.iter().filter_map(|e| e.digest.as_ref()) {
        if !out.contains(&d.algo) {
            out.push(d.algo);
        }
    }
    out
}

/// Classifies one change to a package file. `expected`: what the owning package(s) say (the
/// new version's, after a transaction); `content`: the file now; `content_changed`: the change
/// touched the content (added, replaced, or its hash differs), not only metadata;
/// `in_transaction`: it happened inside a package transaction. `None`: no package owns it.
pub fn classify(
    expected: &[ExpectedFile],
    content: &Content,
    content_changed: bool,
    in_transaction: bool,
    transaction: Option<&str>,
) -> Option<PackageAttribution> {
    let first = expected.first()?;
    let attribution = |e: &ExpectedFile, origin, expected: Option<PackageDigest>| {
        let actual =
            expected.as_ref().and_then(|x| content.digests.iter().find(|d| d.algo == x.algo).cloned());
        PackageAttribution {
            owner: e.owner.clone(),
            origin,
            conffile: e.conffile,
            expected,
            actual,
            transaction: transaction.map(str::to_string),
        }
    };
    let with_digest: Vec<&ExpectedFile> = expected.iter().filter(|e| e.digest.is_some()).collect();
    if content.unexamined {
        let e = with_digest.first().copied().unwrap_or(first);
        return Some(attribution(e, ChangeOrigin::Unverified, e.digest.clone()));
    }
    if !content.present {
        // The package still lists it, but it is gone.
        let e = with_digest.first().copied().unwrap_or(first);
        let origin =
            if e.conffile { ChangeOrigin::ConffileEdit } else { ChangeOrigin::OutsidePackageManager };
        return Some(attribution(e, origin, e.digest.clone()));
    }
    if with_digest.is_empty() {
        return Some(attribution(first, ChangeOrigin::Unverified, None));
    }
    if content.digests.is_empty() {
        // A regular file is expected but this is none, or it could not be read.
        let e = with_digest[0];
        let regular = content.mode.is_some_and(|m| m & 0o170000 == 0o100000);
        let origin = match (regular, e.conffile) {
            (true, _) => ChangeOrigin::Unverified,
            (false, true) => ChangeOrigin::ConffileEdit,
            (false, false) => ChangeOrigin::OutsidePackageManager,
        };
        return Some(attribution(e, origin, e.digest.clone()));
    }
    let matching =
        with_digest.iter().find(|e| e.digest.as_ref().is_some_and(|d| content.digests.contains(d)));
    if let Some(e) = matching {
        if in_transaction || content_changed {
            return Some(attribution(e, ChangeOrigin::PackageTransaction, e.digest.clone()));
        }
        // Only metadata changed, outside any transaction: the package manager did not do it.
        // Where the package records a mode (rpm), a different one is not the package's.
        let mode_differs = match (e.mode, content.mode) {
            (Some(want), Some(have)) => want & 0o7777 != have & 0o7777,
            _ => false,
        };
        let origin =
            if mode_differs { ChangeOrigin::OutsidePackageManager } else { ChangeOrigin::Unverified };
        return Some(attribution(e, origin, e.digest.clone()));
    }
    let e = with_digest[0];
    let origin = if with_digest.iter().all(|e| e.conffile) {
        ChangeOrigin::ConffileEdit
    } else {
        ChangeOrigin::OutsidePackageManager
    };
    Some(attribution(e, origin, e.digest.clone()))
}

/// Whether a change touched content (not only metadata).
fn content_changed(c: &FimChange) -> bool {
    match c.change {
        ChangeKind::Added | ChangeKind::Renamed => true,
        ChangeKind::Removed => false,
        ChangeKind::Modified => c.changed.iter().any(|a| {
            matches!(
                a,
                crate::config::Attribute::Sha256
                    | crate::config::Attribute::Blake3
                    | crate::config::Attribute::Size
                    | crate::config::Attribute::Inode
                    | crate::config::Attribute::Type
                    | crate::config::Attribute::LinkTarget
            )
        }),
    }
}

/// Attributes one change now (no grouping): for `fim check` and scans. `None`: no package
/// owns the path.
pub fn attribute_now(
    oracle: &dyn PackageOracle,
    root: &HostRoot,
    host: &Path,
    c: &FimChange,
    transaction: Option<&PackageTransaction>,
) -> Option<PackageAttribution> {
    let expected = oracle.expected(host);
    if expected.is_empty() {
        return None;
    }
    let content = read_content(root, host, &algos_of(&expected));
    classify(
        &expected,
        &content,
        content_changed(c),
        transaction.is_some(),
        transaction.map(|t| t.id.as_str()),
    )
}

/// One held change.
struct Held {
    host: PathBuf,
    change: FimChange,
    /// The owner before the transaction (from the oracle before it re-read the databases).
    before: Option<PackageOwner>,
}

/// The changes of one transaction, held until it ends.
struct Group {
    transaction: PackageTransaction,
    /// A real transaction was seen (not only digests matching a package).
    seen: bool,
    held: Vec<Held>,
    /// Where each path's mergeable entry is in `held` (see [`merge_rewrite`]).
    by_path: std::collections::HashMap<PathBuf, usize>,
    overflow: u64,
    /// When a transaction was last seen running (or the last change arrived).
    last_active: Instant,
}

/// Folds a later modification of a held path into its held change: from the first change's
/// old state to the latest new state, the changed attributes united. A file rewritten a
/// thousand times during an upgrade is then one held entry, not a thousand: measured, a
/// storm of 2,000 files rewritten 30 times while dpkg ran held 48,591 changes, 54 MB. Only a
/// modification after an addition or a modification merges; removals, renames and transient
/// paths stay entries of their own (returned). The per-attribute values are dropped (they
/// are derived from `old` and `new` when shown: [`FimChange::value_changes`]).
fn merge_rewrite(first: &mut FimChange, later: FimChange) -> Option<FimChange> {
    let mergeable = |c: &FimChange| c.old_path.is_none() && c.transient.is_none();
    if later.change != ChangeKind::Modified
        || !matches!(first.change, ChangeKind::Added | ChangeKind::Modified)
        || !mergeable(first)
        || !mergeable(&later)
    {
        return Some(later);
    }
    first.new = later.new;
    for a in later.changed {
        if !first.changed.contains(&a) {
            first.changed.push(a);
        }
    }
    first.attributes = Vec::new();
    None
}

/// What a flush or an offer produced: changes to report one by one, and the grouped event.
#[derive(Debug, Default)]
pub struct Output {
    /// Individual changes (attributed or not).
    pub changes: Vec<FimChange>,
    /// The grouped event of a transaction that ended.
    pub transaction: Option<TransactionEvent>,
}

/// The realtime side: holds changes per transaction and classifies them when it ends.
pub struct Attributor {
    oracle: Arc<dyn PackageOracle>,
    root: HostRoot,
    group: Option<Group>,
    checked_at: Option<Instant>,
    current: Option<PackageTransaction>,
    report: AttributionReport,
}

impl Attributor {
    /// Over `oracle`, reading files through `root`.
    pub fn new(oracle: Arc<dyn PackageOracle>, root: HostRoot) -> Self {
        Self {
            oracle,
            root,
            group: None,
            checked_at: None,
            current: None,
            report: AttributionReport::default(),
        }
    }

    /// Counts and the latest outside-package-manager changes, for the report.
    pub fn report(&self) -> &AttributionReport {
        &self.report
    }

    /// The running transaction whose changes are held now, and how many (see
    /// [`AttributionReport::holding`]); `None` when nothing is held for a transaction seen
    /// running.
    pub fn holding(&self) -> Option<HeldTransaction> {
        let (_, held) = self.holding_count()?;
        let g = self.group.as_ref()?;
        Some(HeldTransaction { transaction: g.transaction.clone(), held_changes: held })
    }

    /// [`Self::holding`]'s transaction id and count, without copying the transaction.
    pub fn holding_count(&self) -> Option<(&str, u64)> {
        let g = self.group.as_ref().filter(|g| g.seen)?;
        let held = u64::try_from(g.held.len()).unwrap_or(u64::MAX).saturating_add(g.overflow);
        Some((g.transaction.id.as_str(), held))
    }

    /// The running transaction (asked at most every [`CHECK_EVERY`]).
    fn transaction(&mut self, now: Instant) -> Option<PackageTransaction> {
        self.transaction_within(now, CHECK_EVERY)
    }

    /// The running transaction, asked again unless the last look is younger than `max_age`.
    fn transaction_within(&mut self, now: Instant, max_age: Duration) -> Option<PackageTransaction> {
        if self.checked_at.is_none_or(|t| now.saturating_duration_since(t) >= max_age) {
            self.checked_at = Some(now);
            self.current = self.oracle.running_transaction();
        }
        self.current.clone()
    }

    /// Records an attribution in the counts (and the latest lists).
    pub fn count(&mut self, path: &str, a: &PackageAttribution, at_baseline: bool) {
        let c = &mut self.report.counts;
        match a.origin {
            ChangeOrigin::PackageTransaction => c.package_transaction += 1,
            ChangeOrigin::OutsidePackageManager if at_baseline => c.baseline_mismatches += 1,
            ChangeOrigin::OutsidePackageManager => c.outside_package_manager += 1,
            ChangeOrigin::ConffileEdit => c.conffile_edit += 1,
            ChangeOrigin::Unverified => c.unverified += 1,
        }
        let list = match a.origin {
            ChangeOrigin::OutsidePackageManager => &mut self.report.outside,
            ChangeOrigin::ConffileEdit => &mut self.report.conffile_edits,
            _ => return,
        };
        if list.len() >= MAX_REPORTED_OUTSIDE {
            list.remove(0);
        }
        list.push(OutsideChange {
            path: path.to_string(),
            package: a.clone(),
            seen: Timestamp::now(),
            at_baseline,
        });
    }

    /// What the last baseline or full verification found (see
    /// [`crate::model::BaselineCheck::package_mismatches`]): a state, replaced each time.
    /// Conffiles differing from their package are normal (administrators edit them) and are
    /// not counted.
    pub fn set_baseline_mismatches(&mut self, b: &crate::model::BaselineCheck) {
        if b.package_verification.is_none() || b.package_verification_failed() {
            return;
        }
        self.report.outside.retain(|o| !o.at_baseline);
        let listed: Vec<&OutsideChange> =
            b.package_mismatches.iter().filter(|o| o.package.origin != ChangeOrigin::ConffileEdit).collect();
        let conffiles = b.package_mismatches.len() - listed.len();
        self.report.counts.baseline_mismatches = b.package_mismatch_count.saturating_sub(conffiles as u64);
        for o in listed {
            if self.report.outside.len() >= MAX_REPORTED_OUTSIDE {
                self.report.outside.remove(0);
            }
            self.report.outside.push(o.clone());
        }
    }

    /// Takes a change to `host`: returns it to be reported now (attributed when a package owns
    /// the path), or holds it in the transaction's group (`None`).
    pub fn offer(&mut self, host: &Path, mut c: FimChange, now: Instant) -> Option<FimChange> {
        if let Some(tx) = self.transaction(now) {
            self.hold(host, c, tx, true, now);
            return None;
        }
        // Just ended: what arrives during the quiet time belongs to it.
        if self.group.as_ref().is_some_and(|g| g.seen) {
            let tx = self.group.as_ref().map(|g| g.transaction.clone());
            if let Some(tx) = tx {
                self.hold(host, c, tx, true, now);
                return None;
            }
        }
        let attribution = match c.package.take() {
            // A scan attributed it already.
            Some(a) => Some(a),
            None => attribute_now(self.oracle.as_ref(), &self.root, host, &c, None),
        };
        let Some(a) = attribution else { return Some(c) };
        if matches!(a.origin, ChangeOrigin::OutsidePackageManager | ChangeOrigin::ConffileEdit)
            && let Some(tx) = self.transaction_within(now, RECHECK_BEFORE_ALERT)
        {
            // The cached "no transaction" was up to CHECK_EVERY old: a purge or upgrade that
            // began since (its first removals arrive within milliseconds) must not alert.
            // Held, it is judged against the packages as they are once it ends.
            self.hold(host, c, tx, true, now);
            return None;
        }
        if a.origin == ChangeOrigin::PackageTransaction {
            // A package's own content, with no transaction seen (a reinstall whose lock we
            // missed): folded like one, never an alert.
            let tx = PackageTransaction {
                id: format!("{}-untracked-{}", a.owner.manager.as_str(), Timestamp::now()),
                manager: a.owner.manager,
                started: Timestamp::now(),
                evidence: vec![
                    "no transaction was seen running: the new content matches the package".to_string(),
                ],
            };
            self.hold(host, c, tx, false, now);
            return None;
        }
        self.count(&c.path.clone(), &a, false);
        c.package = Some(a);
        Some(c)
    }

    fn hold(&mut self, host: &Path, mut c: FimChange, tx: PackageTransaction, seen: bool, now: Instant) {
        let group = self.group.get_or_insert_with(|| Group {
            transaction: tx.clone(),
            seen,
            held: Vec::new(),
            by_path: std::collections::HashMap::new(),
            overflow: 0,
            last_active: now,
        });
        if seen && !group.seen {
            // A real transaction replaces the untracked one.
            group.transaction = tx;
            group.seen = true;
        } else if seen {
            for e in tx.evidence {
                if group.transaction.evidence.len() < 16 && !group.transaction.evidence.contains(&e) {
                    group.transaction.evidence.push(e);
                }
            }
        }
        group.last_active = now;
        c.package = None;
        let c = match group.by_path.get(host).and_then(|i| group.held.get_mut(*i)) {
            Some(h) => match merge_rewrite(&mut h.change, c) {
                None => return,
                Some(c) => c,
            },
            None => c,
        };
        let mut c = c;
        if group.held.len() >= MAX_HELD {
            group.overflow += 1;
            return;
        }
        if group.held.len() >= MAX_HELD_FULL {
            // Path and kind only: bounded memory in a dist-upgrade.
            c.old = None;
            c.new = None;
            c.attributes = Vec::new();
            c.folded_parent = None;
        }
        let before = if is_temporary(host) {
            None
        } else {
            self.oracle.expected(host).into_iter().next().map(|e| e.owner)
        };
        group.by_path.insert(host.to_path_buf(), group.held.len());
        group.held.push(Held { host: host.to_path_buf(), change: c, before });
    }

    /// When [`Self::poll`] should run next (a group is open).
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        let g = self.group.as_ref()?;
        Some((g.last_active + QUIET).max(now + CHECK_EVERY).min(now + QUIET))
    }

    /// Ends the open group once its transaction has ended and been quiet for [`QUIET`]:
    /// re-reads the package databases and classifies every held change.
    pub fn poll(&mut self, now: Instant) -> Output {
        if self.group.is_none() {
            // No transaction's changes are being gathered: the lookups of the changes just
            // handled (one edit, or a burst handled together) are over.
            self.oracle.forget_lookups();
            return Output::default();
        }
        if self.transaction(now).is_some() {
            if let Some(g) = self.group.as_mut() {
                g.last_active = now;
            }
            return Output::default();
        }
        if self.group.as_ref().is_some_and(|g| now.duration_since(g.last_active) < QUIET) {
            return Output::default();
        }
        self.flush()
    }

    /// Classifies every held change now (the transaction has ended, or the monitor stops).
    pub fn flush(&mut self) -> Output {
        let Some(group) = self.group.take() else { return Output::default() };
        if group.seen
            && let Err(e) = self.oracle.refresh()
        {
            tracing::warn!(error = %e, "cannot re-read the package databases after a transaction; its changes are compared with what was read before");
        }
        let tx_id = group.transaction.id.clone();
        let mut out = Output::default();
        let mut ev = TransactionEvent {
            transaction: group.transaction.clone(),
            ended: Timestamp::now(),
            packages: Vec::new(),
            verified: 0,
            outside_package_manager: 0,
            conffile_edits: 0,
            unverified: 0,
            not_package_files: 0,
            temporaries: 0,
            overflow: group.overflow,
            sample_paths: Vec::new(),
        };
        let mut packages: BTreeMap<(String, Option<String>), PackageChange> = BTreeMap::new();
        let note = |packages: &mut BTreeMap<(String, Option<String>), PackageChange>,
                    before: Option<&PackageOwner>,
                    after: Option<&PackageOwner>| {
            let Some(any) = after.or(before) else { return };
            let p = packages.entry((any.name.clone(), any.arch.clone())).or_insert_with(|| PackageChange {
                manager: any.manager,
                name: any.name.clone(),
                arch: any.arch.clone(),
                old_version: before.map(|b| b.version.clone()),
                new_version: after.map(|a| a.version.clone()),
                files: 0,
            });
            if p.old_version.is_none()
                && let Some(b) = before
                && after.is_none_or(|a| a.version != b.version)
            {
                p.old_version = Some(b.version.clone());
            }
            if p.new_version.is_none()
                && let Some(a) = after
            {
                p.new_version = Some(a.version.clone());
            }
            p.files += 1;
        };
        let mut seen_paths: VecDeque<String> = VecDeque::new();
        for h in group.held {
            if is_temporary(&h.host) {
                ev.temporaries += 1;
                continue;
            }
            let expected = self.oracle.expected(&h.host);
            if expected.is_empty() {
                if let Some(before) = &h.before {
                    // Owned before, by no package now: the transaction dropped it. Counted
                    // with the changes the transaction explains, as the event counts it.
                    ev.verified += 1;
                    self.report.counts.package_transaction += 1;
                    note(&mut packages, Some(before), None);
                    sample(&mut seen_paths, &h.change.path);
                } else {
                    ev.not_package_files += 1;
                    out.changes.push(h.change);
                }
                continue;
            }
            let content = read_content(&self.root, &h.host, &algos_of(&expected));
            let Some(a) = classify(&expected, &content, true, true, Some(&tx_id)) else { continue };
            match a.origin {
                ChangeOrigin::PackageTransaction | ChangeOrigin::Unverified => {
                    if a.origin == ChangeOrigin::PackageTransaction {
                        ev.verified += 1;
                    } else {
                        ev.unverified += 1;
                    }
                    self.count(&h.change.path, &a, false);
                    let before =
                        h.before.as_ref().filter(|b| b.version != a.owner.version || b.name != a.owner.name);
                    note(&mut packages, before.or(h.before.as_ref()), Some(&a.owner));
                    sample(&mut seen_paths, &h.change.path);
                }
                ChangeOrigin::OutsidePackageManager | ChangeOrigin::ConffileEdit => {
                    if a.origin == ChangeOrigin::OutsidePackageManager {
                        ev.outside_package_manager += 1;
                    } else {
                        ev.conffile_edits += 1;
                    }
                    self.count(&h.change.path, &a, false);
                    let mut c = h.change;
                    c.package = Some(a);
                    out.changes.push(c);
                }
            }
        }
        // Unchanged versions (a file of a package that did not move) say nothing.
        for p in packages.values_mut() {
            if p.old_version == p.new_version {
                p.old_version = None;
            }
        }
        ev.packages = packages.into_values().collect();
        ev.sample_paths = seen_paths.into_iter().collect();
        if ev.verified + ev.unverified + ev.temporaries + ev.overflow > 0 || !ev.packages.is_empty() {
            self.report.counts.transactions += 1;
            out.transaction = Some(ev);
        }
        self.oracle.forget_lookups();
        out
    }
}

fn sample(paths: &mut VecDeque<String>, p: &str) {
    if paths.len() < MAX_SAMPLE_PATHS {
        paths.push_back(p.to_string());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::package::PackageManager;

    fn md5_of(bytes: &[u8]) -> PackageDigest {
        use md5::Digest as _;
        PackageDigest { algo: DigestAlgo::Md5, hex: crate::model::hex(&md5::Md5::digest(bytes)) }
    }

    fn owner(name: &str, version: &str) -> PackageOwner {
        PackageOwner { manager: PackageManager::Dpkg, name: name.into(), version: version.into(), arch: None }
    }

    fn expected(digest: Option<PackageDigest>, conffile: bool) -> ExpectedFile {
        ExpectedFile {
            owner: owner("openssh-server", "1:9.2p1-2"),
            digest,
            conffile,
            mode: None,
            size: None,
            user: None,
            group: None,
        }
    }

    /// The content of a real file, read the way the engine reads it.
    fn content_of(bytes: &[u8]) -> Content {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), bytes).unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        read_content(&root, Path::new("/f"), &[DigestAlgo::Md5, DigestAlgo::Sha256])
    }

    #[test]
    fn digests_are_those_of_the_content_read_through_the_root() {
        let c = content_of(b"hello\n");
        assert!(c.present);
        // `md5sum`/`sha256sum` of "hello\n".
        assert_eq!(c.digests[0].hex, "b1946ac92492d2347c6235b4d2611184");
        assert_eq!(c.digests[1].hex, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("l")).unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        let link = read_content(&root, Path::new("/l"), &[DigestAlgo::Md5]);
        assert!(link.present && link.digests.is_empty(), "a symlink is never followed nor hashed");
        assert!(!read_content(&root, Path::new("/missing"), &[DigestAlgo::Md5]).present);
    }

    /// A path that leads to nothing is missing: not there, through a file where a directory
    /// was, through symlinks that loop. What the agent could not look at is unexamined, and
    /// judged unverified, never missing (a directory it may not search: the agent's end-to-end
    /// test `fim_init_without_root_never_calls_an_unreachable_package_file_missing`).
    #[test]
    fn only_a_path_that_leads_to_nothing_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        std::os::unix::fs::symlink("loop-b", dir.path().join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", dir.path().join("loop-b")).unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        for path in ["/missing", "/file/below-a-file", "/loop-a/x", "/missing-dir/x"] {
            let c = read_content(&root, Path::new(path), &[DigestAlgo::Md5]);
            assert_eq!(c, Content::default(), "{path}");
        }
        let e = expected(Some(PackageDigest { algo: DigestAlgo::Md5, hex: "0".repeat(32) }), false);
        let gone = classify(std::slice::from_ref(&e), &Content::default(), true, false, None).unwrap();
        assert_eq!(gone.origin, ChangeOrigin::OutsidePackageManager);
        let unexamined = Content { unexamined: true, ..Content::default() };
        for conffile in [false, true] {
            let e = expected(e.digest.clone(), conffile);
            let judged = classify(std::slice::from_ref(&e), &unexamined, true, false, None).unwrap();
            assert_eq!(judged.origin, ChangeOrigin::Unverified, "conffile: {conffile}");
            assert_eq!(judged.actual, None);
        }
    }

    #[test]
    fn a_change_matching_the_package_is_the_package_managers_and_anything_else_is_not() {
        let good = expected(Some(md5_of(b"sshd v2\n")), false);
        let now = content_of(b"sshd v2\n");
        let a = classify(std::slice::from_ref(&good), &now, true, true, Some("dpkg-1")).unwrap();
        assert_eq!(a.origin, ChangeOrigin::PackageTransaction);
        assert_eq!(a.transaction.as_deref(), Some("dpkg-1"));
        // Same content outside a transaction: a reinstall whose lock was not seen.
        let a = classify(std::slice::from_ref(&good), &now, true, false, None).unwrap();
        assert_eq!(a.origin, ChangeOrigin::PackageTransaction);

        let evil = content_of(b"backdoor\n");
        for in_tx in [true, false] {
            let a = classify(std::slice::from_ref(&good), &evil, true, in_tx, None).unwrap();
            assert_eq!(a.origin, ChangeOrigin::OutsidePackageManager, "in transaction: {in_tx}");
            assert_eq!(a.expected, Some(md5_of(b"sshd v2\n")));
            assert_eq!(a.actual, Some(md5_of(b"backdoor\n")));
            assert_eq!(a.owner.name, "openssh-server");
        }
    }

    #[test]
    fn conffiles_removals_metadata_and_undigested_entries() {
        let conf = expected(Some(md5_of(b"Port 22\n")), true);
        let edited = content_of(b"Port 2222\n");
        let a = classify(std::slice::from_ref(&conf), &edited, true, false, None).unwrap();
        assert_eq!((a.origin, a.conffile), (ChangeOrigin::ConffileEdit, true));

        let bin = expected(Some(md5_of(b"x")), false);
        let gone = Content::default();
        let a = classify(std::slice::from_ref(&bin), &gone, false, false, None).unwrap();
        assert_eq!((a.origin, a.actual.is_none()), (ChangeOrigin::OutsidePackageManager, true));

        // A chmod outside any transaction, content intact: not the package manager's doing,
        // flagged where the package records the mode (rpm), unverified where it does not (dpkg).
        let mut rpm = expected(Some(md5_of(b"x")), false);
        rpm.mode = Some(0o100755);
        let mut same = content_of(b"x");
        same.mode = Some(0o104755);
        let a = classify(std::slice::from_ref(&rpm), &same, false, false, None).unwrap();
        assert_eq!(a.origin, ChangeOrigin::OutsidePackageManager);
        let a = classify(std::slice::from_ref(&bin), &same, false, false, None).unwrap();
        assert_eq!(a.origin, ChangeOrigin::Unverified);

        // A directory (dpkg lists it, with no digest).
        let dir = expected(None, false);
        let a = classify(&[dir], &same, true, false, None).unwrap();
        assert_eq!(a.origin, ChangeOrigin::Unverified);
        assert!(classify(&[], &same, true, false, None).is_none(), "no owner: no attribution");

        // Shared between two packages (multi-arch): matching either is enough.
        let other = ExpectedFile { owner: owner("libfoo", "2"), ..expected(Some(md5_of(b"y")), false) };
        let a = classify(&[bin, other], &content_of(b"y"), true, true, None).unwrap();
        assert_eq!((a.origin, a.owner.name.as_str()), (ChangeOrigin::PackageTransaction, "libfoo"));
    }

    #[test]
    fn package_manager_temporaries_are_recognised() {
        for t in ["/usr/bin/x.dpkg-new", "/etc/x.dpkg-tmp", "/usr/bin/x;5f3a2b1c", "/etc/x.rpmnew"] {
            assert!(is_temporary(Path::new(t)), "{t}");
        }
        for t in ["/usr/bin/x", "/etc/x;5f3a2b1", "/etc/x;notahexx"] {
            assert!(!is_temporary(Path::new(t)), "{t}");
        }
    }

    /// A realtime change to `path` of a regular file whose size goes from `old` to `new`.
    fn realtime_change(
        path: &str,
        kind: ChangeKind,
        old: Option<u64>,
        new: Option<u64>,
        changed: Vec<crate::config::Attribute>,
    ) -> FimChange {
        let attrs = |size: u64| crate::events::Attributes {
            kind: crate::model::FileKind::File,
            mode: "0644".into(),
            uid: 0,
            gid: 0,
            size,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 1,
            link_target: None,
            sha256: None,
            blake3: None,
            xattrs: None,
            hash_skipped: false,
            unstable: false,
            unreadable: false,
        };
        FimChange {
            path: path.into(),
            old_path: None,
            change: kind,
            changed,
            old: old.map(attrs),
            new: new.map(attrs),
            mechanism: crate::Mechanism::Realtime,
            rule: "/".into(),
            transient: None,
            attributes: Vec::new(),
            folded_parent: None,
            package: None,
        }
    }

    /// A package manager whose transaction starts when the test says, owning `/f` (until
    /// its databases are read again, when `purges`: the transaction removed the package).
    struct StartsLater {
        running: std::sync::atomic::AtomicBool,
        looks: std::sync::atomic::AtomicUsize,
        digest: PackageDigest,
        purges: bool,
        owned: std::sync::atomic::AtomicBool,
    }

    impl StartsLater {
        fn new(running: bool, purges: bool) -> Self {
            Self {
                running: running.into(),
                looks: 0.into(),
                digest: md5_of(b"v1\n"),
                purges,
                owned: true.into(),
            }
        }
    }

    impl PackageOracle for StartsLater {
        fn expected(&self, path: &Path) -> Vec<ExpectedFile> {
            if path == Path::new("/f") && self.owned.load(std::sync::atomic::Ordering::SeqCst) {
                vec![expected(Some(self.digest.clone()), false)]
            } else {
                Vec::new()
            }
        }
        fn refresh(&self) -> Result<(), String> {
            if self.purges {
                self.owned.store(false, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(())
        }
        fn running_transaction(&self) -> Option<PackageTransaction> {
            self.looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.running.load(std::sync::atomic::Ordering::SeqCst).then(|| PackageTransaction {
                id: "dpkg-purge".into(),
                manager: PackageManager::Dpkg,
                started: Timestamp::now(),
                evidence: vec!["lock held".into()],
            })
        }
        fn verify_under(
            &self,
            _: &[std::path::PathBuf],
            _: &dyn crate::package::KnownContent,
        ) -> Result<crate::package::PackageVerification, String> {
            Ok(crate::package::PackageVerification::default())
        }
    }

    /// A purge that starts right after an unrelated look at the host found no transaction:
    /// its first removal arrives while that answer is still cached, and must be held with the
    /// purge, not reported as made outside the package manager.
    #[test]
    fn a_transaction_that_began_since_the_last_look_is_seen_before_any_alert() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        let oracle = Arc::new(StartsLater::new(false, false));
        let mut a = Attributor::new(Arc::clone(&oracle) as Arc<dyn PackageOracle>, root);
        let t0 = Instant::now();
        // No transaction: a file no package owns passes, and the look is cached.
        assert!(
            a.offer(
                Path::new("/other"),
                realtime_change("/other", ChangeKind::Removed, None, None, vec![]),
                t0
            )
            .is_some()
        );
        let looks = oracle.looks.load(std::sync::atomic::Ordering::SeqCst);
        oracle.running.store(true, std::sync::atomic::Ordering::SeqCst);
        // 50 ms later, inside CHECK_EVERY: the package file's removal is held, not alerted.
        let t1 = t0 + Duration::from_millis(50);
        assert!(
            a.offer(Path::new("/f"), realtime_change("/f", ChangeKind::Removed, None, None, vec![]), t1)
                .is_none(),
            "held with the purge"
        );
        assert_eq!(oracle.looks.load(std::sync::atomic::Ordering::SeqCst), looks + 1, "one fresh look");
        assert_eq!(a.report().counts.outside_package_manager, 0);
    }

    /// A file rewritten over and over while a transaction runs is held once: from its first
    /// old state to its latest new state; a removal after it stays an entry of its own.
    #[test]
    fn rewrites_of_one_path_during_a_transaction_are_held_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        let oracle = Arc::new(StartsLater::new(true, false));
        let mut a = Attributor::new(Arc::clone(&oracle) as Arc<dyn PackageOracle>, root);
        let t0 = Instant::now();
        use crate::config::Attribute as A;
        assert!(
            a.offer(
                Path::new("/g"),
                realtime_change("/g", ChangeKind::Modified, Some(1), Some(2), vec![A::Size]),
                t0
            )
            .is_none()
        );
        for i in 2..100 {
            let c =
                realtime_change("/g", ChangeKind::Modified, Some(i), Some(i + 1), vec![A::Size, A::Mtime]);
            assert!(a.offer(Path::new("/g"), c, t0).is_none());
        }
        assert!(
            a.offer(Path::new("/g"), realtime_change("/g", ChangeKind::Removed, Some(100), None, vec![]), t0)
                .is_none()
        );
        assert_eq!(a.group.as_ref().unwrap().held.len(), 2, "the rewrites merged, the removal apart");
        // The status tells what the running transaction holds.
        let h = a.holding().expect("held for a transaction seen running");
        assert_eq!((h.transaction.id.as_str(), h.held_changes), ("dpkg-purge", 2));
        let mut status = crate::model::FimStatus::starting();
        status.attribution = Some(AttributionReport { holding: Some(h), ..AttributionReport::default() });
        let mut shown = Vec::new();
        status.render_human(&mut shown).unwrap();
        let shown = String::from_utf8(shown).unwrap();
        assert!(shown.contains("HOLDING 2 change(s) while dpkg transaction dpkg-purge runs"), "{shown}");
        oracle.running.store(false, std::sync::atomic::Ordering::SeqCst);
        let out = a.poll(t0 + QUIET + Duration::from_secs(1));
        assert!(a.holding().is_none(), "judged once the transaction ended");
        let g: Vec<&FimChange> = out.changes.iter().filter(|c| c.path == "/g").collect();
        assert_eq!(g.len(), 2, "{:#?}", out.changes);
        assert_eq!(g[0].change, ChangeKind::Modified);
        assert_eq!(g[0].old.as_ref().map(|o| o.size), Some(1), "the first old state");
        assert_eq!(g[0].new.as_ref().map(|n| n.size), Some(100), "the latest new state");
        assert_eq!(g[0].changed, vec![A::Size, A::Mtime]);
        assert_eq!(g[1].change, ChangeKind::Removed);
    }

    /// A file a purge removed is explained by the transaction: the status counts it with the
    /// transaction's changes, as the grouped event does.
    #[test]
    fn a_file_a_purge_removed_counts_as_explained_by_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        let oracle = Arc::new(StartsLater::new(true, true));
        let mut a = Attributor::new(Arc::clone(&oracle) as Arc<dyn PackageOracle>, root);
        let t0 = Instant::now();
        let removed = realtime_change("/f", ChangeKind::Removed, Some(3), None, vec![]);
        assert!(a.offer(Path::new("/f"), removed, t0).is_none(), "held with the purge");
        oracle.running.store(false, std::sync::atomic::Ordering::SeqCst);
        let out = a.poll(t0 + QUIET + Duration::from_secs(1));
        let ev = out.transaction.expect("one grouped event");
        assert_eq!((ev.verified, ev.outside_package_manager), (1, 0), "{ev:#?}");
        assert_eq!(ev.packages[0].old_version.as_deref(), Some("1:9.2p1-2"));
        assert_eq!(ev.packages[0].new_version, None);
        assert!(out.changes.is_empty(), "{:#?}", out.changes);
        let counts = &a.report().counts;
        assert_eq!((counts.transactions, counts.package_transaction), (1, 1), "{counts:#?}");
    }
}
