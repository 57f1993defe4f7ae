//! Clone-safe identity: `<state_dir>/identity.json` ties the agent's state to one instance.
//!
//! It records what tells instances apart: the EC2 instance id and `pendingTime` (from the
//! instance identity document), `/etc/machine-id`, when it was created, a random
//! installation id (new for every identity) and the SHA-256 of the client certificate in use.
//!
//! At every daemon start (and `run --once`: both deliver reports) the recorded facts are
//! compared with the machine's ([`decide`]):
//!
//! - **On EC2 the instance id decides.** A different instance id means this disk now runs in
//!   another instance: an AMI baked with the agent's state, a snapshot restored into a new
//!   instance, a volume moved. Two instances can never share an instance id, so the same id
//!   means the same instance, whatever else changed.
//! - **`pendingTime` alone never does.** AWS regenerates the identity document at every stop
//!   and start (and `pendingTime` is the launch time of the current run of the instance), so
//!   a changed `pendingTime` with the same instance id is a stop/start or a hibernation: the
//!   identity is kept, the new value recorded and logged. Treating it as a clone would cost
//!   the instance its certificate at every stop.
//! - **Off EC2 (or when the instance id cannot be read) `/etc/machine-id` decides.** systemd
//!   generates it at first boot when an image ships it empty (docs/ami.md). When neither side
//!   knows an instance id and a machine id is missing, the identity is kept (nothing says it is
//!   another machine), with a log line saying the check was partial.
//!
//! On a mismatch the old identity is discarded ([`establish`]): the spool is removed (the
//! old instance's reports must not be sent under the new identity; counted as dropped), the
//! history, report sequence and change-tracking inventories (packages, listeners) with it;
//! the FIM baseline is kept but marked golden ([`GOLDEN_FILE`]: differences found by the
//! first verification are the image's drift, reported with `golden_baseline: true`, not
//! attacks on this instance); the certificate recorded for the old identity is retired (the
//! shipper holds until the certificate files hold another one); a new identity is written;
//! and an [`REINITIALISED`] event, a log line and `agentctl status` say so.
//!
//! Security: the file is written atomically 0600 in the private state directory, read without
//! following symlinks, as a regular file, at most 64 KiB, every field validated. A damaged or
//! hostile file is an error naming it and is handled as "no identity": a new identity is
//! created (nothing else is discarded: nothing says the state belongs to another machine).

use guestward_core::{Event, Timestamp};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The identity file in the state directory.
pub const IDENTITY_FILE: &str = "identity.json";
/// Present while the FIM baseline is a golden one (from an image, or kept across a clone)
/// that the first verification on this instance has not yet re-verified.
pub const GOLDEN_FILE: &str = "fim-golden.json";
/// The event kind reporting a discarded identity.
pub const REINITIALISED: &str = "identity.reinitialised";
/// The identity file's cap: a few hundred bytes are normal.
const MAX_FILE_BYTES: u64 = 64 << 10;
/// Longest string field accepted.
const MAX_FIELD_CHARS: usize = 256;
/// Retired certificates remembered (oldest forgotten first).
const MAX_RETIRED: usize = 16;
/// The format written.
const FORMAT: u32 = 1;

/// The files of the state directory that describe one instance's past (besides the spool):
/// removed with its identity, and by `prepare-image`.
pub fn instance_files() -> [(&'static str, &'static str); 6] {
    [
        (guestward_history::DB_FILE, "event history"),
        ("events.db-wal", "event history (write-ahead log)"),
        ("events.db-shm", "event history (shared memory)"),
        (crate::pipeline::SEQUENCE_FILE, "report sequence"),
        (guestward_packages::delta::STATE_FILE, "package inventory (change tracking)"),
        (crate::collect::network::LISTENER_STATE_FILE, "listener inventory (change tracking)"),
    ]
}

/// The FIM baseline's files.
pub fn fim_files() -> [&'static str; 3] {
    [guestward_fim::store::DB_FILE, "fim.db-wal", "fim.db-shm"]
}

