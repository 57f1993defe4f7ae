//! One-shot mode for cron and for comparison with AIDE: `guestward-agent fim init | check |
//! update`. The daemon's CLI parses arguments and calls these; they use the same engine as the
//! realtime monitor.
//!
//! Exit codes of `check`/`update` ([`CheckReport::exit_code`]): 0 no changes, 1 changes found,
//! 2 when the baseline cannot be relied on (tampered, damaged rows, or a configured key that
//! sealed nothing: the report is still printed); any [`FimError`] maps to 2 as well.

use crate::config::Config;
use crate::engine::{Fim, FimError, Purpose, Scope};
use crate::events::Mechanism;
pub use crate::model::{CheckReport, EXIT_CHANGES, EXIT_CLEAN, EXIT_ERROR, MAX_REPORTED_CHANGES};
use crate::package::PackageOracle;
use crate::scan::{Rehash, ScanOptions, ScanProgress};
use guestward_core::HostRoot;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

/// Inputs shared by the one-shot commands (`--config`, `--state-dir`, `--root`).
#[derive(Debug, Clone)]
pub struct OneShot {
    /// The `[fim]` section.
    pub config: Config,
    /// Where `fim.db` lives.
    pub state_dir: PathBuf,
    /// The filesystem checked.
    pub root: HostRoot,
    /// Draw a progress bar on stderr when it is a terminal.
    pub progress_bar: bool,
}

/// Builds the package oracle of a root for the one-shot commands (the agent passes one; see
/// [`crate::attribution`]).
pub type OracleFactory<'a> = &'a dyn Fn(&HostRoot) -> Option<Arc<dyn PackageOracle>>;

fn run(o: &OneShot, purpose: Purpose, rehash: Rehash) -> Result<CheckReport, FimError> {
    run_packaged_with(o, purpose, rehash, &|_| None)
}

/// `init`, `check` or `update` with changes attributed to packages, and package files in
/// scope verified against their packages (the baseline's trust anchor), by the oracle
/// `packages` builds for the root.
pub fn run_packaged(
    o: &OneShot,
    purpose: Purpose,
    packages: OracleFactory<'_>,
) -> Result<CheckReport, FimError> {
    run_packaged_with(o, purpose, Rehash::All, packages)
}

