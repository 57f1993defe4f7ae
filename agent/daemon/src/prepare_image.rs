//! `guestward-agent prepare-image` (and `agentctl prepare-image`, which runs it): run as root
//! on the build instance before an AMI is created from it. Stops the agent and removes what
//! belongs to this instance, so every instance launched from the image starts with an
//! identity of its own (docs/ami.md):
//!
//! - the identity (`identity.json`), the spool (reports not yet delivered), the event
//!   history, the report sequence and the change-tracking inventories;
//! - the client certificate and key named by `[transport] cert_file` and `key_file` (never
//!   the CA: every instance trusts the same collector);
//! - the FIM baseline, unless `--keep-baseline`: then it is kept and marked golden, to be
//!   re-verified on each instance's first boot (its differences reported as the image's).
//!
//! `/etc/machine-id` is not touched: emptying it is the image pipeline's job (the Packer
//! template does it; systemd generates a new one at first boot). Logs go to the journal, which
//! the pipeline cleans too.

use crate::config::Config;
use crate::identity;
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Exit codes of `prepare-image`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done (with --dry-run: listed, nothing changed)
  1  some item could not be removed or, without root, even checked (each is listed with the
     reason); run it again as root
  2  usage or configuration error, or agent.state_dir is not the agent's (nothing changed)
  3  refused: a guestward-agent daemon is running and could not be stopped (nothing changed)";

/// Exit code: an item could not be removed.
pub const EXIT_PARTIAL: u8 = 1;
/// Exit code: a running daemon could not be stopped.
pub const EXIT_DAEMON_RUNNING: u8 = 3;

/// The systemd unit stopped first.
const UNIT: &str = "guestward-agent.service";

/// `prepare-image` options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PrepareImageArgs {
    /// Keep the FIM baseline (marked golden: each instance's first verification reports its
    /// differences as the image's, not as attacks).
    #[arg(long)]
    pub keep_baseline: bool,
    /// List what would be stopped and removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print `{"dry_run", "service", "state_dir", "items": [{path, what, action, done, error}]}`.
    #[arg(long)]
    pub json: bool,
}

/// One thing removed (or kept).
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// The file or directory.
    pub path: String,
    /// What it is.
    pub what: String,
    /// `remove` or `mark_golden`.
    pub action: &'static str,
    /// Whether it was done (always `false` with `--dry-run`).
    pub done: bool,
    /// Why it could not be done.
    pub error: Option<String>,
}

/// What `prepare-image` did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `--dry-run`.
    pub dry_run: bool,
    /// `stopped`, `would_stop` or `not_running`.
    pub service: &'static str,
    /// The state directory.
    pub state_dir: String,
    /// Each item, in order.
    pub items: Vec<Item>,
}

/// Runs `prepare-image`; returns the exit code.
pub fn run(config: &Config, args: &PrepareImageArgs) -> anyhow::Result<u8> {
    // A refusal changes nothing; with `--json` it is an object on stdout too, as every failing
    // command's is (a bake script reads `refused` and `error`).
    let refuse = |code: u8, message: String| -> anyhow::Result<u8> {
        if args.json {
            let value = serde_json::json!({
                "refused": true,
                "dry_run": args.dry_run,
                "error": message,
                "exit_code": code,
                "state_dir": config.agent.state_dir.as_path().display().to_string(),
            });
            guestward_core::json::write_json(
                &mut guestward_core::stdio::stdout(),
                &value,
                guestward_core::json::stdout_wants_pretty(),
            )?;
        }
        guestward_core::stdio::error_line(format_args!("guestward-agent: prepare-image refused: {message}"));
        Ok(code)
    };
    let service = match stop_agent(config, args.dry_run) {
        Ok(s) => s,
        Err(message) => return refuse(EXIT_DAEMON_RUNNING, message),
    };
    let state_dir = config.agent.state_dir.as_path();
    if let Err(message) = check_state_dir(state_dir) {
        return refuse(crate::exit::USAGE, format!("agent.state_dir = {}: {message}", state_dir.display()));
    }
    // An agent that does not answer on this configuration's socket may still be at work on the
    // state directory: a daemon started with `--socket` elsewhere, a `run --once` from cron, a
    // `fim init`. Removing the identity under it left a "prepared" directory that the daemon
    // filled again seconds later. Their locks say so; holding them keeps any from starting
    // until this is done.
    let _locks = match lock_out_agents(state_dir, args.dry_run) {
        Ok(locks) => locks,
        Err(message) => return refuse(EXIT_DAEMON_RUNNING, message),
    };
    let mut items = plan(config, args.keep_baseline);
    if !args.dry_run {
        for item in items.iter_mut().filter(|i| i.error.is_none()) {
            let done = match item.action {
                "mark_golden" => {
                    identity::mark_golden(state_dir, "kept by prepare-image --keep-baseline").map(|()| true)
                }
                _ => identity::remove_path(Path::new(&item.path)),
            };
            match done {
                Ok(_) => item.done = true,
                Err(e) => item.error = Some(e.to_string()),
            }
        }
    }
    let outcome =
        Outcome { dry_run: args.dry_run, service, state_dir: state_dir.display().to_string(), items };
    let mut out = guestward_core::stdio::stdout();
    if args.json {
        guestward_core::json::write_json(
            &mut out,
            &serde_json::to_value(&outcome)?,
            guestward_core::json::stdout_wants_pretty(),
        )?;
    } else {
        render(&outcome, &mut out)?;
    }
    out.flush()?;
    let failed = outcome.items.iter().any(|i| i.error.is_some());
    Ok(if failed { EXIT_PARTIAL } else { crate::exit::OK })
}