/// Why the identity could not be read or written. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Unreadable, not a regular file, too large, not JSON of the expected shape.
    #[error("{path}: {message}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Could not be written or a file could not be removed.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// The content of `identity.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// File format (1).
    pub format: u32,
    /// Random, new for every identity.
    pub installation_id: String,
    /// When this identity was created.
    pub created_at: Timestamp,
    /// The EC2 instance id, when known.
    pub instance_id: Option<String>,
    /// `pendingTime` when last checked.
    pub pending_time: Option<String>,
    /// `/etc/machine-id`, when set.
    pub machine_id: Option<String>,
    /// SHA-256 (hex) of the client certificate this identity uses; `None` while it has none
    /// (no `[transport]`, or waiting for a certificate after a re-initialisation).
    pub certificate_sha256: Option<String>,
    /// Certificates of earlier identities of this disk: never presented again.
    #[serde(default)]
    pub retired_certificates: Vec<String>,
    /// The last re-initialisation, when this identity replaced another.
    #[serde(default)]
    pub reinitialised: Option<Reinitialised>,
}

/// Why and when an identity replaced another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reinitialised {
    /// When.
    pub at: Timestamp,
    /// Why, in one sentence.
    pub reason: String,
    /// The previous identity's installation id (`None`: it was unreadable).
    pub previous_installation_id: Option<String>,
    /// The previous instance id.
    pub previous_instance_id: Option<String>,
    /// The previous machine id.
    pub previous_machine_id: Option<String>,
}

/// What the machine says now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The EC2 instance id (IMDS, else the firmware), when known.
    pub instance_id: Option<String>,
    /// `pendingTime` from the identity document, when read.
    pub pending_time: Option<String>,
    /// `/etc/machine-id`, when set.
    pub machine_id: Option<String>,
}

/// What [`decide`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The same machine; notes for the log (a stop/start, a fact learned, a partial check).
    Keep(Vec<String>),
    /// Another machine: discard, with the reason.
    Discard(String),
}

/// The comparison rule (see the module documentation).
pub fn decide(stored: &Identity, now: &Observed) -> Decision {
    let mut notes = Vec::new();
    match (&stored.instance_id, &now.instance_id) {
        (Some(old), Some(new)) if old != new => {
            return Decision::Discard(format!(
                "the instance id changed from {old} to {new}: this disk now runs in another instance \
                 (an image or snapshot of {old})"
            ));
        }
        (Some(_), Some(_)) => {
            if let (Some(old), Some(new)) = (&stored.pending_time, &now.pending_time)
                && old != new
            {
                notes.push(format!(
                    "pendingTime changed from {old} to {new} with the same instance id: the instance \
                     was stopped and started; identity kept"
                ));
            }
            if let (Some(old), Some(new)) = (&stored.machine_id, &now.machine_id)
                && old != new
            {
                notes.push(format!(
                    "machine-id changed from {old} to {new} on the same instance: identity kept (the \
                     instance id decides on EC2)"
                ));
            }
            return Decision::Keep(notes);
        }
        (Some(old), None) => notes.push(format!(
            "the instance id cannot be read now (recorded: {old}): checked by machine-id only"
        )),
        (None, Some(new)) => notes.push(format!("instance id {new} recorded (unknown until now)")),
        (None, None) => {}
    }
    match (&stored.machine_id, &now.machine_id) {
        (Some(old), Some(new)) if old != new => Decision::Discard(format!(
            "/etc/machine-id changed from {old} to {new}: this state was copied from another machine"
        )),
        (Some(_), Some(_)) => Decision::Keep(notes),
        _ => {
            if stored.instance_id.is_none() || now.instance_id.is_none() {
                notes.push("no machine-id to compare: identity kept unverified".to_string());
            }
            Decision::Keep(notes)
        }
    }
}

/// What [`establish`] found and did.
#[derive(Debug)]
pub struct Outcome {
    /// The identity in force (written).
    pub identity: Identity,
    /// `identity.reinitialised`, when the identity found was discarded or unreadable.
    pub event: Option<Event>,
    /// Files and directories removed.
    pub removed: Vec<String>,
    /// Spooled reports dropped with the old identity.
    pub spool_reports_dropped: u64,
}

