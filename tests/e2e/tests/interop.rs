//! Interop: the agent reports through a stock nginx that terminates mutual TLS and passes the
//! client certificate in a header; the collector takes identity from that header only from its
//! trusted proxy address.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

const TEST: &str = "interop::agent_reports_through_nginx_and_the_header_is_refused_from_untrusted_clients";
/// The address nginx connects to the collector from (`proxy_bind`), the only trusted proxy.
const PROXY_ADDR: &str = "127.0.0.2";
const HEADER: &str = "x-ssl-client-cert";

fn nginx_binary() -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect::<Vec<_>>())
        .unwrap_or_default();
    in_path.into_iter().chain([PathBuf::from("/usr/sbin/nginx")]).find(|p| p.is_file())
}

/// nginx in the foreground, one process, everything (pid, logs, temp files) in `dir`; killed
/// when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start(binary: &Path, dir: &Path, pki: &Pki, collector_port: u16) -> Nginx {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let d = dir.display();
        let server = pki.server();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        # Verify the agent's certificate against the dev CA.
        ssl_verify_client on;
        ssl_client_certificate {ca};
        client_max_body_size 64m;
        location / {{
            proxy_pass https://127.0.0.1:{collector_port};
            # The trusted proxy address the collector knows.
            proxy_bind {PROXY_ADDR};
            proxy_http_version 1.1;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            # No client certificate of nginx's own: the collector lets its trusted proxy
            # addresses connect without one and takes identity from the header only.
            proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
        }}
    }}
}}
"#,
            server_cert = server.cert.display(),
            server_key = server.key.display(),
            ca = pki.ca().display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, port, dir: dir.to_path_buf() };
        wait_until(Duration::from_secs(15), "nginx to listen", || {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!("nginx exited ({status}); error.log:\n{}", nginx.error_log());
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client on 127.0.0.1 (not a trusted proxy) with a valid certificate of its own (host
/// `mallory`) sends host A's certificate in the proxy header and a report of host A: refused
/// (403, naming the header), nothing stored. Without a certificate of its own the same request
/// does not get past the handshake.
fn assert_header_refused_from_untrusted_client(
    collector: &Collector,
    pki: &Pki,
    mallory: &Identity,
    cert_of_a: &Identity,
) {
    let header = url_encode(&std::fs::read_to_string(&cert_of_a.cert).unwrap());
    let report = sample_report("host-a", 99);
    let client = Client::new(&collector.url(), &pki.ca(), Some(mallory.clone()));
    let (status, body) = client.post_json("/v1/reports", &report, &[(HEADER, header.as_str())]).unwrap();
    assert_eq!(status, 403, "the proxy header from an untrusted address was not refused: {body}");
    assert!(body.contains(HEADER), "the refusal does not name the header: {body}");
    let anonymous = Client::new(&collector.url(), &pki.ca(), None);
    let answer = anonymous.post_json("/v1/reports", &report, &[(HEADER, header.as_str())]);
    assert!(answer.is_err(), "a client without a certificate was answered: {answer:?}");
    assert!(collector.host("mallory").is_none(), "mallory's request stored something");
}

#[test]
fn agent_reports_through_nginx_and_the_header_is_refused_from_untrusted_clients() {
    let Some(nginx_bin) = nginx_binary() else {
        guestward_core::testing::skip_or_fail(TEST, "nginx is not installed (Debian package `nginx`)");
        return;
    };
    guestward_core::testing::within(Duration::from_secs(90), "nginx interop", move || {
        let tmp = temp_dir();
        let pki = Pki::init(&tmp.path().join("pki"));
        let collector = Collector::start(
            &tmp.path().join("collector"),
            &pki,
            CollectorOptions {
                extra_config: format!("[proxy]\ntrusted = [\"{PROXY_ADDR}/32\"]\nheader = \"{HEADER}\"\n"),
                ..Default::default()
            },
        );
        let cert_of_a = pki.agent("host-a");
        let mallory = pki.agent("mallory");

        // Before anything was delivered: refused, and the collector holds nothing.
        assert_header_refused_from_untrusted_client(&collector, &pki, &mallory, &cert_of_a);
        assert!(collector.hosts().hosts.is_empty(), "{:?}", collector.hosts());

        let nginx = Nginx::start(&nginx_bin, &tmp.path().join("nginx"), &pki, collector.port);
        let agent = Agent::new(
            &tmp.path().join("agent"),
            "host-a",
            &Transport {
                url: format!("https://127.0.0.1:{}", nginx.port),
                ca_file: pki.ca(),
                identity: cert_of_a.clone(),
                extra: String::new(),
            },
        );
        let out = agent.run_once();
        assert_eq!(
            out.code,
            Some(0),
            "run --once through nginx failed:\n{out}\nnginx error.log:\n{}\ncollector log:\n{}",
            nginx.error_log(),
            collector.log()
        );
        let host = collector.host("host-a").expect("host-a is not stored");
        assert_eq!(host.summary.reports_stored, 1, "{:?}", host.summary);
        // The identity came from nginx's header (host A's certificate), not from nginx's own
        // certificate on the connection.
        let seen = host.summary.client_certificate.as_ref().expect("no client certificate recorded");
        assert_eq!(seen.sha256.to_lowercase(), sha256_hex(&cert_of_a.cert_der()));

        // After: still refused, and host A's record is unchanged.
        assert_header_refused_from_untrusted_client(&collector, &pki, &mallory, &cert_of_a);
        assert_eq!(collector.host("host-a").unwrap().summary.reports_stored, 1);
    });
}