/// The human list.
fn render(o: &Outcome, out: &mut dyn Write) -> std::io::Result<()> {
    let mut out = guestward_core::text::TerminalSafe::new(out);
    let service = match o.service {
        "stopped" => format!("stopped {UNIT}"),
        "would_stop" => format!("would stop {UNIT}"),
        _ => "the agent is not running".to_string(),
    };
    writeln!(out, "service     {service}")?;
    writeln!(out, "state dir   {}", o.state_dir)?;
    if o.items.is_empty() {
        writeln!(out, "nothing to remove: no instance state found")?;
    }
    for i in &o.items {
        let verb = match (i.action, o.dry_run, i.done) {
            (_, true, _) if i.error.is_some() => "cannot check",
            ("mark_golden", true, _) => "would keep (golden)",
            ("mark_golden", false, true) => "kept (golden)",
            (_, true, _) => "would remove",
            (_, false, true) => "removed",
            (_, false, false) => "failed",
        };
        writeln!(out, "{verb:<20} {}  ({})", i.path, i.what)?;
        if let Some(e) = &i.error {
            writeln!(out, "{:<20} {e}", "")?;
        }
    }
    if o.dry_run {
        writeln!(out, "dry run: nothing was changed")?;
    } else {
        writeln!(
            out,
            "next: empty /etc/machine-id (truncate -s 0 /etc/machine-id) and clean cloud-init \
             (cloud-init clean) before creating the image; see docs/ami.md"
        )?;
    }
    out.flush()
}

/// What belongs to this instance, in the order it is removed.
fn plan(config: &Config, keep_baseline: bool) -> Vec<Item> {
    let dir = config.agent.state_dir.as_path();
    let mut items = Vec::new();
    let mut add = |path: PathBuf, what: String, action: &'static str| {
        // Only "not found" means there is nothing to remove: a path that cannot be looked at
        // (prepare-image run without root on the agent's 0700 state) must not pass for a clean
        // image, so it is listed with its error and the run exits 1.
        let error = match std::fs::symlink_metadata(&path) {
            _ if action == "mark_golden" => None,
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => Some(format!("cannot be checked: {e}; run prepare-image as root")),
        };
        items.push(Item { path: path.display().to_string(), what, action, done: false, error });
    };
    add(dir.join(identity::IDENTITY_FILE), "agent identity".into(), "remove");
    let spool = crate::transport::Transport::spool_dir(dir);
    let reports = identity::spooled_reports(&spool);
    add(spool, format!("spool: {reports} report(s) not delivered"), "remove");
    for (name, what) in identity::instance_files() {
        add(dir.join(name), what.into(), "remove");
    }
    let has_baseline = dir.join(guestward_fim::store::DB_FILE).exists();
    if keep_baseline && has_baseline {
        add(
            dir.join(identity::GOLDEN_FILE),
            "FIM baseline kept, marked golden: re-verified at first boot".into(),
            "mark_golden",
        );
    } else {
        for name in identity::fim_files() {
            add(dir.join(name), "FIM baseline".into(), "remove");
        }
        add(dir.join(identity::GOLDEN_FILE), "golden baseline marker".into(), "remove");
    }
    for (path, what) in [
        (&config.transport.cert_file, "client certificate issued to this instance (transport.cert_file)"),
        (&config.transport.key_file, "client key of this instance (transport.key_file)"),
    ] {
        if let Some(p) = path {
            add(p.clone(), what.into(), "remove");
        }
    }
    items
}