/// Checks the recorded identity against `now` and the certificate in use (`certificate`:
/// its SHA-256, when `[transport]` has one), discards it on a mismatch, and writes the
/// identity in force. Logs what it did.
pub fn establish(
    state_dir: &Path,
    now: &Observed,
    certificate: Option<&str>,
) -> Result<Outcome, IdentityError> {
    let path = state_dir.join(IDENTITY_FILE);
    // `Some`: the identity on disk, kept; only a change is written.
    let mut on_disk = None;
    let (identity, reinit, removed, dropped) = match load(state_dir) {
        Ok(None) => {
            tracing::info!(path = %path.display(), "agent identity created (first start on this machine)");
            (fresh(now, certificate, Vec::new(), None), false, Vec::new(), 0)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the agent identity is unusable: a new identity is created \
                (the rest of the state is kept: nothing says it belongs to another machine)");
            let why = Reinitialised {
                at: Timestamp::now(),
                reason: format!("identity.json was unusable ({e})"),
                previous_installation_id: None,
                previous_instance_id: None,
                previous_machine_id: None,
            };
            (fresh(now, certificate, Vec::new(), Some(why)), true, Vec::new(), 0)
        }
        Ok(Some(old)) => match decide(&old, now) {
            Decision::Keep(notes) => {
                for note in &notes {
                    tracing::info!(path = %path.display(), "agent identity: {note}");
                }
                on_disk = Some(old.clone());
                (kept(old, now, certificate), false, Vec::new(), 0)
            }
            Decision::Discard(reason) => {
                let (removed, dropped) = discard(state_dir)?;
                let mut retired = old.retired_certificates.clone();
                if let Some(fp) = &old.certificate_sha256 {
                    retired.push(fp.clone());
                }
                let why = Reinitialised {
                    at: Timestamp::now(),
                    reason,
                    previous_installation_id: Some(old.installation_id.clone()),
                    previous_instance_id: old.instance_id.clone(),
                    previous_machine_id: old.machine_id.clone(),
                };
                (fresh(now, certificate, retired, Some(why)), true, removed, dropped)
            }
        },
    };
    if on_disk.as_ref() != Some(&identity) {
        match save(state_dir, &identity) {
            Ok(()) => {}
            // The state of another identity was discarded: what is written must say whose the
            // state directory is now, or the next start would judge it again by the old file.
            Err(e) if !removed.is_empty() || dropped > 0 => return Err(e),
            // Kept or new: the identity holds in memory for this process, and the next start
            // writes it. A full state disk (a user can fill it) must not stop the agent.
            Err(e) => {
                tracing::warn!(error = %e, "agent identity not written; this process uses it, the next start writes it")
            }
        }
    }
    let event = reinit.then(|| reinitialised_event(&identity, &removed, dropped, certificate));
    if let (Some(event), Some(why)) = (&event, &identity.reinitialised) {
        tracing::warn!(
            reason = %why.reason,
            previous_instance_id = why.previous_instance_id.as_deref().unwrap_or("-"),
            instance_id = identity.instance_id.as_deref().unwrap_or("-"),
            spool_reports_dropped = dropped,
            removed = %removed.join(", "),
            credentials = %event.data["credentials"].as_str().unwrap_or("-"),
            "agent identity re-initialised: the state found belonged to another identity"
        );
    }
    Ok(Outcome { identity, event, removed, spool_reports_dropped: dropped })
}

