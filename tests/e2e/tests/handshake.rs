//! The handshake matrix, through the real agent (`run --once`) and the real collector: every
//! broken pair fails with an error that names what was wrong, a valid pair delivers.

use crate::support::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A collector with a fresh dev PKI, and the agent's directory.
struct Setup {
    tmp: tempfile::TempDir,
    pki: Pki,
}

fn setup() -> Setup {
    let tmp = temp_dir();
    let pki = Pki::init(&tmp.path().join("pki"));
    Setup { tmp, pki }
}

impl Setup {
    fn collector(&self, options: CollectorOptions) -> Collector {
        Collector::start(&self.tmp.path().join("collector"), &self.pki, options)
    }

    fn agent(&self, host_id: &str, transport: Transport) -> Agent {
        Agent::new(&self.tmp.path().join("agent"), host_id, &transport)
    }

    /// Another, unrelated dev PKI (another CA).
    fn other_pki(&self) -> Pki {
        Pki::init(&self.tmp.path().join("other-pki"))
    }
}

/// Asserts that `out` failed and that its message contains one of `any_of` (lowercase).
#[track_caller]
fn assert_refused(out: &Outcome, what: &str, any_of: &[&str]) {
    out.assert_failure(what);
    let text = out.text();
    assert!(
        any_of.iter().any(|k| text.contains(k)),
        "{what}: the agent failed, but its message names none of {any_of:?}:\n{out}"
    );
    eprintln!("{what}: refused as expected:\n{}", out.stderr.trim());
}

/// A client certificate the collector refuses: the agent fails, and says why. In TLS 1.3 the
/// client finishes its half of the handshake and sends its request before the collector's
/// verdict arrives; the collector's alert can then reach it as a bare connection reset (the
/// request was unread when the collector closed). The agent's message names the alert, or, when
/// it saw only the reset, the collector's log names the reason (its handshake failure).
#[track_caller]
fn assert_client_cert_refused(
    out: &Outcome,
    collector: &Collector,
    what: &str,
    agent_words: &[&str],
    log_words: &[&str],
) {
    out.assert_failure(what);
    let text = out.text();
    if agent_words.iter().any(|k| text.contains(k)) {
        eprintln!("{what}: refused as expected:\n{}", out.stderr.trim());
        return;
    }
    let log = collector.log().to_lowercase();
    assert!(
        log.contains("tls handshake failed") && log_words.iter().any(|k| log.contains(k)),
        "{what}: the agent failed, but neither its message names {agent_words:?} nor the collector's log \
         a handshake failure naming {log_words:?}:\n{out}\ncollector log:\n{log}"
    );
    eprintln!(
        "{what}: refused (the agent saw a reset; the collector's log names the reason):\n{}",
        out.stderr.trim()
    );
}

#[track_caller]
fn assert_nothing_stored(collector: &Collector) {
    let hosts = collector.hosts();
    assert!(hosts.hosts.is_empty(), "the collector stored something: {hosts:?}");
}

#[test]
fn valid_pair_delivers_the_report() {
    guestward_core::testing::within(LIMIT, "valid pair", || {
        let s = setup();
        let collector = s.collector(CollectorOptions::default());
        let agent = s.agent(
            "host-ok",
            Transport {
                url: collector.url(),
                ca_file: s.pki.ca(),
                identity: s.pki.agent("host-ok"),
                extra: String::new(),
            },
        );
        agent.run_once().assert_success("run --once with a valid certificate pair");
        let host = collector.host("host-ok").expect("host-ok is not stored");
        assert_eq!(host.summary.reports_stored, 1, "{host:?}");
        assert_eq!(host.summary.last_sequence, Some(1), "{:?}", host.summary);
    });
}

#[test]
fn agent_certificate_from_another_ca_is_refused() {
    guestward_core::testing::within(LIMIT, "foreign agent cert", || {
        let s = setup();
        let collector = s.collector(CollectorOptions::default());
        let foreign = s.other_pki().agent("host-x");
        let agent = s.agent(
            "host-x",
            Transport { url: collector.url(), ca_file: s.pki.ca(), identity: foreign, extra: String::new() },
        );
        assert_client_cert_refused(
            &agent.run_once_failing(),
            &collector,
            "an agent certificate from another CA",
            &[
                "unknownca",
                "unknown ca",
                "unknown_ca",
                "badcertificate",
                "bad certificate",
                "bad_certificate",
            ],
            &["unknownissuer", "unknown issuer"],
        );
        assert_nothing_stored(&collector);
    });
}

