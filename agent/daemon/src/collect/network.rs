use super::Collected;
use guestward_cloud::CloudReport;
use guestward_core::HostRoot;
use guestward_network::{ListenerState, ListenerTracker, NetworkReport, PublicAddress};
use guestward_report::Report;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

/// The listeners of the last full scan, kept in the state directory so a restart does not turn
/// every listener into a "new" one (or lose a listener closed while the agent was down).
pub(crate) const LISTENER_STATE_FILE: &str = "network-listeners.json";
/// The state file holds one small record per listener; anything larger is not ours.
const MAX_LISTENER_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// Listening sockets with owners and exposure. Live-only: on an offline root the section is
/// skipped with a note.
#[derive(Debug, Clone)]
pub struct NetworkCollector {
    root: HostRoot,
    config: guestward_network::Config,
}

impl NetworkCollector {
    /// A collector of the host behind `root` with `[network]`.
    pub fn new(root: HostRoot, config: guestward_network::Config) -> Self {
        Self { root, config }
    }

    /// One collection. Findings are drawn by [`Self::findings`] once the pipeline has marked
    /// which listeners the instance's public addresses reach (known only from the cloud
    /// section).
    pub fn collect(&self) -> Collected<NetworkReport> {
        Collected::section(guestward_network::collect(&self.config, &self.root))
    }

    /// Marks the listeners reachable on `public` addresses, then draws the findings: a risky
    /// service exposed to the internet is reported as such.
    pub fn findings(
        &self,
        data: &mut NetworkReport,
        public: &[PublicAddress],
    ) -> Vec<guestward_core::Finding> {
        if !public.is_empty() {
            guestward_network::mark_public_reachability(data, public);
        }
        guestward_network::findings(data, &self.config)
    }
}

/// Adds `network.listener_opened` / `listener_closed` / `listener_owner_changed` events for the
/// listeners that changed since the previous full scan, and stores this scan's listeners for
/// the next one. The first scan (no stored state, or an unreadable one) is a baseline: no events.
pub fn track_changes(state_dir: &Path, report: &mut Report) {
    let Some(data) = report.network.as_ref().and_then(|s| s.data.as_ref()) else { return };
    let path = state_dir.join(LISTENER_STATE_FILE);
    let previous = match load_state(&path) {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "stored listeners unreadable; this scan is a new baseline");
            None
        }
    };
    let mut tracker = ListenerTracker::new(previous);
    let changes = tracker.observe(data);
    report.events.extend(changes.to_events(report.collected_at));
    if let Some(state) = tracker.state()
        && let Err(e) = save_state(&path, state)
    {
        tracing::warn!(path = %path.display(), error = %e, "listeners not saved; the next scan may repeat these changes");
    }
}

fn load_state(path: &Path) -> std::io::Result<Option<ListenerState>> {
    // Regular files only: a FIFO in place of the state file must not block the scan.
    let file = match guestward_core::open_regular_file(path, false) {
        Ok(f) => f,
        Err(guestward_core::HostFsError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let mut text = Vec::new();
    file.take(MAX_LISTENER_STATE_BYTES).read_to_end(&mut text)?;
    serde_json::from_slice(&text).map(Some).map_err(std::io::Error::other)
}

/// Replaced atomically (a crash leaves the old state or the new one), mode 0600: it names
/// processes and their command lines.
fn save_state(path: &Path, state: &ListenerState) -> Result<(), guestward_core::state_file::StateFileError> {
    guestward_core::state_file::write_atomic(path, MAX_LISTENER_STATE_BYTES, |out| {
        serde_json::to_writer(out, state).map_err(std::io::Error::other)
    })
}

/// The instance's public addresses as instance metadata describes them. EC2 public IPv4 is
/// 1:1 NAT: the instance only sees the private address, so each public address is paired with
/// the interface's private address in the same position (the primary private IPv4 carries the
/// first public one); IPv6 addresses are configured on the interface itself.
pub fn public_addresses(cloud: &CloudReport) -> Vec<PublicAddress> {
    let parse = |s: &String| s.parse::<IpAddr>().ok();
    let mut out = Vec::new();
    for nic in &cloud.interfaces {
        for (i, public) in nic.public_ipv4s.iter().filter_map(parse).enumerate() {
            out.push(PublicAddress { public, local: nic.private_ipv4s.get(i).and_then(parse) });
        }
        out.extend(nic.ipv6s.iter().filter_map(parse).filter(is_global_v6).map(PublicAddress::from));
    }
    if out.is_empty()
        && let Some(public) = cloud.instance.as_ref().and_then(|i| i.public_ipv4.as_ref()).and_then(parse)
    {
        let local = cloud.instance.as_ref().and_then(|i| i.private_ipv4.as_ref()).and_then(parse);
        out.push(PublicAddress { public, local });
    }
    out
}

/// Global unicast IPv6 (2000::/3): link-local and unique-local addresses are not reachable from
/// the internet.
fn is_global_v6(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xe000) == 0x2000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestward_cloud::NetworkInterface;

    #[test]
    fn listener_changes_become_events_and_survive_a_restart() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let proc_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/network/proc-basic");
        let scanned = guestward_network::scan(
            &guestward_network::Config::default(),
            &guestward_network::ScanContext::fixture(proc_root),
        )
        .unwrap()
        .report;
        let mut report = crate::scan::empty_report();
        report.network = Some(guestward_core::Section::from_parts(
            Some(scanned.clone()),
            vec![],
            std::time::Instant::now(),
        ));
        track_changes(dir.path(), &mut report);
        assert!(report.events.is_empty(), "the first scan is a baseline");
        let file = dir.path().join(LISTENER_STATE_FILE);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

        // Next scan (as after a restart: only the file carries the state): Redis has closed.
        let mut closed = scanned;
        closed.listeners.retain(|l| l.local_port != 6379);
        let mut report = crate::scan::empty_report();
        report.network =
            Some(guestward_core::Section::from_parts(Some(closed), vec![], std::time::Instant::now()));
        track_changes(dir.path(), &mut report);
        let kinds: Vec<(&str, &serde_json::Value)> =
            report.events.iter().map(|e| (e.kind.as_str(), &e.data["local_port"])).collect();
        assert_eq!(kinds, vec![(guestward_network::LISTENER_CLOSED, &serde_json::json!(6379))]);
    }

    #[test]
    fn public_ipv4_pairs_with_the_private_address_and_global_ipv6_stands_alone() {
        let cloud = CloudReport {
            interfaces: vec![NetworkInterface {
                mac: "0e:00:00:00:00:01".into(),
                private_ipv4s: vec!["172.31.5.10".into(), "172.31.5.11".into()],
                public_ipv4s: vec!["3.91.0.10".into()],
                ipv6s: vec!["2600:1f18::10".into(), "fd00::1".into()],
                ..Default::default()
            }],
            ..serde_json::from_value(serde_json::json!({"state": "not_ec2"})).unwrap()
        };
        let got = public_addresses(&cloud);
        assert_eq!(
            got,
            vec![
                PublicAddress {
                    public: "3.91.0.10".parse().unwrap(),
                    local: Some("172.31.5.10".parse().unwrap())
                },
                PublicAddress { public: "2600:1f18::10".parse().unwrap(), local: None },
            ]
        );
    }

    #[test]
    fn fifo_in_place_of_the_listener_state_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("listeners.json");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(load_state(&path).map(|s| s.is_some()));
        });
        let err =
            rx.recv_timeout(std::time::Duration::from_secs(10)).expect("reading a FIFO blocked").unwrap_err();
        assert!(err.to_string().contains("fifo"), "{err}");
    }
}