/// [`establish`] for a configuration: observes the machine (IMDS when this is EC2 or an
/// endpoint is configured, else the firmware's instance id; `/etc/machine-id`) and the
/// client certificate `[transport]` names, then checks and writes the identity.
///
/// `imds`: the process's IMDS collector, when it has one already (the daemon shares it with
/// its cloud collector, so the process holds one IMDS token); `None` builds one for this check.
pub async fn establish_for(
    config: &crate::config::Config,
    imds: Option<&guestward_cloud::CloudCollector>,
) -> Result<Outcome, IdentityError> {
    let now = match imds {
        Some(collector) => observe(collector).await,
        None => match guestward_cloud::CloudCollector::new(&config.imds) {
            Ok(collector) => observe(&collector).await,
            // An unusable `[imds]`: the daemon refuses it later with the reason.
            Err(_) => observe_offline(),
        },
    };
    let certificate = if config.transport.enabled {
        // Unreadable: no fingerprint here; the shipper then refuses to start with the reason.
        config
            .transport
            .cert_file
            .as_deref()
            .and_then(|p| guestward_transport::shipper::certificate_sha256(p).ok())
    } else {
        None
    };
    let state_dir = config.agent.state_dir.as_path().to_path_buf();
    tokio::task::spawn_blocking(move || establish(&state_dir, &now, certificate.as_deref())).await.map_err(
        |e| IdentityError::Write {
            path: PathBuf::from(IDENTITY_FILE),
            message: format!("the identity check failed: {e}"),
        },
    )?
}

/// The most the identity check waits for instance metadata at start.
const IMDS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

/// What this machine says it is now, without instance metadata: the firmware's instance id
/// and `/etc/machine-id`.
fn observe_offline() -> Observed {
    let root = guestward_core::HostRoot::live();
    Observed {
        instance_id: guestward_cloud::instance_id_from_firmware(&root),
        pending_time: None,
        machine_id: machine_id(&root),
    }
}

fn machine_id(root: &guestward_core::HostRoot) -> Option<String> {
    guestward_host::read_machine_id(root).unwrap_or_else(|p| {
        tracing::warn!(problem = %p.message, "/etc/machine-id unreadable: not used to check the agent identity");
        None
    })
}

/// What this machine says it is now. IMDS is asked only where the cloud collector would ask
/// (EC2 by the local pre-check, or an explicit endpoint), through `collector`'s client.
pub async fn observe(collector: &guestward_cloud::CloudCollector) -> Observed {
    let root = guestward_core::HostRoot::live();
    let machine_id = machine_id(&root);
    let (mut instance_id, mut pending_time) = (None, None);
    if collector.should_watch(&root)
        && let Some(client) = collector.client()
    {
        let path = "/latest/dynamic/instance-identity/document";
        match tokio::time::timeout(IMDS_DEADLINE, client.get(path)).await {
            Ok(Ok(Some(body))) => (instance_id, pending_time) = parse_document(&body),
            Ok(Ok(None)) => tracing::warn!("instance metadata has no identity document (404)"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the instance identity document could not be read: the agent identity is checked without it")
            }
            Err(_) => tracing::warn!(
                "instance metadata did not answer within 15 s: the agent identity is checked without it"
            ),
        }
    }
    if instance_id.is_none() && root.is_live() {
        instance_id = guestward_cloud::instance_id_from_firmware(&root);
    }
    Observed { instance_id, pending_time, machine_id }
}

/// `instanceId` and `pendingTime` of an identity document, each only when well-formed.
fn parse_document(body: &str) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Doc {
        instance_id: Option<String>,
        pending_time: Option<String>,
    }
    let Ok(doc) = serde_json::from_str::<Doc>(body) else {
        tracing::warn!(
            "the instance identity document is not JSON: the agent identity is checked without it"
        );
        return (None, None);
    };
    let instance = doc.instance_id.filter(|i| guestward_cloud::looks_like_instance_id(i));
    let pending = doc
        .pending_time
        .filter(|p| !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_graphic()));
    (instance, pending)
}

fn fresh(
    now: &Observed,
    certificate: Option<&str>,
    mut retired: Vec<String>,
    reinitialised: Option<Reinitialised>,
) -> Identity {
    retired.dedup();
    let excess = retired.len().saturating_sub(MAX_RETIRED);
    retired.drain(..excess);
    let certificate_sha256 = certificate.filter(|fp| !retired.iter().any(|r| r == fp)).map(str::to_string);
    Identity {
        format: FORMAT,
        installation_id: uuid::Uuid::new_v4().to_string(),
        created_at: Timestamp::now(),
        instance_id: now.instance_id.clone(),
        pending_time: now.pending_time.clone(),
        machine_id: now.machine_id.clone(),
        certificate_sha256,
        retired_certificates: retired,
        reinitialised,
    }
}