#[test]
fn expired_agent_certificate_is_refused() {
    guestward_core::testing::within(LIMIT, "expired agent cert", || {
        let s = setup();
        let collector = s.collector(CollectorOptions::default());
        let expired = expired_agent_identity(&s.pki, "host-x", &s.tmp.path().join("expired"));
        let agent = s.agent(
            "host-x",
            Transport { url: collector.url(), ca_file: s.pki.ca(), identity: expired, extra: String::new() },
        );
        assert_client_cert_refused(
            &agent.run_once_failing(),
            &collector,
            "an expired agent certificate",
            &["certificateexpired", "certificate expired"],
            &["expired"],
        );
        assert_nothing_stored(&collector);
    });
}

#[test]
fn collector_certificate_for_another_name_is_refused() {
    guestward_core::testing::within(LIMIT, "wrong server name", || {
        let s = setup();
        let other_name = s.pki.reissue_server(&["other.example"]);
        let collector = s.collector(CollectorOptions {
            server: Some(other_name),
            server_name: Some("other.example".into()),
            ..Default::default()
        });
        // The agent connects to 127.0.0.1; the certificate is only for other.example.
        let agent = s.agent(
            "host-x",
            Transport {
                url: collector.url(),
                ca_file: s.pki.ca(),
                identity: s.pki.agent("host-x"),
                extra: String::new(),
            },
        );
        assert_refused(
            &agent.run_once_failing(),
            "a collector certificate for another name",
            &["not valid for name", "notvalidforname", "not valid for", "name mismatch", "other.example"],
        );
        assert_nothing_stored(&collector);
    });
}

#[test]
fn collector_certificate_from_an_unpinned_ca_is_refused() {
    guestward_core::testing::within(LIMIT, "unpinned collector CA", || {
        let s = setup();
        let collector = s.collector(CollectorOptions::default());
        // The agent pins another CA than the one that signed the collector's certificate.
        let agent = s.agent(
            "host-x",
            Transport {
                url: collector.url(),
                ca_file: s.other_pki().ca(),
                identity: s.pki.agent("host-x"),
                extra: String::new(),
            },
        );
        assert_refused(
            &agent.run_once_failing(),
            "a collector certificate from an unpinned CA",
            &["unknownissuer", "unknown issuer", "unknown_issuer"],
        );
        assert_nothing_stored(&collector);
    });
}

/// The agent requires TLS 1.3 by default; a server that speaks only TLS 1.2 (with a valid
/// certificate for 127.0.0.1 under the pinned CA) is refused for its version. With
/// `tls_min_version = "1.2"` the same server gets past the version (and fails later for
/// another reason: it is not a collector), which shows the version was the reason.
#[test]
fn tls12_only_server_is_refused_when_13_is_required() {
    guestward_core::testing::within(LIMIT, "TLS 1.2 server", || {
        let s = setup();
        let server = tls12_only_server(&s.pki.server());
        let version_words = ["protocolversion", "protocol version", "protocol_version", "incompatible"];
        let identity = s.pki.agent("host-x");
        let transport = |extra: &str| Transport {
            url: format!("https://127.0.0.1:{}", server.port),
            ca_file: s.pki.ca(),
            identity: identity.clone(),
            extra: extra.into(),
        };
        let agent = s.agent("host-x", transport(""));
        assert_refused(
            &agent.run_once_failing(),
            "a TLS 1.2-only server when 1.3 is required",
            &version_words,
        );

        agent.configure(&transport("tls_min_version = \"1.2\"\n"));
        let out = agent.run_once_failing();
        out.assert_failure("run --once against a TLS server that is not a collector");
        assert!(
            !version_words.iter().any(|k| out.text().contains(k)),
            "with TLS 1.2 allowed the version should not be the error:\n{out}"
        );
    });
}

/// A client without a certificate is refused by the collector's handshake (mandatory client
/// certificate) with the `certificate_required` alert, and cannot read /healthz or post.
#[test]
fn client_without_certificate_is_refused() {
    guestward_core::testing::within(LIMIT, "no client cert", || {
        let s = setup();
        let collector = s.collector(CollectorOptions::default());
        let alert = raw_tls_read_error(collector.port, &s.pki.ca(), None)
            .expect_err("the collector accepted a connection without a client certificate");
        assert!(
            alert.to_lowercase().contains("certificaterequired"),
            "the connection without a client certificate ended, but not with the certificate_required alert: {alert}"
        );
        // Control: the same connection with an agent certificate is accepted (no alert).
        raw_tls_read_error(collector.port, &s.pki.ca(), Some(&s.pki.agent("host-x")))
            .expect("the collector refused a valid client certificate");

        let anonymous = Client::new(&collector.url(), &s.pki.ca(), None);
        for path in ["/healthz", "/v1/hosts"] {
            let answer = anonymous.get(path);
            assert!(answer.is_err(), "GET {path} without a client certificate was answered: {answer:?}");
        }
        let post = anonymous.post_json("/v1/reports", &sample_report("host-x", 1), &[]);
        assert!(post.is_err(), "a report without a client certificate was answered: {post:?}");
        assert_nothing_stored(&collector);
    });
}