/// Takes the state directory's agent and FIM locks (none when the directory does not exist);
/// the reason, naming the holder, when a process holds one. A dry run, which changes nothing,
/// is refused only for a holder: a lock it may not open (not root) is the listing's business.
fn lock_out_agents(state_dir: &Path, dry_run: bool) -> Result<Vec<guestward_core::lock::DirLock>, String> {
    if !state_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut locks = Vec::new();
    for name in [crate::daemon::AGENT_LOCK_FILE, guestward_fim::lock::LOCK_FILE] {
        match guestward_core::lock::DirLock::acquire(state_dir, name) {
            Ok(lock) => locks.push(lock),
            Err(guestward_core::lock::LockError::Busy { holder, .. }) => {
                return Err(format!(
                    "another process uses the state directory {} ({holder}): stop it first, then \
                     run prepare-image again; nothing was changed",
                    state_dir.display()
                ));
            }
            Err(_) if dry_run => {}
            Err(other) => return Err(format!("the state directory's lock: {other}; nothing was changed")),
        }
    }
    Ok(locks)
}

/// Stops the agent: `systemctl stop` when systemd runs this host and the unit is active;
/// refused when a daemon still answers on the control socket.
fn stop_agent(config: &Config, dry_run: bool) -> Result<&'static str, String> {
    let socket = config.control.socket_path.as_path();
    let systemd = Path::new("/run/systemd/system").is_dir();
    let active = systemd
        && std::process::Command::new("systemctl")
            .args(["is-active", "--quiet", UNIT])
            .status()
            .is_ok_and(|s| s.success());
    if active {
        if dry_run {
            return Ok("would_stop");
        }
        let stopped = std::process::Command::new("systemctl").args(["stop", UNIT]).status();
        match stopped {
            Ok(s) if s.success() => {}
            Ok(s) => {
                return Err(format!(
                    "`systemctl stop {UNIT}` failed ({s}); stop the agent and run prepare-image again"
                ));
            }
            Err(e) => {
                return Err(format!(
                    "cannot run systemctl ({e}); stop the agent and run prepare-image again"
                ));
            }
        }
    }
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(format!(
            "a guestward-agent daemon answers on {}{}: stop it first (`systemctl stop {UNIT}`, or \
             send SIGTERM to its process), then run prepare-image again; nothing was changed",
            socket.display(),
            if active { " after systemctl stop" } else { " and is not the systemd unit" }
        ));
    }
    Ok(if active { "stopped" } else { "not_running" })
}

/// The daemon's rules for its state directory, for a directory it may not create: a real
/// directory (not a symlink), private (no access for group or others, as the daemon keeps it),
/// owned by this user, root or the `guestward` service user. A shared directory such as
/// `/var/lib` or `/tmp` is refused: nothing in it is removed.
fn check_state_dir(dir: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.is_dir() {
        return Err("is not a directory (a symlink is not followed)".into());
    }
    let own = nix::unistd::geteuid().as_raw();
    let service = nix::unistd::User::from_name("guestward").ok().flatten().map(|u| u.uid.as_raw());
    if meta.uid() != own && meta.uid() != 0 && Some(meta.uid()) != service {
        return Err(format!(
            "is owned by uid {}, neither root, this user nor the guestward user: not the agent's state directory",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "has mode {mode:04o}: the agent's state directory is private (0700); a shared directory \
             (such as /var/lib or /tmp) is not the agent's, and nothing in it is removed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_shared_or_foreign_state_dir_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_state_dir(&dir).unwrap_err().contains("0755"));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_state_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&dir, top.path().join("link")).unwrap();
        assert!(check_state_dir(&top.path().join("link")).is_err());
        check_state_dir(&top.path().join("missing")).unwrap();
    }
}