/// The kept identity with what was learned now (facts, a rotated certificate).
fn kept(mut id: Identity, now: &Observed, certificate: Option<&str>) -> Identity {
    if now.instance_id.is_some() {
        id.instance_id.clone_from(&now.instance_id);
    }
    if now.pending_time.is_some() {
        id.pending_time.clone_from(&now.pending_time);
    }
    if now.machine_id.is_some() {
        id.machine_id.clone_from(&now.machine_id);
    }
    observe_certificate(&mut id, certificate);
    id
}

/// Records `certificate` as this identity's, unless it is retired. Returns whether it changed.
fn observe_certificate(id: &mut Identity, certificate: Option<&str>) -> bool {
    let Some(fp) = certificate else { return false };
    if id.retired_certificates.iter().any(|r| r == fp) || id.certificate_sha256.as_deref() == Some(fp) {
        return false;
    }
    id.certificate_sha256 = Some(fp.to_string());
    true
}

fn reinitialised_event(id: &Identity, removed: &[String], dropped: u64, certificate: Option<&str>) -> Event {
    let why = id.reinitialised.as_ref();
    let credentials = credentials_word(id, certificate);
    Event {
        kind: REINITIALISED.to_string(),
        time: Timestamp::now(),
        data: serde_json::json!({
            "reason": why.map(|w| w.reason.clone()),
            "previous": {
                "installation_id": why.and_then(|w| w.previous_installation_id.clone()),
                "instance_id": why.and_then(|w| w.previous_instance_id.clone()),
                "machine_id": why.and_then(|w| w.previous_machine_id.clone()),
            },
            "current": {
                "installation_id": id.installation_id,
                "instance_id": id.instance_id,
                "pending_time": id.pending_time,
                "machine_id": id.machine_id,
            },
            "spool_reports_dropped": dropped,
            "removed": removed,
            "credentials": credentials,
        }),
    }
}

/// `in_use`, `waiting` (the certificate files hold a retired certificate) or `none`.
fn credentials_word(id: &Identity, certificate: Option<&str>) -> &'static str {
    match certificate {
        None => "none",
        Some(fp) if id.retired_certificates.iter().any(|r| r == fp) => "waiting",
        Some(_) => "in_use",
    }
}

