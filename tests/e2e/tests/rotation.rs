//! Certificate rotation without restarting the daemon.

use crate::support::*;
use std::time::Duration;

/// The daemon delivers with its first certificate; the certificate and key files are replaced
/// (a freshly issued pair for the same host, renamed over the old files); the next delivery
/// (`agentctl scan`) is made with the new certificate: the collector sees its serial.
#[test]
fn daemon_uses_replaced_certificate_files_for_the_next_delivery() {
    guestward_core::testing::within(Duration::from_secs(90), "rotation", || {
        let tmp = temp_dir();
        let pki = Pki::init(&tmp.path().join("pki"));
        let collector = Collector::start(&tmp.path().join("collector"), &pki, CollectorOptions::default());
        // The agent's own copies, as an operator would install them.
        let installed = pki.agent("host-rot").copy_to(&tmp.path().join("agent-tls"));
        let old_serial = serial_hex(&installed.cert_der());
        let agent = Agent::new(
            &tmp.path().join("agent"),
            "host-rot",
            &Transport {
                url: collector.url(),
                ca_file: pki.ca(),
                identity: installed.clone(),
                extra: String::new(),
            },
        );
        let daemon = agent.start_daemon();

        let first = wait_until_or_explain(
            Duration::from_secs(30),
            "the daemon's first delivery",
            || collector.host("host-rot").filter(|h| h.summary.reports_stored >= 1),
            || format!("daemon log:\n{}\ncollector log:\n{}", daemon.log(), collector.log()),
        );
        let seen = first.summary.client_certificate.as_ref().expect("no client certificate recorded");
        assert_eq!(normalize_serial(&seen.serial), old_serial, "the first delivery's certificate");

        // A new pair for the same host, then renamed over the installed files (key first: a
        // reload between the renames sees a mismatched pair at worst, and retries).
        // 30 days instead of the first one's year: its expiry tells it apart in `agentctl status`.
        let fresh = pki.issue_agent("host-rot", &["--force", "--days", "30"]);
        let new_der = fresh.cert_der();
        let new_serial = serial_hex(&new_der);
        assert_ne!(new_serial, old_serial);
        let staged = fresh.copy_to(&tmp.path().join("staged"));
        std::fs::rename(&staged.key, &installed.key).unwrap();
        std::fs::rename(&staged.cert, &installed.cert).unwrap();

        let stored_before = collector.host("host-rot").unwrap().summary.reports_stored;
        daemon.ctl(&["scan"]).assert_success("agentctl scan");
        let rotated = wait_until(Duration::from_secs(30), "a delivery with the new certificate", || {
            let h = collector.host("host-rot")?;
            let c = h.summary.client_certificate.clone()?;
            (h.summary.reports_stored > stored_before && normalize_serial(&c.serial) == new_serial)
                .then_some(c)
        });
        assert_eq!(
            rotated.sha256.to_lowercase(),
            sha256_hex(&new_der),
            "the collector saw another certificate"
        );
        drop(daemon);
    });
}
