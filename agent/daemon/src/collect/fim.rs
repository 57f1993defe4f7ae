//! File integrity: the `fim` section (baseline state, realtime coverage, open gaps) and its
//! `GW-FIM-*` findings. The changes themselves are events, delivered by the monitor's sink
//! as they happen.

use super::Collected;
use guestward_core::Section;
use guestward_fim::FimReport;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the FIM section comes from.
#[derive(Debug, Clone)]
pub enum FimCollector {
    /// The daemon's running monitor.
    Monitor(Arc<guestward_fim::Monitor>),
    /// A one-shot scan: the stored baseline in this state directory, opened read-only and
    /// never created.
    Stored(PathBuf),
    /// Not collected, and why.
    Off(&'static str),
}

impl FimCollector {
    /// One collection.
    pub fn collect(&self) -> Collected<FimReport> {
        let section = match self {
            Self::Monitor(monitor) => monitor.section(),
            Self::Stored(state_dir) if !readable_dir(state_dir) => Section::skipped(format!(
                "the stored baseline in {} is readable only by the agent's user: run as root, or ask the \
                 running agent (`agentctl fim status`)",
                state_dir.display()
            )),
            Self::Stored(state_dir) => FimReport::from_state_dir(state_dir),
            Self::Off(why) => Section::skipped(*why),
        };
        let findings = section.data.as_ref().map(guestward_fim::fim_findings).unwrap_or_default();
        Collected { section, findings, events: Vec::new() }
    }

    /// The running monitor, if any.
    pub fn monitor(&self) -> Option<&Arc<guestward_fim::Monitor>> {
        match self {
            Self::Monitor(m) => Some(m),
            _ => None,
        }
    }
}

/// Whether this process may list and read `dir` (a missing directory counts as readable: the
/// baseline is then simply absent). The state directory is private to the agent's user, so a
/// one-shot `scan` by anyone else cannot read the baseline, which is not a failure of FIM.
fn readable_dir(dir: &std::path::Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    match access(dir, AccessFlags::R_OK | AccessFlags::X_OK) {
        Ok(()) => true,
        Err(nix::errno::Errno::ENOENT) => true,
        Err(_) => false,
    }
}