/// Reads `identity.json`: `None` when there is none.
pub fn load(state_dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let path = state_dir.join(IDENTITY_FILE);
    let unusable = |message: String| IdentityError::Unusable { path: path.clone(), message };
    let bytes = match guestward_core::read_regular_file_capped(&path, MAX_FILE_BYTES, false) {
        Ok(b) => b,
        Err(guestward_core::HostFsError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(unusable(e.to_string())),
    };
    let id: Identity =
        serde_json::from_slice(&bytes).map_err(|e| unusable(format!("not an identity: {e}")))?;
    validate(&id).map_err(unusable)?;
    Ok(Some(id))
}

/// Every field of a file read from disk within its bounds and shape.
fn validate(id: &Identity) -> Result<(), String> {
    if id.format != FORMAT {
        return Err(format!("format {} is not {FORMAT}", id.format));
    }
    if uuid::Uuid::parse_str(&id.installation_id).is_err() {
        return Err("installation_id is not a UUID".into());
    }
    for (key, value) in
        [("instance_id", &id.instance_id), ("pending_time", &id.pending_time), ("machine_id", &id.machine_id)]
    {
        if let Some(v) = value
            && (v.is_empty() || v.chars().count() > MAX_FIELD_CHARS || v.chars().any(char::is_control))
        {
            return Err(format!(
                "{key} is empty, longer than {MAX_FIELD_CHARS} characters or has control characters"
            ));
        }
    }
    let fingerprint = |f: &String| f.len() == 64 && f.bytes().all(|b| b.is_ascii_hexdigit());
    if id.certificate_sha256.as_ref().is_some_and(|f| !fingerprint(f))
        || !id.retired_certificates.iter().all(fingerprint)
    {
        return Err("a certificate fingerprint is not 64 hexadecimal digits".into());
    }
    if id.retired_certificates.len() > MAX_RETIRED {
        return Err(format!("more than {MAX_RETIRED} retired certificates"));
    }
    if let Some(r) = &id.reinitialised
        && r.reason.chars().count() > 4 * MAX_FIELD_CHARS
    {
        return Err("reinitialised.reason is too long".into());
    }
    Ok(())
}

/// Writes `identity.json` atomically, 0600.
pub fn save(state_dir: &Path, id: &Identity) -> Result<(), IdentityError> {
    let path = state_dir.join(IDENTITY_FILE);
    let json = serde_json::to_vec_pretty(id)
        .map_err(|e| IdentityError::Write { path: path.clone(), message: e.to_string() })?;
    guestward_core::state_file::write_atomic(&path, MAX_FILE_BYTES, |out| {
        out.write_all(&json)?;
        out.write_all(b"\n")
    })
    .map_err(|e| {
        let message = match e {
            guestward_core::state_file::StateFileError::Io { source, .. } => {
                format!("cannot write state file: {source}")
            }
            other @ guestward_core::state_file::StateFileError::TooLarge { .. } => other.to_string(),
        };
        IdentityError::Write { path: path.clone(), message }
    })
}

/// Removes what belonged to the old identity: the spool (its reports counted), the history,
/// the sequence and the change-tracking inventories. Marks the FIM baseline golden. Returns
/// what was removed and how many spooled reports were dropped.
fn discard(state_dir: &Path) -> Result<(Vec<String>, u64), IdentityError> {
    let mut removed = Vec::new();
    let spool = crate::transport::Transport::spool_dir(state_dir);
    let dropped = spooled_reports(&spool);
    if remove_path(&spool)? {
        removed.push(spool.display().to_string());
    }
    for (name, _) in instance_files() {
        let path = state_dir.join(name);
        if remove_path(&path)? {
            removed.push(path.display().to_string());
        }
    }
    if state_dir.join(guestward_fim::store::DB_FILE).exists() {
        mark_golden(state_dir, "kept from the identity this disk had before it was cloned")?;
    }
    Ok((removed, dropped))
}

/// Reports waiting in a spool directory (`*.zst` entries), without opening them.
pub fn spooled_reports(spool: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(spool) else { return 0 };
    let n = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".zst"))
        .count();
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Removes a file, or a directory with everything in it (symlinks are removed, never
/// followed). `false` when there was nothing.
pub fn remove_path(path: &Path) -> Result<bool, IdentityError> {
    let fail = |e: std::io::Error| IdentityError::Write {
        path: path.to_path_buf(),
        message: format!("cannot remove it: {e}"),
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fail(e)),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).map(|()| true).map_err(fail),
        Ok(_) => std::fs::remove_file(path).map(|()| true).map_err(fail),
    }
}

/// Writes [`GOLDEN_FILE`]: the baseline is to be re-verified, its differences reported as the
/// image's.
pub fn mark_golden(state_dir: &Path, why: &str) -> Result<(), IdentityError> {
    let path = state_dir.join(GOLDEN_FILE);
    let body = serde_json::json!({ "since": Timestamp::now(), "why": why });
    guestward_core::state_file::write_atomic(&path, MAX_FILE_BYTES, |out| writeln!(out, "{body}"))
        .map_err(|e| IdentityError::Write { path: path.clone(), message: e.to_string() })
}

/// Whether the FIM baseline is golden (not yet re-verified on this instance).
pub fn is_golden(state_dir: &Path) -> bool {
    std::fs::symlink_metadata(state_dir.join(GOLDEN_FILE)).is_ok_and(|m| m.is_file())
}

/// The identity in force in the daemon, for `agentctl status`, and the certificate it binds.
#[derive(Debug)]
pub struct IdentityState {
    state_dir: PathBuf,
    identity: Mutex<Identity>,
}

impl IdentityState {
    /// The identity [`establish`] put in force.
    pub fn new(state_dir: &Path, identity: Identity) -> Self {
        Self { state_dir: state_dir.to_path_buf(), identity: Mutex::new(identity) }
    }

