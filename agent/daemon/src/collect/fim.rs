//! File integrity: the `fim` section (baseline state, realtime coverage, open gaps) and its
//! `GW-FIM-*` findings. The changes themselves are events, delivered by the monitor's sink
//! as they happen.

use super::Collected;
use guestward_core::Section;
use guestward_fim::FimReport;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the FIM section comes from.
#[derive(Debug)]
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
