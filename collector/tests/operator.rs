//! The operator's commands (`hosts`, `host ID`, `findings`, `packages`, `listeners`): the real binary asking a real
//! collector over mutual TLS, its answers compared with the API's own, and every way it can
//! be stopped named.

use crate::common::*;
use guestward_core::Severity;
use guestward_report::ingest::{FleetFindings, FleetListeners, FleetPackages, HostDetail, HostList};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_guestward-collector");
const LIMIT: Duration = Duration::from_secs(120);

/// The environment variables the commands read: cleared, so that a developer's shell cannot
/// change what a test sees.
const ENV: [&str; 7] = [
    "GUESTWARD_COLLECTOR_URL",
    "GUESTWARD_PKI_DIR",
    "GUESTWARD_OPERATOR",
    "GUESTWARD_COLLECTOR_CA",
    "GUESTWARD_OPERATOR_CERT",
    "GUESTWARD_OPERATOR_KEY",
    "HTTPS_PROXY",
];

/// Runs the binary off the runtime's threads (the collector serves on them meanwhile).
async fn cli(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        for var in ENV {
            cmd.env_remove(var);
        }
        cmd.args(&args).envs(env).output().unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--url` (the collector's address as its certificate names it) and the operator's files.
fn as_operator(h: &Harness, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend([
        "--url".into(),
        format!("https://127.0.0.1:{}", h.addr.port()),
        "--pki-dir".into(),
        h.pki().display().to_string(),
        "--operator".into(),
        OPERATOR.into(),
    ]);
    all
}

/// Succeeds, with nothing on stderr; stdout.
async fn answered(h: &Harness, args: &[&str]) -> String {
    let out = cli(as_operator(h, args), vec![]).await;
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "{args:?}");
    text(&out.stdout)
}

fn finding(
    id: &str,
    severity: Severity,
    title: &str,
    evidence: serde_json::Value,
) -> guestward_core::Finding {
    guestward_core::Finding {
        id: id.into(),
        severity,
        title: title.into(),
        evidence,
        remediation: "-".into(),
        source: "test".into(),
    }
}

/// host-a: two reports (the latest with a critical FIM finding whose title carries a terminal
/// escape, and a low one); host-b: one report with a high FIM finding.
async fn two_hosts(h: &Harness) {
    let mut a1 = report(HOST_A, 1);
    a1.findings = vec![finding("GW-FIM-007", Severity::High, "resolved since", serde_json::json!({}))];
    let mut a2 = report(HOST_A, 2);
    a2.findings = vec![
        finding(
            "GW-FIM-006",
            Severity::Critical,
            "/usr/sbin/sshd changed outside the package manager \u{1b}[8m",
            serde_json::json!({"path": "/usr/sbin/sshd", "package": "openssh-server"}),
        ),
        finding("GW-NET-002", Severity::Low, "telnet listens", serde_json::json!({})),
    ];
    assert_eq!(post(h, &h.client(Who::Agent(HOST_A)), body(&[a1, a2])).await.status(), 200);
    let mut b1 = report(HOST_B, 1);
    b1.findings = vec![finding(
        "GW-FIM-007",
        Severity::High,
        "/etc/ssh/sshd_config edited",
        serde_json::json!({"path": "/etc/ssh/sshd_config"}),
    )];
    assert_eq!(post(h, &h.client(Who::Agent(HOST_B)), body(&[b1])).await.status(), 200);
}

/// What the API answers the operator at `path`, parsed.
async fn api<T: serde::de::DeserializeOwned>(h: &Harness, path: &str) -> T {
    let resp = h.client(Who::Operator(OPERATOR)).get(h.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// `hosts`, `host` and `findings` print what the API answers: as JSON, the same answer; as
/// tables, every host and finding, most severe first, agent-sent text escaped.
#[test]
fn operators_read_hosts_a_host_and_the_fleets_findings_from_the_command_line() {
    run(LIMIT, "operator commands", || async {
        let h = Harness::start(|_| {}).await;
        two_hosts(&h).await;

        // findings: --json is the API's answer to the same query.
        let json = answered(&h, &["findings", "--id", "GW-FIM-*", "--min-severity", "high", "--json"]).await;
        let cli_answer: FleetFindings = serde_json::from_str(&json).unwrap();
        let api_answer: FleetFindings = api(&h, "/v1/findings?id=GW-FIM-*&min_severity=high").await;
        assert_eq!(cli_answer, api_answer);
        let ids: Vec<(&str, &str)> =
            cli_answer.findings.iter().map(|f| (f.host_id.as_str(), f.finding.id.as_str())).collect();
        assert_eq!(ids, [(HOST_A, "GW-FIM-006"), (HOST_B, "GW-FIM-007")]);

        // findings as a table: every current finding, most severe first, the place last.
        let table = answered(&h, &["findings"]).await;
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["SEVERITY", "ID", "HOST", "TITLE", "AT"]
        );
        let firsts: Vec<Vec<&str>> =
            lines[1..4].iter().map(|l| l.split_whitespace().take(3).collect()).collect();
        assert_eq!(
            firsts,
            [
                ["critical", "GW-FIM-006", HOST_A],
                ["high", "GW-FIM-007", HOST_B],
                ["low", "GW-NET-002", HOST_A]
            ]
        );
        assert!(lines[1].ends_with("/usr/sbin/sshd"), "{table}");
        assert!(lines[1].contains("package manager \\x1b[8m"), "the escape is shown, not sent: {table}");
        assert!(!table.contains('\u{1b}'), "{table}");
        assert!(lines[2].ends_with("/etc/ssh/sshd_config"), "{table}");
        assert_eq!(lines[4], "");
        assert_eq!(lines[5], "3 findings (1 critical, 1 high, 1 low) on 2 hosts; 2 hosts searched");
        assert_eq!(lines.len(), 6, "{table}");
        assert_eq!(
            answered(&h, &["findings", "--id", "GW-PKG-*"]).await,
            "no finding matches (2 hosts searched)\n"
        );
        // --summary: one line per id, hosts counted.
        let summary = answered(&h, &["findings", "--summary", "--min-severity", "high"]).await;
        let rows: Vec<Vec<&str>> = summary.lines().map(|l| l.split_whitespace().take(3).collect()).collect();
        assert_eq!(
            rows,
            [
                vec!["SEVERITY", "ID", "HOSTS"],
                vec!["critical", "GW-FIM-006", "1"],
                vec!["high", "GW-FIM-007", "1"],
                vec![],
                vec!["2", "finding", "ids"]
            ],
            "{summary}"
        );
        assert!(summary.ends_with("\n2 finding ids on 2 hosts; 2 hosts searched\n"), "{summary}");

        // hosts: the same hosts as the API, and a table of them.
        let cli_hosts: HostList = serde_json::from_str(&answered(&h, &["hosts", "--json"]).await).unwrap();
        let api_hosts: HostList = api(&h, "/v1/hosts").await;
        let key = |l: &HostList| -> Vec<(String, u64, Option<u64>, u64)> {
            l.hosts
                .iter()
                .map(|s| (s.host_id.clone(), s.reports_stored, s.last_sequence, s.stored_bytes))
                .collect()
        };
        assert_eq!(key(&cli_hosts), key(&api_hosts));
        let table = answered(&h, &["hosts"]).await;
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["HOST", "LAST", "SEEN", "REPORTS", "MISSING", "AGENT", "STORED", "CERTIFICATE", "EXPIRES"]
        );
        for (line, (host, reports)) in lines[1..3].iter().zip([(HOST_A, "2"), (HOST_B, "1")]) {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                (cells[0], cells[2], cells[3], cells[4], cells[5]),
                (host, "ago", reports, "0", "9.9.9")
            );
            // A certificate of 365 days, issued a moment ago.
            assert!(line.ends_with(" (in 364d)") || line.ends_with(" (in 365d)"), "{line}");
        }
        assert_eq!(lines[3..], ["", "2 hosts"]);

        // --silent-for: host-b last delivered two hours ago (its record moved back in the store).
        let conn = rusqlite::Connection::open(h.dir.path().join("collector.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let two_hours_ago = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(2)).unwrap();
        let moved = conn
            .execute(
                "UPDATE hosts SET last_seen = ?1 WHERE host_id = ?2",
                [format!("{two_hours_ago:.9}"), HOST_B.into()],
            )
            .unwrap();
        assert_eq!(moved, 1);
        let table = answered(&h, &["hosts", "--silent-for", "1h30m"]).await;
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].starts_with(&format!("{HOST_B}  2h 0m ago  1 ")), "{table}");
        assert_eq!(lines[3], "1 of 2 silent for more than 1h 30m");
        let silent: HostList =
            serde_json::from_str(&answered(&h, &["hosts", "--silent-for", "1h30m", "--json"]).await).unwrap();
        assert_eq!(silent.hosts.iter().map(|s| s.host_id.as_str()).collect::<Vec<_>>(), [HOST_B]);
        assert_eq!(
            answered(&h, &["hosts", "--silent-for", "3h"]).await,
            "none of the 2 hosts has been silent for more than 3h 0m\n"
        );

        // host: the record, the latest report (as `scan` prints it), the recent events.
        let detail: HostDetail =
            serde_json::from_str(&answered(&h, &["host", HOST_A, "--json"]).await).unwrap();
        let api_detail: HostDetail = api(&h, &format!("/v1/hosts/{HOST_A}")).await;
        assert_eq!(detail.latest_report, api_detail.latest_report);
        assert_eq!(detail.recent_events, api_detail.recent_events);
        assert_eq!(detail.findings.len(), 2);
        let page = answered(&h, &["host", HOST_A]).await;
        assert!(page.starts_with(&format!("host                {HOST_A}\n")), "{page}");
        assert!(page.contains("\nreports             2 stored, last sequence 2, 0 missing\n"), "{page}");
        assert!(page.contains("\nagent               9.9.9\n"), "{page}");
        assert!(page.contains("\nfindings: 2 (1 critical, 1 low)\n"), "{page}");
        assert!(page.contains("at /usr/sbin/sshd"), "{page}");
        assert!(!page.contains('\u{1b}'), "{page}");
        // Each report carried one event: both are recent events, listed once.
        assert!(page.contains("\nrecent events (2, newest last):\n"), "{page}");
        assert_eq!(page.matches(" test.event ").count(), 2, "{page}");
    });
}

/// Each reason a command gets no answer is named, with what to do, and exits 1; a usage
/// error exits 2. The connection may come from the environment instead of flags.
#[test]
fn operator_commands_name_what_stops_them() {
    run(LIMIT, "operator errors", || async {
        let h = Harness::start(|_| {}).await;
        two_hosts(&h).await;
        let pki = h.pki();
        let url = format!("https://127.0.0.1:{}", h.addr.port());
        let p = |rel: &str| pki.join(rel).display().to_string();
        let files = |ca: &str, cert: &str, key: &str| {
            vec![
                "--url".to_string(),
                url.clone(),
                "--ca".into(),
                ca.into(),
                "--cert".into(),
                cert.into(),
                "--key".into(),
                key.into(),
            ]
        };
        let failed = |out: &Output, args: &str, names: &[&str]| {
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args}: {err}");
            assert_eq!(text(&out.stdout), "", "{args}");
            assert!(err.starts_with("guestward-collector: "), "{args}: {err}");
            for n in names {
                assert!(err.contains(n), "{args}: {n:?} not in {err}");
            }
        };

        // The environment instead of flags.
        let env = vec![
            ("GUESTWARD_COLLECTOR_URL", url.clone()),
            ("GUESTWARD_PKI_DIR", pki.display().to_string()),
            ("GUESTWARD_OPERATOR", OPERATOR.to_string()),
        ];
        let out = cli(vec!["hosts".into()], env).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).ends_with("\n2 hosts\n"), "{}", text(&out.stdout));

        // An agent's certificate: the collector's 403, with its reason.
        let agent = files(&p("ca.pem"), &p("agents/host-a/cert.pem"), &p("agents/host-a/key.pem"));
        let out = cli([vec!["hosts".to_string()], agent].concat(), vec![]).await;
        failed(
            &out,
            "agent",
            &["/v1/hosts: the collector answered 403 (forbidden)", "only operator certificates"],
        );

        // Another CA's collector (the CA given did not issue the collector's certificate).
        let other = tempfile::tempdir().unwrap();
        let other_pki = new_pki(other.path());
        let other_ca = other_pki.join("ca.pem").display().to_string();
        let out = cli(
            [
                vec!["hosts".to_string()],
                files(&other_ca, &p("operators/ops/cert.pem"), &p("operators/ops/key.pem")),
            ]
            .concat(),
            vec![],
        )
        .await;
        failed(&out, "other CA", &["UnknownIssuer", "--ca must be the collector's CA"]);

        // An operator certificate of another CA: the collector ends the handshake.
        let eve = other_pki.join("operators").join(OPERATOR);
        let out = cli(
            [
                vec!["hosts".to_string()],
                files(
                    &p("ca.pem"),
                    &eve.join("cert.pem").display().to_string(),
                    &eve.join("key.pem").display().to_string(),
                ),
            ]
            .concat(),
            vec![],
        )
        .await;
        failed(&out, "foreign operator", &["alert", "the collector refused this certificate"]);

        // A host the collector does not have.
        let out = cli(as_operator(&h, &["host", "host-z"]), vec![]).await;
        failed(&out, "unknown host", &["/v1/hosts/host-z: the collector answered 404 (not_found)"]);

        // An operator the PKI directory does not have.
        let mut args = as_operator(&h, &["hosts"]);
        *args.last_mut().unwrap() = "bob".into();
        let out = cli(args, vec![]).await;
        failed(&out, "no such operator", &["operators/bob: no such operator", "pki issue-operator --dir"]);

        // A key others may read.
        let loose = h.dir.path().join("loose-key.pem");
        std::fs::copy(pki.join("operators/ops/key.pem"), &loose).unwrap();
        set_mode(&loose, 0o644);
        let key_files = files(&p("ca.pem"), &p("operators/ops/cert.pem"), &loose.display().to_string());
        let out = cli([vec!["hosts".to_string()], key_files].concat(), vec![]).await;
        failed(
            &out,
            "loose key",
            &["loose-key.pem: the private key is readable by group or others (mode 0644)", "chmod 600"],
        );

        // Not HTTPS; nothing listening; no files at all.
        let mut args = as_operator(&h, &["hosts"]);
        args[2] = format!("http://127.0.0.1:{}", h.addr.port());
        failed(
            &cli(args, vec![]).await,
            "http",
            &["is not a collector URL: the collector speaks HTTPS only"],
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_url = format!("https://127.0.0.1:{}", closed.local_addr().unwrap().port());
        drop(closed);
        let mut args = as_operator(&h, &["hosts"]);
        args[2] = closed_url;
        failed(&cli(args, vec![]).await, "closed port", &["Connection refused", "is the collector running"]);
        let out = cli(vec!["hosts".into(), "--url".into(), url.clone()], vec![]).await;
        failed(&out, "no files", &["no --ca file: give --ca FILE, or --pki-dir DIR --operator NAME"]);

        // Usage errors are clap's: exit 2.
        for (args, names) in [
            (
                &["findings", "--min-severity", "urgent"][..],
                "\"urgent\" is not one of info, low, medium, high, critical",
            ),
            (&["findings", "--id", ""][..], "\"\" is not a finding id (1 to 128 characters"),
            (&["hosts", "--silent-for", "yesterday"][..], "`yesterday` is not an age: expected an age: 30s"),
        ] {
            let out = cli(as_operator(&h, args), vec![]).await;
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
            assert!(text(&out.stderr).contains(names), "{args:?}: {}", text(&out.stderr));
        }
    });
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The packages of the Amazon Linux 2023 rpm database in tests/fixtures/rpmdb, read as the
/// agent reads them, with `rename` applied to the versions of some.
fn rpm_inventory(rename: &[(&str, &str)]) -> guestward_core::Section<guestward_packages::PackagesReport> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rpmdb/amazonlinux2023-plain");
    let root = guestward_core::HostRoot::new(&dir).unwrap();
    let (found, errors) = guestward_rpmdb::detect_in_dir(&root, Path::new("/"));
    assert!(errors.is_empty() && found.len() == 1, "{errors:?} {found:?}");
    let limits = guestward_rpmdb::Limits::default();
    let mut rpm =
        guestward_rpmdb::read_database(&root, &found[0].host_path, found[0].backend, &limits).unwrap();
    for (name, version) in rename {
        let package = rpm.packages.iter_mut().find(|p| p.name == *name).unwrap();
        package.version = (*version).into();
    }
    let data = guestward_packages::PackagesReport { dpkg: None, rpm: Some(rpm), language: None };
    guestward_core::Section::from_parts(Some(data), Vec::new(), std::time::Instant::now())
}

/// rpm's own list of the fixture (`expected.sorted.tsv`: name, epoch, version, release, arch).
fn rpm_qa() -> Vec<[String; 5]> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/rpmdb/amazonlinux2023-plain/expected.sorted.tsv");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            [f[0], f[1], f[2], f[3], f[4]].map(String::from)
        })
        .collect()
}

/// `packages NAME`: which hosts run which versions, from each host's latest inventory, against
/// a real rpm database and rpm's own list of it; as JSON the API's answer.
#[test]
fn operators_find_which_hosts_run_which_package_versions() {
    run(LIMIT, "packages command", || async {
        let h = Harness::start(|_| {}).await;
        // host-a runs the fixture as it is; host-b an older openssl-libs. host-a's first report
        // had no inventory: its second one is the one answered.
        let a1 = report(HOST_A, 1);
        let mut a2 = report(HOST_A, 2);
        a2.packages = Some(rpm_inventory(&[]));
        assert_eq!(post(&h, &h.client(Who::Agent(HOST_A)), body(&[a1, a2])).await.status(), 200);
        let mut b1 = report(HOST_B, 1);
        b1.packages = Some(rpm_inventory(&[("openssl-libs", "3.0.2")]));
        assert_eq!(post(&h, &h.client(Who::Agent(HOST_B)), body(&[b1])).await.status(), 200);

        let qa = rpm_qa();
        let evr = |name: &str| {
            let p = qa.iter().find(|p| p[0] == name).unwrap();
            let epoch = if p[1] == "(none)" { String::new() } else { format!("{}:", p[1]) };
            format!("{epoch}{}-{}", p[2], p[3])
        };
        let openssl = evr("openssl-libs");
        let older = openssl.replace("3.0.8", "3.0.2");

        // --json is the API's answer.
        let json = answered(&h, &["packages", "openssl-libs", "--json"]).await;
        let cli_answer: FleetPackages = serde_json::from_str(&json).unwrap();
        let api_answer: FleetPackages = api(&h, "/v1/packages?name=openssl-libs").await;
        assert_eq!(cli_answer, api_answer);
        let rows: Vec<(&str, &str, Option<&str>)> = cli_answer
            .packages
            .iter()
            .map(|p| (p.host_id.as_str(), p.package.version.as_str(), p.package.arch.as_deref()))
            .collect();
        assert_eq!(
            rows,
            [(HOST_B, older.as_str(), Some("x86_64")), (HOST_A, openssl.as_str(), Some("x86_64"))]
        );
        assert_eq!(cli_answer.packages[1].sequence, 2);

        // The table: a row per host, the counts below.
        let table = answered(&h, &["packages", "openssl-libs"]).await;
        let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            ["HOST", "PACKAGE", "VERSION", "ARCH", "SOURCE", "WHERE", "AS", "OF"],
            "{table}"
        );
        assert_eq!(lines[1][..5], [HOST_B, "openssl-libs", older.as_str(), "x86_64", "rpm"], "{table}");
        assert_eq!(lines[2][..5], [HOST_A, "openssl-libs", openssl.as_str(), "x86_64", "rpm"], "{table}");
        assert!(lines[1].ends_with(&["ago"]), "{table}");
        assert!(table.ends_with("\n\n2 of 2 hosts have it (2 versions)\n"), "{table}");

        // Below the fixed version, in rpm's order (the epoch counts: 3.0.8 alone is epoch 0).
        let below = answered(&h, &["packages", "openssl-libs", "--below", &openssl, "--json"]).await;
        let below: FleetPackages = serde_json::from_str(&below).unwrap();
        assert_eq!(below.packages.iter().map(|p| p.host_id.as_str()).collect::<Vec<_>>(), [HOST_B]);
        assert_eq!(
            answered(&h, &["packages", "openssl-libs", "--below", "3.0.8"]).await,
            "no package matches (2 hosts searched)\n"
        );
        // Exact versions, and a source.
        let exact =
            answered(&h, &["packages", "openssl-libs", "--version", &openssl, "--source", "rpm"]).await;
        assert!(exact.ends_with("\n1 of 2 hosts has it (1 version)\n"), "{exact}");
        assert_eq!(
            answered(&h, &["packages", "openssl-libs", "--source", "dpkg"]).await,
            "no package matches (2 hosts searched)\n"
        );

        // --summary of a pattern: one line per version, as many as rpm lists, each on both hosts.
        let summary = answered(&h, &["packages", "python3*", "--summary"]).await;
        let python: Vec<&[String; 5]> = qa.iter().filter(|p| p[0].starts_with("python3")).collect();
        let lines: Vec<Vec<&str>> = summary.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["PACKAGE", "VERSION", "ARCH", "SOURCE", "HOSTS"], "{summary}");
        assert_eq!(lines.len(), python.len() + 3, "{summary}");
        for (line, p) in lines[1..=python.len()].iter().zip(&python) {
            assert_eq!(line[..], [p[0].as_str(), &evr(&p[0]), p[4].as_str(), "rpm", "2"], "{summary}");
        }
        assert_eq!(
            summary.lines().last(),
            Some(format!("2 of 2 hosts have it ({} versions)", python.len()).as_str())
        );

        // Usage errors: a name that is no name, a source that is none (exit 2, nothing asked).
        for args in [vec!["packages", ""], vec!["packages", "x", "--source", "apk"]] {
            let out = cli(as_operator(&h, &args), vec![]).await;
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        }
        // The API refuses what it does not understand, by name, and agents.
        let operator = h.client(Who::Operator(OPERATOR));
        for (query, said) in [
            ("", "needs a name"),
            ("?name=x&versoin=1", "unknown query parameter \"versoin\""),
            ("?name=x&source=apk", "\"apk\" is not one of dpkg, rpm, pypi, maven, npm"),
        ] {
            let resp = operator.get(h.url(&format!("/v1/packages{query}"))).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{query}");
            let message = resp.json::<guestward_report::ingest::ErrorBody>().await.unwrap().message;
            assert!(message.contains(said), "{query}: {message}");
        }
        let agent = h.client(Who::Agent(HOST_A));
        let resp = agent.get(h.url("/v1/packages?name=openssl-libs")).send().await.unwrap();
        assert_eq!(resp.status(), 403);
    });
}

/// `listeners` answers "which hosts listen where" from each host's latest network scan: here a
/// real scan of this machine (netlink, /proc) while the test holds three sockets of its own, a
/// TCP listener on loopback, one on every interface and an unconnected UDP socket; host-b's
/// scan lacks the listener on every interface. The test's own sockets are the oracle: their
/// ports, addresses and owner (this process: its `comm`, its executable).
#[test]
fn operators_find_which_hosts_listen_where() {
    run(LIMIT, "listeners command", || async {
        let h = Harness::start(|_| {}).await;
        let loopback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let everywhere = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let (lo, all, dns) = (
            loopback.local_addr().unwrap().port(),
            everywhere.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        );
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap().trim_end().to_string();
        let exe = std::fs::read_link("/proc/self/exe").unwrap().display().to_string();
        let scan = tokio::task::spawn_blocking(|| {
            guestward_network::collect(
                &guestward_network::Config::default(),
                &guestward_core::HostRoot::live(),
            )
        })
        .await
        .unwrap();
        assert!(scan.data.is_some(), "{:?}", scan.problems);
        let mut without_all = scan.clone();
        if let Some(data) = without_all.data.as_mut() {
            data.listeners.retain(|l| l.local_port != all);
        }

        // host-b's first report carries no network scan: it is counted, not guessed.
        assert_eq!(post(&h, &h.client(Who::Agent(HOST_B)), body(&[report(HOST_B, 1)])).await.status(), 200);
        let mut a1 = report(HOST_A, 1);
        a1.network = Some(scan);
        assert_eq!(post(&h, &h.client(Who::Agent(HOST_A)), body(&[a1])).await.status(), 200);
        let early = answered(&h, &["listeners", "--port", &lo.to_string()]).await;
        assert!(
            early.ends_with("1 host has no network scan at the collector yet, and cannot be answered for (each is indexed from its next report that carries one)\n"),
            "{early}"
        );
        let mut b2 = report(HOST_B, 2);
        b2.network = Some(without_all);
        assert_eq!(post(&h, &h.client(Who::Agent(HOST_B)), body(&[b2])).await.status(), 200);

        // --json is the API's answer; the listener on every interface is host-a's alone.
        let json = answered(&h, &["listeners", "--port", &all.to_string(), "--json"]).await;
        let cli_answer: FleetListeners = serde_json::from_str(&json).unwrap();
        let api_answer: FleetListeners = api(&h, &format!("/v1/listeners?port={all}")).await;
        assert_eq!(cli_answer, api_answer);
        assert_eq!(
            (cli_answer.hosts_searched, cli_answer.hosts_matching, cli_answer.hosts_without_scan),
            (2, 1, 0)
        );
        let [only] = &cli_answer.listeners[..] else { panic!("{json}") };
        assert_eq!(
            (
                only.host_id.as_str(),
                only.address.to_string(),
                only.service.scope,
                only.service.process.as_deref()
            ),
            (
                HOST_A,
                "0.0.0.0".to_string(),
                Some(guestward_network::ExposureScope::AllInterfaces),
                Some(comm.as_str())
            )
        );
        assert_eq!((only.exe.as_deref(), only.sequence), (Some(exe.as_str()), 1));

        // The table: a row per host and listener, by port, the counts below.
        let table = answered(&h, &["listeners", "--port", &all.to_string(), "--port", &lo.to_string()]).await;
        let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            ["HOST", "PORT", "PROTO", "ADDRESS", "SCOPE", "PROCESS", "USER", "UNIT", "PUBLIC", "AS", "OF"],
            "{table}"
        );
        let mut expected = vec![
            (HOST_A, lo, "127.0.0.1", "loopback"),
            (HOST_B, lo, "127.0.0.1", "loopback"),
            (HOST_A, all, "0.0.0.0", "all-interfaces"),
        ];
        expected.sort_by_key(|(host, port, ..)| (*port, *host));
        for (line, (host, port, address, scope)) in lines[1..=3].iter().zip(&expected) {
            assert_eq!(
                line[..6],
                [*host, &port.to_string(), "tcp", *address, *scope, comm.as_str()],
                "{table}"
            );
            assert!(line.ends_with(&["ago"]), "{table}");
        }
        assert!(table.ends_with("\n\n2 of 2 hosts listen so (2 services)\n"), "{table}");

        // Scope, protocol and process; --exposed is every scope but loopback.
        // Only the test's own ports: other tests of this process may hold sockets of their own.
        let (lo_arg, all_arg, dns_arg) = (lo.to_string(), all.to_string(), dns.to_string());
        let exposed = answered(
            &h,
            &[
                "listeners",
                "--exposed",
                "--process",
                &comm,
                "--port",
                &lo_arg,
                "--port",
                &all_arg,
                "--port",
                &dns_arg,
                "--json",
            ],
        )
        .await;
        let exposed: FleetListeners = serde_json::from_str(&exposed).unwrap();
        let mut ports: Vec<(&str, u16)> =
            exposed.listeners.iter().map(|l| (l.host_id.as_str(), l.service.port)).collect();
        ports.sort();
        let mut want = vec![(HOST_A, all), (HOST_A, dns), (HOST_B, dns)];
        want.sort();
        assert_eq!(ports, want, "the test's exposed sockets, none on loopback");
        let udp_rows =
            answered(&h, &["listeners", "--protocol", "udp", "--port", &dns.to_string(), "--json"]).await;
        let udp_rows: FleetListeners = serde_json::from_str(&udp_rows).unwrap();
        assert_eq!(udp_rows.listeners.len(), 2, "{udp_rows:?}");
        assert!(udp_rows.listeners.iter().all(|l| l.service.protocol == guestward_network::Protocol::Udp));
        let pattern: String = comm.chars().take(3).chain(['*']).collect();
        let summary =
            answered(&h, &["listeners", "--port", &lo.to_string(), "--process", &pattern, "--summary"]).await;
        let lines: Vec<Vec<&str>> = summary.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["PORT", "PROTO", "SCOPE", "PROCESS", "HOSTS"], "{summary}");
        assert_eq!(lines[1], [lo.to_string().as_str(), "tcp", "loopback", comm.as_str(), "2"], "{summary}");
        assert!(summary.ends_with("\n\n2 of 2 hosts listen so (1 service)\n"), "{summary}");
        // No public address is known off EC2.
        assert_eq!(
            answered(&h, &["listeners", "--public"]).await,
            "no listener matches (2 hosts searched)\n"
        );

        // Usage errors (exit 2, nothing asked).
        for args in [
            vec!["listeners", "--port", "http"],
            vec!["listeners", "--scope", "everywhere"],
            vec!["listeners", "--protocol", "sctp"],
            vec!["listeners", "--exposed", "--scope", "loopback"],
            vec!["listeners", "--process", ""],
        ] {
            let out = cli(as_operator(&h, &args), vec![]).await;
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        }
        // The API refuses what it does not understand, by name, and agents.
        let operator = h.client(Who::Operator(OPERATOR));
        let many = "port=1&".repeat(65);
        for (query, said) in [
            ("?port=http", "query parameter \"port\": \"http\" is not a port"),
            ("?porrt=22", "unknown query parameter \"porrt\""),
            ("?scope=everywhere", "\"everywhere\" is not a scope"),
            ("?protocol=sctp", "\"sctp\" is not a protocol"),
            ("?public=yes", "\"yes\" is neither true nor false"),
            ("?process=%1b", "is not a process name"),
            (&format!("?{many}"), "more than 64 \"port\" parameters"),
        ] {
            let resp = operator.get(h.url(&format!("/v1/listeners{query}"))).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{query}");
            let message = resp.json::<guestward_report::ingest::ErrorBody>().await.unwrap().message;
            assert!(message.contains(said), "{query}: {message}");
        }
        let agent = h.client(Who::Agent(HOST_A));
        let resp = agent.get(h.url("/v1/listeners")).send().await.unwrap();
        assert_eq!(resp.status(), 403);
        drop((loopback, everywhere, udp));
    });
}