    /// Certificates this disk must never present again.
    pub fn retired_certificates(&self) -> Vec<String> {
        self.lock().retired_certificates.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Identity> {
        self.identity.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Binds the certificate loaded now (new certificate files after a clone, a rotation) to
    /// this identity, unless it is retired; written at once.
    pub fn observe_certificate(&self, certificate: &str) {
        let mut id = self.lock();
        if observe_certificate(&mut id, Some(certificate)) {
            tracing::info!(sha256 = certificate, "agent identity: client certificate recorded");
            if let Err(e) = save(&self.state_dir, &id) {
                tracing::warn!(error = %e, "the agent identity could not be updated");
            }
        }
    }

    /// Fills the identity block of `agentctl status`. `held`: the shipper's hold, if any;
    /// `certificate`: the certificate loaded (`None`: no `[transport]`).
    pub fn fill(
        &self,
        status: &mut guestward_report::protocol::IdentityStatus,
        held: Option<&str>,
        certificate: Option<&str>,
    ) {
        let id = self.lock();
        status.installation_id = Some(id.installation_id.clone());
        status.created_at = Some(id.created_at);
        status.pending_time.clone_from(&id.pending_time);
        if status.instance_id.is_none() {
            status.instance_id.clone_from(&id.instance_id);
        }
        status.reinitialised_at = id.reinitialised.as_ref().map(|r| r.at);
        status.reinitialised_reason = id.reinitialised.as_ref().map(|r| r.reason.clone());
        let word = if held.is_some() { "waiting" } else { credentials_word(&id, certificate) };
        status.credentials = Some(word.to_string());
        status.credentials_action = (word == "waiting").then(|| {
            "replace transport.cert_file and key_file with this instance's own certificate and key \
             (those there belong to the instance this disk was cloned from); reports wait in the \
             spool and go out without a restart"
                .to_string()
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FP_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const FP_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn observed(instance: Option<&str>, pending: Option<&str>, machine: Option<&str>) -> Observed {
        Observed {
            instance_id: instance.map(str::to_string),
            pending_time: pending.map(str::to_string),
            machine_id: machine.map(str::to_string),
        }
    }

    fn stored(now: &Observed) -> Identity {
        fresh(now, Some(FP_A), Vec::new(), None)
    }

    #[test]
    fn another_instance_id_is_a_clone_whatever_the_machine_id() {
        let a = observed(Some("i-0aaaaaaaaaaaaaaaa"), Some("2026-11-29T08:00:00Z"), Some("m1"));
        let b = observed(Some("i-0bbbbbbbbbbbbbbbb"), Some("2026-11-29T08:00:00Z"), Some("m1"));
        assert!(matches!(decide(&stored(&a), &b), Decision::Discard(r) if r.contains("i-0bbbbbbbbbbbbbbbb")));
    }

    #[test]
    fn a_stop_and_start_changes_pending_time_only_and_keeps_the_identity() {
        let a = observed(Some("i-0aaaaaaaaaaaaaaaa"), Some("2026-11-29T08:00:00Z"), Some("m1"));
        let later = observed(Some("i-0aaaaaaaaaaaaaaaa"), Some("2026-11-30T09:00:00Z"), Some("m2"));
        let Decision::Keep(notes) = decide(&stored(&a), &later) else { panic!("discarded") };
        assert!(notes.iter().any(|n| n.contains("stopped and started")), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("machine-id changed")), "{notes:?}");
    }

    #[test]
    fn off_ec2_the_machine_id_decides() {
        let a = observed(None, None, Some("m1"));
        assert_eq!(decide(&stored(&a), &a), Decision::Keep(Vec::new()));
        assert!(
            matches!(decide(&stored(&a), &observed(None, None, Some("m2"))), Decision::Discard(r) if r.contains("machine-id"))
        );
        // An unreadable instance id falls back to the machine id.
        let ec2 = observed(Some("i-0aaaaaaaaaaaaaaaa"), None, Some("m1"));
        assert!(matches!(decide(&stored(&ec2), &observed(None, None, Some("m2"))), Decision::Discard(_)));
        assert!(
            matches!(decide(&stored(&ec2), &observed(None, None, Some("m1"))), Decision::Keep(n) if !n.is_empty())
        );
        // Nothing to compare: kept, and said so.
        assert!(
            matches!(decide(&stored(&observed(None, None, None)), &a), Decision::Keep(n) if n.iter().any(|n| n.contains("unverified")))
        );
    }

    #[test]
    fn a_clone_discards_the_instance_state_keeps_the_baseline_golden_and_retires_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let a = observed(None, None, Some("m1"));
        let first = establish(state, &a, Some(FP_A)).unwrap();
        assert!(first.event.is_none());
        std::fs::create_dir(state.join("spool")).unwrap();
        std::fs::write(state.join("spool/00000000000000000001-x.zst"), b"r").unwrap();
        std::fs::write(state.join("spool/counters.json"), b"{}").unwrap();
        std::fs::write(state.join("events.db"), b"h").unwrap();
        std::fs::write(state.join("report-sequence"), b"7\n").unwrap();
        std::fs::write(state.join("fim.db"), b"f").unwrap();

        // Same machine: kept, nothing removed.
        let again = establish(state, &a, Some(FP_A)).unwrap();
        assert_eq!(again.identity.installation_id, first.identity.installation_id);
        assert!(again.event.is_none() && state.join("spool").exists());

        // machine-id changed off EC2: re-initialised.
        let out = establish(state, &observed(None, None, Some("m2")), Some(FP_A)).unwrap();
        assert_ne!(out.identity.installation_id, first.identity.installation_id);
        assert_eq!(out.spool_reports_dropped, 1);
        for gone in ["spool", "events.db", "report-sequence"] {
            assert!(!state.join(gone).exists(), "{gone} kept");
        }
        assert!(state.join("fim.db").exists() && is_golden(state));
        assert_eq!(out.identity.retired_certificates, vec![FP_A.to_string()]);
        assert_eq!(out.identity.certificate_sha256, None);
        let event = out.event.unwrap();
        assert_eq!(event.kind, REINITIALISED);
        assert_eq!(event.data["previous"]["machine_id"], "m1");
        assert_eq!(event.data["current"]["machine_id"], "m2");
        assert_eq!(event.data["credentials"], "waiting");
        assert_eq!(event.data["spool_reports_dropped"], 1);
        // Stored 0600, and read back as written.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join(IDENTITY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(state).unwrap().unwrap(), out.identity);

        // The old certificate is never bound again; a new one is.
        let state_of = IdentityState::new(state, out.identity);
        state_of.observe_certificate(FP_A);
        assert_eq!(load(state).unwrap().unwrap().certificate_sha256, None);
        state_of.observe_certificate(FP_B);
        assert_eq!(load(state).unwrap().unwrap().certificate_sha256.as_deref(), Some(FP_B));
    }

    #[test]
    fn a_damaged_or_hostile_identity_file_is_replaced_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let m = observed(None, None, Some("m1"));
        for bad in [&b"{not json"[..], br#"{"format":1}"#, &[0u8; 100][..]] {
            std::fs::write(state.join(IDENTITY_FILE), bad).unwrap();
            let e = load(state).unwrap_err().to_string();
            assert!(e.contains(IDENTITY_FILE), "{e}");
            let out = establish(state, &m, None).unwrap();
            assert!(out.identity.reinitialised.unwrap().reason.contains("unusable"));
            assert!(out.event.is_some() && out.removed.is_empty());
        }
        // A symlink is not followed; a FIFO never blocks.
        std::fs::remove_file(state.join(IDENTITY_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", state.join(IDENTITY_FILE)).unwrap();
        assert!(load(state).is_err());
        std::fs::remove_file(state.join(IDENTITY_FILE)).unwrap();
        nix::unistd::mkfifo(&state.join(IDENTITY_FILE), nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap();
        assert!(load(state).is_err());
        std::fs::remove_file(state.join(IDENTITY_FILE)).unwrap();
        // Too large.
        std::fs::write(state.join(IDENTITY_FILE), vec![b' '; 70 << 10]).unwrap();
        assert!(load(state).is_err());
    }
}