/// [`run_packaged`], metadata first with [`Rehash::Changed`] (`--fast`).
pub fn run_packaged_with(
    o: &OneShot,
    purpose: Purpose,
    rehash: Rehash,
    packages: OracleFactory<'_>,
) -> Result<CheckReport, FimError> {
    let mut fim = Fim::new(o.config.clone(), o.root.clone(), &o.state_dir)?;
    // Held until the report is made: no other process scans this baseline meanwhile.
    let _lock = crate::lock::StateLock::acquire(&o.state_dir)?;
    if let Some(oracle) = packages(&o.root) {
        fim = fim.with_packages(oracle);
    }
    let created = if purpose == Purpose::Init { fim.create_key_if_missing() } else { None };
    // A baseline the configuration says to seal is not built unsealed.
    if let (Purpose::Init, Some(e)) = (purpose, fim.unusable_key()) {
        return Err(e);
    }
    let bar = (o.progress_bar && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} entries {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let draw = |p: &ScanProgress| {
        if let Some(bar) = &bar {
            // Until the walk is over the total is a guess: the baseline's size, or what was seen.
            let len = if p.walk_done { p.entries_seen } else { p.entries_seen.max(p.baseline_entries) };
            bar.set_length(len);
            bar.set_position(p.entries_done);
            bar.set_message(format!("{} hashed", guestward_core::human::bytes(p.bytes_hashed)));
        }
    };
    // Before the scan's threads exist: they inherit the blocked signals.
    let interrupts = Interrupts::watch();
    let opts = ScanOptions {
        rate: o.config.initial_scan_rate,
        threads: o.config.threads,
        // Without a bar nothing is drawn, and the scan then spares the count of the baseline's
        // rows that the bar's total starts from (a pass over the whole baseline).
        progress: bar.as_ref().map(|_| &draw as &(dyn Fn(&ScanProgress) + Sync)),
        cancel: interrupts.as_ref().map(|i| i.cancel.as_ref()),
        pace: None,
        rehash,
    };
    let mut changes = Vec::new();
    let summary = fim.scan(purpose, &Scope::All, Mechanism::Rescan, &opts, &mut |c| {
        if changes.len() < MAX_REPORTED_CHANGES {
            changes.push(c);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(signal) = interrupts.and_then(Interrupts::finish) {
        return Err(FimError::Interrupted {
            signal: signal.as_str().to_string(),
            number: signal as i32,
            resumable: purpose == Purpose::Init,
        });
    }
    // The diff streams present paths before vanished ones: in path order, a directory's
    // added, removed and modified entries read together.
    changes.sort_by(|a: &crate::events::FimChange, b| a.path.cmp(&b.path));
    let mut summary = summary;
    if let Some(path) = created {
        summary.baseline.detail.push_str(&format!("; the key was created at {} (mode 0600)", path.display()));
    }
    Ok(CheckReport { summary, changes })
}

/// `fim init`: builds the baseline (resuming an interrupted init).
pub fn init(o: &OneShot) -> Result<CheckReport, FimError> {
    run(o, Purpose::Init, Rehash::All)
}

/// `fim check`: compares with the baseline, changes nothing.
pub fn check(o: &OneShot) -> Result<CheckReport, FimError> {
    run(o, Purpose::Check, Rehash::All)
}

/// `fim check --fast`: [`check`] reading only the entries whose size, mtime, ctime or inode
/// (or mode, owner, type) moved since the baseline ([`Rehash::Changed`]).
pub fn check_fast(o: &OneShot) -> Result<CheckReport, FimError> {
    run(o, Purpose::Check, Rehash::Changed)
}

/// `fim update`: reports changes and accepts the current state as the new baseline.
pub fn update(o: &OneShot) -> Result<CheckReport, FimError> {
    run(o, Purpose::Update, Rehash::All)
}

/// `fim update --fast`: [`update`], metadata first as [`check_fast`].
pub fn update_fast(o: &OneShot) -> Result<CheckReport, FimError> {
    run(o, Purpose::Update, Rehash::Changed)
}

/// SIGINT and SIGTERM while a one-shot command scans. They once killed it mid-line: the
/// progress bar left unfinished, no word of what became of the work. Now the scan stops at its
/// next file, nothing is accepted, and the command says so (what `fim init` hashed stays
/// staged, and the next run resumes it).
///
/// How, without a handler (no `unsafe`): both signals are blocked in this thread before the
/// scan's threads start (they inherit the mask), and one thread takes them with `sigwait`.
/// When the scan ends first, that thread is woken with a signal of its own and told to stop.
struct Interrupts {
    cancel: Arc<std::sync::atomic::AtomicBool>,
    done: Arc<std::sync::atomic::AtomicBool>,
    taken: Arc<std::sync::Mutex<Option<nix::sys::signal::Signal>>>,
    watcher: std::thread::JoinHandle<()>,
    previous_mask: nix::sys::signal::SigSet,
}

impl Interrupts {
    /// `None` when the signals cannot be taken this way (the command then dies of them, as
    /// before).
    fn watch() -> Option<Self> {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
        let mut wanted = SigSet::empty();
        wanted.add(Signal::SIGINT);
        wanted.add(Signal::SIGTERM);
        let mut previous_mask = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&wanted), Some(&mut previous_mask)).ok()?;
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let taken = Arc::new(std::sync::Mutex::new(None));
        let (c, d, t) = (Arc::clone(&cancel), Arc::clone(&done), Arc::clone(&taken));
        let spawned = std::thread::Builder::new().name("fim-signals".into()).spawn(move || {
            if let Ok(signal) = wanted.wait()
                && !d.load(std::sync::atomic::Ordering::SeqCst)
            {
                if let Ok(mut slot) = t.lock() {
                    *slot = Some(signal);
                }
                c.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        match spawned {
            Ok(watcher) => Some(Self { cancel, done, taken, watcher, previous_mask }),
            Err(_) => {
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous_mask), None);
                None
            }
        }
    }

    /// Ends the watch; the signal that stopped the scan, if one did. A signal that comes
    /// after this is delivered as usual once the mask is restored.
    fn finish(self) -> Option<nix::sys::signal::Signal> {
        use std::os::unix::thread::JoinHandleExt;
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        if !self.watcher.is_finished() {
            // Wakes its `sigwait`; it sees `done` and takes nothing.
            let _ = nix::sys::pthread::pthread_kill(
                self.watcher.as_pthread_t(),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let _ = self.watcher.join();
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&self.previous_mask),
            None,
        );
        self.taken.lock().ok().and_then(|t| *t)
    }
}
