//! exporter-toolkit's web config, case by case, against the real binary: every
//! fixture of its `web/testdata` that its `tls_config_test.go` runs (mirrored
//! below under the same names, with certificates made here) either serves with
//! exactly the behaviour the Go test expects, handshake by handshake, or is
//! refused, by `serve` and by `check-config` alike, with a message naming the
//! field. The refusals that differ from exporter-toolkit are the ones rustls
//! cannot honour (CBC and RSA-key-exchange suites, P-521, ML-KEM) and bcrypt
//! costs above 14; the rest behaves as there.
//!
//! Then what the fail-closed issue found: a failed reload changes nothing, an
//! unknown user costs what a wrong password costs, bcrypt checks are bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::support::*;
use crate::tls::port_of;

/// The certificates the toolkit's fixtures name, made with openssl: `server.crt`
/// (RSA, for its ECDHE_RSA suite cases, signed by `tls-ca-chain.pem`),
/// `client_selfsigned` and `client2_selfsigned` (self-signed client certificates,
/// the second with the SAN `test3` among others), and a CA file with no
/// certificate in it.
struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(status.success(), "openssl {args:?}");
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let ca = [
            &["req", "-x509"][..],
            &ec,
            &["-nodes", "-days", "1", "-subj", "/CN=edge-test-ca"],
            &["-keyout", "tls-ca-chain.key", "-out", "tls-ca-chain.pem"],
        ]
        .concat();
        openssl(dir, &ca);
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            dir.join("server.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("cnf");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                "server.csr",
                "-CA",
                "tls-ca-chain.pem",
                "-CAkey",
                "tls-ca-chain.key",
                "-CAcreateserial",
                "-extfile",
                "server.cnf",
                "-out",
                "server.crt",
            ],
        );
        for (name, sans) in [
            ("client_selfsigned", "DNS:client1"),
            (
                "client2_selfsigned",
                "DNS:test3,DNS:client2.lab,IP:10.0.0.7,email:ops@lab,URI:spiffe://lab/prom",
            ),
            ("client_other", "DNS:other"),
        ] {
            let (subject, key, pem, san) = (
                format!("/CN={name}"),
                format!("{name}.key"),
                format!("{name}.pem"),
                format!("subjectAltName={sans}"),
            );
            let args = [
                &["req", "-x509"][..],
                &ec,
                &["-nodes", "-days", "1", "-subj", &subject],
                &["-keyout", &key, "-out", &pem],
                &[
                    "-addext",
                    "basicConstraints=critical,CA:FALSE",
                    "-addext",
                    "keyUsage=digitalSignature",
                    "-addext",
                    "extendedKeyUsage=clientAuth",
                    "-addext",
                    &san,
                ],
            ]
            .concat();
            openssl(dir, &args);
        }
        std::fs::write(
            dir.join("tls-ca-chain-invalid.pem"),
            "this is not a PEM encoded certificate\n",
        )
        .expect("invalid ca");
        Pki {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file's text indented for a YAML block scalar.
    fn inline(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .expect("pem")
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect()
    }
}

/// How a TLS client of a Go test case is set up.
#[derive(Default, Clone)]
struct Client {
    max_tls12: bool,
    only_tls13: bool,
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
    groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
    cert: Option<&'static str>,
    alpn: Vec<Vec<u8>>,
}

/// What a handshake and (unless ALPN picked h2) one request came to.
#[derive(Debug)]
struct Fetched {
    suite: String,
    version: String,
    alpn: Option<String>,
    head: String,
    body: String,
}

impl Fetched {
    fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Connects to `port` over TLS as `client` describes, trusting the test CA, and
/// (over HTTP/1.1) GETs `path` with `authorization`.
fn fetch(
    pki: &Pki,
    port: &str,
    client: &Client,
    path: &str,
    authorization: Option<&str>,
) -> Result<Fetched, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = &client.suites {
        provider.cipher_suites = suites.clone();
    }
    if let Some(groups) = &client.groups {
        provider.kx_groups = groups.clone();
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = if client.max_tls12 {
        &[&rustls::version::TLS12]
    } else if client.only_tls13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("tls-ca-chain.pem")).expect("ca") {
        roots.add(cert.expect("ca cert")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client.cert {
        Some(name) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
                    .expect("cert")
                    .map(|c| c.expect("cert"))
                    .collect();
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = client.alpn.clone();
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(format!("127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    let suite = tls
        .conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let version = tls
        .conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let alpn = tls
        .conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let mut fetched = Fetched {
        suite,
        version,
        alpn,
        head: String::new(),
        body: String::new(),
    };
    if fetched.alpn.as_deref() == Some("h2") {
        return Ok(fetched);
    }
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // The server closed without close_notify after a whole answer.
        Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    fetched.head = head.to_owned();
    fetched.body = body.to_owned();
    Ok(fetched)
}

fn ok(pki: &Pki, port: &str, client: &Client) -> Fetched {
    let fetched = fetch(pki, port, client, "/metrics", None).expect("handshake and request");
    assert_eq!(fetched.status(), 200, "{}", fetched.head);
    fetched
}

fn refused(pki: &Pki, port: &str, client: &Client, wanted: &str) {
    match fetch(pki, port, client, "/metrics", None) {
        Ok(f) => panic!("expected {wanted}, got {} {}", f.version, f.head),
        Err(e) => assert!(e.contains(wanted), "expected {wanted}: {e}"),
    }
}

/// What `openssl s_client` (for clients rustls cannot be: TLS 1.1, CBC) printed.
fn s_client(port: &str, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("s_client")
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn config_for(dir: &Path) -> PathBuf {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        fixture_config(&fixtures().join("linux/x86-laptop"), ""),
    )
    .expect("config");
    config
}

/// `check-config` and `serve` on `web`: both refuse it (exit 2) with `wanted`
/// in the message.
fn both_refuse(dir: &Path, web: &Path, wanted: &str) {
    let config = config_for(dir);
    let (c, w) = (config.display().to_string(), web.display().to_string());
    let (status, out, err) = run_binary(
        &["check-config", "--config", &c, "--web.config.file", &w],
        dir,
    );
    assert_eq!(status.code(), Some(2), "check-config accepted {w}: {out}");
    assert!(
        err.contains(wanted),
        "check-config on {w}: wanted {wanted}: {err}"
    );
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config", &c, "--web.config.file", &w])
        .env("CONFIG_SERVER_URL", "")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    die_with_parent(&mut command);
    let mut child = command.spawn().expect("spawn");
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
    }
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "serve did not refuse {w}: {err}"
    );
    assert!(err.contains(wanted), "serve on {w}: wanted {wanted}: {err}");
}

/// `check-config` accepts `web` and `serve` starts with it: the exporter and
/// the port of its metrics listener.
fn both_accept(dir: &Path, web: &Path) -> (Exporter, String) {
    let config = config_for(dir);
    let (c, w) = (config.display().to_string(), web.display().to_string());
    let (status, out, err) = run_binary(
        &["check-config", "--config", &c, "--web.config.file", &w],
        dir,
    );
    assert!(status.success(), "check-config refused {w}: {err}");
    assert!(out.contains("web config:"), "{out}");
    let text = std::fs::read_to_string(&config).expect("config");
    let mut options = Options::new(&text);
    options.args = vec!["--web.config.file".into(), w];
    let exporter = Exporter::start_with(options);
    let port = port_of(&exporter.metrics_url);
    (exporter, port)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// The TLS head of most of the toolkit's fixtures.
const SERVER: &str =
    "tls_server_config:\n  cert_file: \"server.crt\"\n  key_file: \"server.key\"\n";

#[test]
fn the_toolkits_bad_files_are_refused_by_serve_and_check_config_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let d = &pki.dir;
    let cases: Vec<(&str, String, &str)> = vec![
        ("web_config_junk.yml", "tls_server_config\n  - junk: [\n".into(), "yaml"),
        (
            "web_config_junk_key.yml",
            "tls_server_config:\n  cert_filse: \"server.crt\"\n".into(),
            "unknown field `cert_filse`",
        ),
        (
            "web_config_noAuth_certPath_empty.bad.yml",
            "tls_server_config:\n  cert_file: \"\"\n  key_file: \"server.key\"\n".into(),
            "missing one of cert or cert_file",
        ),
        (
            "web_config_noAuth_cert_empty.bad.yml",
            "tls_server_config:\n  cert: \"\"\n  key_file: \"server.key\"\n".into(),
            "missing one of cert or cert_file",
        ),
        (
            "web_config_noAuth_keyPath_empty.bad.yml",
            "tls_server_config:\n  cert_file: \"server.crt\"\n  key_file: \"\"\n".into(),
            "missing one of key or key_file",
        ),
        (
            "web_config_noAuth_key_empty.bad.yml",
            "tls_server_config:\n  cert_file: \"server.crt\"\n  key: \"\"\n".into(),
            "missing one of key or key_file",
        ),
        (
            "web_config_noAuth_certPath_keyPath_empty.bad.yml",
            "tls_server_config:\n  cert_file: \"\"\n  key_file: \"\"\n  client_auth_type: \"x\"\n"
                .into(),
            "missing one of cert or cert_file",
        ),
        (
            "web_config_noAuth_certPath_invalid.bad.yml",
            "tls_server_config:\n  cert_file: \"somefile\"\n  key_file: \"server.key\"\n".into(),
            "No such file",
        ),
        (
            "web_config_noAuth_keyPath_invalid.bad.yml",
            "tls_server_config:\n  cert_file: \"server.crt\"\n  key_file: \"somefile\"\n".into(),
            "No such file",
        ),
        (
            "web_config_noAuth_certPath_keyPath_invalid.bad.yml",
            "tls_server_config:\n  cert_file: \"somefile\"\n  key_file: \"somefile\"\n".into(),
            "No such file",
        ),
        (
            "web_config_noAuth.bad.yml",
            format!("{SERVER}  client_ca_file: \"/dev/null\"\n"),
            "client CA's have been configured without a Client Auth Policy",
        ),
        (
            "web_config_auth_clientCAs_invalid.bad.yml",
            format!("{SERVER}  client_auth_type: \"RequireAndVerifyClientCert\"\n  client_ca_file: \"somefile\"\n"),
            "No such file",
        ),
        (
            "web_config_auth_clientCAs_nocerts.bad.yml",
            format!("{SERVER}  client_auth_type: \"RequireAndVerifyClientCert\"\n  client_ca_file: \"tls-ca-chain-invalid.pem\"\n"),
            "holds no certificate",
        ),
        (
            "web_config_auth_clientCAsText_nocerts.bad.yml",
            format!("{SERVER}  client_auth_type: \"RequireAndVerifyClientCert\"\n  client_ca: \"this is not a PEM encoded certificate\"\n"),
            "holds no certificate",
        ),
        (
            "web_config_auth_user_list_invalid.bad.yml",
            format!("{SERVER}basic_auth_users:\n  john: doe\n"),
            "hashedSecret too short to be a bcrypted password",
        ),
        (
            "web_config_noAuth_inventedCiphers.bad.yml",
            format!("{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n  cipher_suites:\n  - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048\n"),
            "unknown cipher: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048",
        ),
        (
            "web_config_noAuth_inventedCurves.bad.yml",
            format!("{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n  curve_preferences:\n    - CurveP257\n"),
            "unknown curve: CurveP257",
        ),
        (
            "web_config_noAuth_wrongTLSVersion.bad.yml",
            format!("{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n  min_version: TLS111\n"),
            "unknown TLS version: TLS111",
        ),
        (
            "web_config_noAuth_noHTTP2Cipher.bad.yml",
            format!("{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n  cipher_suites:\n    - TLS_RSA_WITH_AES_128_CBC_SHA\n  max_version: TLS12\n"),
            "missing an HTTP/2-required AES_128_GCM_SHA256 cipher",
        ),
        (
            "web_config_headers_content_type_options.bad.yml",
            "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n".into(),
            "invalid value for X-Content-Type-Options",
        ),
        (
            "web_config_headers_frame_options.bad.yml",
            "http_server_config:\n  headers:\n    X-Frame-Options: foo\n".into(),
            "invalid value for X-Frame-Options",
        ),
        (
            "web_config_headers_extra_header.bad.yml",
            "http_server_config:\n  headers:\n    Content-Type: foo\n".into(),
            "HTTP header \"Content-Type\" can not be configured",
        ),
        (
            "web_config_auth_client_san_no_client_auth.bad.yaml",
            format!("{SERVER}  client_allowed_sans:\n    - \"one\"\n"),
            "client_allowed_sans requires client_auth_type",
        ),
        (
            "web_config_auth_client_san_optional_cert.bad.yaml",
            format!("{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n  client_ca_file: \"client2_selfsigned.pem\"\n  client_allowed_sans:\n    - \"one\"\n"),
            "client_allowed_sans requires client_auth_type",
        ),
        // Good there, refused here with the reason: what rustls cannot do.
        (
            "web_config_noAuth_allCiphers.good.yml",
            format!("{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n  cipher_suites:\n  - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n  - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n  - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n  - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256\n  - TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256\n  - TLS_AES_128_GCM_SHA256\n  - TLS_AES_256_GCM_SHA384\n  - TLS_CHACHA20_POLY1305_SHA256\n  - TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA\n  - TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA\n  - TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA\n  - TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA\n  - TLS_RSA_WITH_AES_128_CBC_SHA\n  - TLS_RSA_WITH_AES_256_CBC_SHA\n  - TLS_RSA_WITH_AES_128_GCM_SHA256\n  - TLS_RSA_WITH_AES_256_GCM_SHA384\n"),
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA is a CBC suite",
        ),
        (
            "web_config_noAuth_allCurves.good.yml",
            format!("{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n  curve_preferences:\n    - CurveP256\n    - CurveP384\n    - CurveP521\n    - X25519\n    - X25519MLKEM768\n"),
            "CurveP521 cannot be honoured",
        ),
        (
            "web_config_noAuth_someCurves.good.yml",
            format!("{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n  min_version: TLS13\n  curve_preferences:\n  - CurveP521\n"),
            "CurveP521 cannot be honoured",
        ),
        (
            "web_config_users.good.yml (bob's cost 18)",
            format!(
                "{SERVER}basic_auth_users:\n  carol: {}\n  bob: $2y$18$4VeFDzXIoPHKnKTU3O3GH.N.vZu06CVqczYZ8WvfzrddFU6tGqjR.\n",
                bcrypt::hash("carol123", 4).expect("hash")
            ),
            "basic_auth_users.bob: bcrypt cost 18 is above 14",
        ),
        // And what the fail-closed issue found accepted and ignored.
        (
            "TLS 1.0 floor",
            format!("{SERVER}  min_version: TLS10\n"),
            "min_version: TLS10 cannot be honoured",
        ),
        (
            "TLS options without TLS",
            "tls_server_config:\n  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n".into(),
            "no certificate, so TLS is off",
        ),
        (
            "HTTP/2 without TLS",
            "http_server_config:\n  http2: true\n".into(),
            "http2: true needs TLS",
        ),
        (
            "a missing new certificate",
            "tls_server_config:\n  cert_file: \"renewed.crt\"\n  key_file: \"server.key\"\n".into(),
            "renewed.crt",
        ),
    ];
    for (name, text, wanted) in cases {
        let web = write(d, "web.yml", &text);
        eprintln!("case {name}");
        both_refuse(d, &web, wanted);
    }
    // A web config file that is not there.
    both_refuse(d, &d.join("somefile"), "No such file");
}

#[test]
fn the_toolkits_good_files_serve_what_its_go_tests_expect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let d = &pki.dir;
    use rustls::crypto::ring::cipher_suite as cs;
    use rustls::crypto::ring::kx_group;

    // An empty file: plain HTTP.
    let (exporter, port) = both_accept(d, &write(d, "web.yml", ""));
    let r = get(&format!("http://127.0.0.1:{port}/metrics"), &[]);
    assert_eq!(r.status, 200);
    drop(exporter);

    // web_config_noAuth.good.yml: TLS, and an HTTP client or a TLS 1.1 one fails.
    let (exporter, port) = both_accept(
        d,
        &write(
            d,
            "web.yml",
            &format!("{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n"),
        ),
    );
    let fetched = ok(&pki, &port, &Client::default());
    assert_eq!(fetched.version, "TLSv1_3");
    // HTTP/2 is on by default (http2: true), as in exporter-toolkit.
    let h2 = fetch(
        &pki,
        &port,
        &Client {
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            ..Client::default()
        },
        "/metrics",
        None,
    )
    .expect("h2 handshake");
    assert_eq!(h2.alpn.as_deref(), Some("h2"));
    if let Some(curl) = peer("curl") {
        let out = Command::new(curl)
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                "--http2",
            ])
            .arg("--cacert")
            .arg(pki.path("tls-ca-chain.pem"))
            .arg(format!("https://localhost:{port}/metrics"))
            .output()
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "2 200",
            "a scrape over HTTP/2"
        );
    }
    assert!(
        std::panic::catch_unwind(|| get(&format!("http://127.0.0.1:{port}/metrics"), &[]))
            .map_or(true, |r| r.status != 200),
        "plain HTTP to the TLS port"
    );
    let out = s_client(&port, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    // The client did offer TLS 1.1 (its seclevel lowered), and the server
    // answered with an alert.
    assert!(
        out.contains("Protocol  : TLSv1.1") && out.contains("SSL alert number"),
        "a TLS 1.1 client: {out}"
    );
    // VerifyClientCertIfGiven without client_ca_file: a given certificate is
    // verified against the system's CAs (ours is in none of them).
    refused(
        &pki,
        &port,
        &Client {
            cert: Some("client_selfsigned"),
            ..Client::default()
        },
        "UnknownCA",
    );
    drop(exporter);

    // web_config_noAuth_tlsInline.good.yml: certificate and key inline.
    let inline = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_auth_type: \"VerifyClientCertIfGiven\"\n",
        pki.inline("server.crt"),
        pki.inline("server.key")
    );
    let (exporter, port) = both_accept(d, &write(d, "web.yml", &inline));
    ok(&pki, &port, &Client::default());
    drop(exporter);

    // web_config_noAuth_someCiphers.good.yml: TLS 1.2 only, two suites in the
    // server's order.
    let some = format!(
        "{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n  cipher_suites:\n  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n  - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n  min_version: TLS12\n  max_version: TLS12\n"
    );
    let (exporter, port) = both_accept(d, &write(d, "web.yml", &some));
    let f = ok(
        &pki,
        &port,
        &Client {
            suites: Some(vec![cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]),
            ..Client::default()
        },
    );
    assert_eq!(f.version, "TLSv1_2");
    // The fail-closed issue: a TLS 1.2-only config no longer answers TLS 1.3.
    refused(
        &pki,
        &port,
        &Client {
            only_tls13: true,
            ..Client::default()
        },
        "ProtocolVersion",
    );
    // No common suite: a suite outside the list, and a CBC one.
    refused(
        &pki,
        &port,
        &Client {
            suites: Some(vec![cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256]),
            ..Client::default()
        },
        "HandshakeFailure",
    );
    let out = s_client(&port, &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA"]);
    assert!(out.contains("handshake failure"), "a CBC client: {out}");
    // The client offers 128 then 256, the server prefers its own order: 128.
    let f = ok(
        &pki,
        &port,
        &Client {
            suites: Some(vec![
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ]),
            ..Client::default()
        },
    );
    assert_eq!(f.suite, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
    drop(exporter);

    // web_config_noAuth_someCiphers_noOrder.good.yml: the client's order wins.
    let no_order = "tls_server_config :\n  cert_file : \"server.crt\"\n  key_file : \"server.key\"\n  client_auth_type : \"VerifyClientCertIfGiven\"\n  cipher_suites:\n  - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n  prefer_server_cipher_suites: false\n  min_version: TLS12\n  max_version: TLS12\n";
    let (exporter, port) = both_accept(d, &write(d, "web.yml", no_order));
    let f = ok(
        &pki,
        &port,
        &Client {
            suites: Some(vec![
                cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ]),
            ..Client::default()
        },
    );
    assert_eq!(f.suite, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
    drop(exporter);

    // Curves rustls has: only those listed are spoken.
    let curves = format!("{SERVER}  curve_preferences:\n    - CurveP384\n");
    let (exporter, port) = both_accept(d, &write(d, "web.yml", &curves));
    ok(
        &pki,
        &port,
        &Client {
            groups: Some(vec![kx_group::SECP384R1]),
            ..Client::default()
        },
    );
    refused(
        &pki,
        &port,
        &Client {
            groups: Some(vec![kx_group::X25519, kx_group::SECP256R1]),
            ..Client::default()
        },
        "HandshakeFailure",
    );
    drop(exporter);

    // web_config_noAuth_noHTTP2.good.yml: HTTP/1.1 only.
    let no_h2 = format!(
        "{SERVER}  client_auth_type: \"VerifyClientCertIfGiven\"\n  cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n  max_version: TLS12\nhttp_server_config:\n  http2: false\n"
    );
    let (exporter, port) = both_accept(d, &write(d, "web.yml", &no_h2));
    let f = ok(
        &pki,
        &port,
        &Client {
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            ..Client::default()
        },
    );
    assert_eq!(f.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(f.suite, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
    drop(exporter);

    // web_config_headers.good.yml: every header on the answers.
    let headers = "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000; includeSubDomains\n    X-Content-Type-Options: nosniff\n    X-XSS-Protection: 1\n    Content-Security-Policy: \"default-src 'self' *.test.example.net\"\n";
    let (exporter, port) = both_accept(d, &write(d, "web.yml", headers));
    let r = get(&format!("http://127.0.0.1:{port}/metrics"), &[]);
    assert_eq!(r.status, 200);
    for (name, value) in [
        ("X-Frame-Options", "deny"),
        (
            "Strict-Transport-Security",
            "max-age=31536000; includeSubDomains",
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("X-XSS-Protection", "1"),
        (
            "Content-Security-Policy",
            "default-src 'self' *.test.example.net",
        ),
    ] {
        assert_eq!(r.header(name), Some(value), "{name}");
    }
    drop(exporter);

    // tls_config_noAuth.requireanyclientcert.good.yml: any certificate, none
    // refused (the CA is not used).
    let any = format!(
        "{SERVER}  client_auth_type: \"RequireAnyClientCert\"\n  client_ca_file: \"tls-ca-chain.pem\"\n"
    );
    let (exporter, port) = both_accept(d, &write(d, "web.yml", &any));
    ok(
        &pki,
        &port,
        &Client {
            cert: Some("client_selfsigned"),
            ..Client::default()
        },
    );
    refused(&pki, &port, &Client::default(), "CertificateRequired");
    drop(exporter);

    // tls_config_noAuth.requireandverifyclientcert.good.yml.
    let verify = format!(
        "{SERVER}  client_auth_type: \"RequireAndVerifyClientCert\"\n  client_ca_file: \"client_selfsigned.pem\"\n"
    );
    let (exporter, port) = both_accept(d, &write(d, "web.yml", &verify));
    ok(
        &pki,
        &port,
        &Client {
            cert: Some("client_selfsigned"),
            ..Client::default()
        },
    );
    refused(
        &pki,
        &port,
        &Client {
            cert: Some("client2_selfsigned"),
            ..Client::default()
        },
        "UnknownCA",
    );
    drop(exporter);

    // web_config_auth_client_san.good.yaml / .bad.yaml, and the case:
    // a SAN outside the list is refused even when the chain verifies.
    for (sans, cert, good) in [
        ("[\"one\", \"test3\", \"two\"]", "client2_selfsigned", true),
        ("[\"bad\"]", "client2_selfsigned", false),
        ("[\"10.0.0.7\"]", "client2_selfsigned", true),
        ("[\"spiffe://lab/prom\"]", "client2_selfsigned", true),
        ("[\"one\", \"two\"]", "client_other", false),
    ] {
        let ca = if cert == "client_other" {
            "client_other.pem"
        } else {
            "client2_selfsigned.pem"
        };
        let text = format!(
            "{SERVER}  client_auth_type: \"RequireAndVerifyClientCert\"\n  client_ca_file: \"{ca}\"\n  client_allowed_sans: {sans}\n"
        );
        let (exporter, port) = both_accept(d, &write(d, "web.yml", &text));
        let client = Client {
            cert: Some(cert),
            ..Client::default()
        };
        if good {
            ok(&pki, &port, &client);
        } else {
            refused(&pki, &port, &client, "BadCertificate");
        }
        drop(exporter);
    }

    // The rate limiter fixtures: interval 0 never blocks; 1s with no burst
    // answers 429 from the first request.
    let (exporter, port) = both_accept(
        d,
        &write(d, "web.yml", "rate_limit:\n  interval: 0\n  burst: 0\n"),
    );
    for _ in 0..11 {
        assert_eq!(
            get(&format!("http://127.0.0.1:{port}/metrics"), &[]).status,
            200
        );
    }
    drop(exporter);
    let (exporter, port) = both_accept(
        d,
        &write(
            d,
            "web.yml",
            "rate_limit:\n  interval: \"1s\"\n  burst: 0\n",
        ),
    );
    let r = get(&format!("http://127.0.0.1:{port}/metrics"), &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.body, "Too Many Requests\n");
    drop(exporter);
    // A burst of 3 over a minute: three pass, the fourth waits.
    let (exporter, port) = both_accept(
        d,
        &write(d, "web.yml", "rate_limit:\n  interval: 1m\n  burst: 3\n"),
    );
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(&format!("http://127.0.0.1:{port}/metrics"), &[]).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    drop(exporter);

    // web_config_users_noTLS.good.yml: users without TLS.
    let users = format!(
        "basic_auth_users:\n  carol: {}\n  dave: {}\n",
        bcrypt::hash("carol123", 4).expect("hash"),
        bcrypt::hash("dave123", 4).expect("hash")
    );
    let (exporter, port) = both_accept(d, &write(d, "web.yml", &users));
    let url = format!("http://127.0.0.1:{port}/metrics");
    let basic = edge_metrics_exporter::net::auth::basic_header;
    assert_eq!(get(&url, &[]).status, 401);
    for (user, password, status) in [
        ("dave", "dave123", 200),
        ("carol", "carol123", 200),
        ("dave", "bad", 401),
        ("nonexistent", "nonexistent", 401),
    ] {
        let r = get(&url, &[("Authorization", &basic(user, password))]);
        assert_eq!(r.status, status, "{user}/{password}");
    }
    drop(exporter);
}

/// The fail-closed issue's reload: the web config loses its users and points
/// at a certificate that is not there. The reload fails, is counted, and the
/// users stay in force (and the old certificate serves).
#[test]
fn a_reload_that_fails_anywhere_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let d = &pki.dir;
    let hash = bcrypt::hash("scrape-pass", 4).expect("hash");
    let web = write(
        d,
        "web.yml",
        &format!("{SERVER}basic_auth_users:\n  prometheus: {hash}\n"),
    );
    let (exporter, port) = both_accept(d, &web);
    let basic = edge_metrics_exporter::net::auth::basic_header("prometheus", "scrape-pass");
    let authorized = |port: &str| {
        fetch(&pki, port, &Client::default(), "/metrics", Some(&basic))
            .expect("fetch")
            .status()
    };
    assert_eq!(authorized(&port), 200);
    let anonymous = fetch(&pki, &port, &Client::default(), "/metrics", None).expect("fetch");
    assert_eq!(anonymous.status(), 401);
    let failures = |body: &str| {
        sample_value(
            body,
            "edge_exporter_config_reloads_total{outcome=\"failure\"}",
        )
        .unwrap_or(0.0)
    };
    let before = failures(
        &fetch(&pki, &port, &Client::default(), "/metrics", Some(&basic))
            .expect("fetch")
            .body,
    );
    write(
        d,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: \"renewed.crt\"\n  key_file: \"server.key\"\n#basic_auth_users:\n#  prometheus: {hash}\n"
        ),
    );
    let r = exporter.api_post("/reload", "");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("renewed.crt"), "{}", r.body);
    // Still TLS with the old certificate, still a password.
    let anonymous = fetch(&pki, &port, &Client::default(), "/metrics", None).expect("fetch");
    assert_eq!(
        anonymous.status(),
        401,
        "the users stay after a failed reload"
    );
    let body = eventually("the failure counted", Duration::from_secs(5), || {
        let f = fetch(&pki, &port, &Client::default(), "/metrics", Some(&basic)).ok()?;
        (failures(&f.body) == before + 1.0).then_some(f.body)
    });
    assert!(body.contains("host_ram_total_mb"));
    // Fixed: the reload applies all of it at once.
    std::fs::copy(pki.path("server.crt"), pki.path("renewed.crt")).expect("copy");
    assert_eq!(exporter.api_post("/reload", "").status, 200);
    let anonymous = fetch(&pki, &port, &Client::default(), "/metrics", None).expect("fetch");
    assert_eq!(anonymous.status(), 200, "no users any more");
}

/// A wrong password for a real user and any password for an unknown one cost
/// the same bcrypt work, so user names cannot be told apart by timing; and at
/// most two checks run at once, the rest wait briefly, then 503, while a
/// credential that passed before answers at once (remembered, keyed).
#[test]
fn unknown_users_cost_what_wrong_passwords_cost_and_checks_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cost = 9;
    let hash = bcrypt::hash("scrape-pass", cost).expect("hash");
    let web = write(
        dir.path(),
        "web.yml",
        &format!("basic_auth_users:\n  prometheus: {hash}\n  grafana: {hash}\n"),
    );
    let (exporter, port) = both_accept(dir.path(), &web);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let basic = edge_metrics_exporter::net::auth::basic_header;
    let timed = |user: &str, password: &str| {
        let started = Instant::now();
        let r = get(&url, &[("Authorization", &basic(user, password))]);
        (r.status, started.elapsed())
    };
    // Interleaved, and compared pair by pair, so load on the machine (other
    // tests run beside this one) falls on both alike.
    let mut ratios = Vec::new();
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..21 {
        let (status, k) = timed("prometheus", &format!("wrong-{i}"));
        assert_eq!(status, 401);
        let (status, u) = timed(&format!("nobody-{i}"), "wrong");
        assert_eq!(status, 401);
        ratios.push(k.as_secs_f64() / u.as_secs_f64());
        known.push(k);
        unknown.push(u);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (k, u) = (median(&mut known), median(&mut unknown));
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    eprintln!(
        "wrong password: median {k:?}; unknown user: median {u:?}; median ratio of pairs {ratio:.3}"
    );
    assert!(
        (0.8..=1.25).contains(&ratio),
        "wrong password {k:?} vs unknown user {u:?} (pairs: median ratio {ratio:.3}): user names can be told apart"
    );
    // The right password: one bcrypt, then remembered.
    let (status, first) = timed("prometheus", "scrape-pass");
    assert_eq!(status, 200);
    let (status, again) = timed("prometheus", "scrape-pass");
    assert_eq!(status, 200);
    eprintln!("right password: first {first:?}, remembered {again:?}");

    // Eight wrong passwords at once at cost 13 (16 times cost 9 each):
    // two run, the ones still waiting after a second get 503; a remembered
    // credential passes meanwhile.
    let slow = bcrypt::hash("x", 13).expect("hash");
    std::fs::write(
        &web,
        format!("basic_auth_users:\n  prometheus: {hash}\n  slow: {slow}\n"),
    )
    .expect("write");
    assert_eq!(exporter.api_post("/reload", "").status, 200);
    let (status, _) = timed("prometheus", "scrape-pass");
    assert_eq!(status, 200);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                get(
                    &url,
                    &[("Authorization", &basic("slow", &format!("no-{i}")))],
                )
                .status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let (status, during) = timed("prometheus", "scrape-pass");
    assert_eq!(status, 200, "a remembered credential needs no slot");
    let statuses: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    eprintln!("remembered credential while busy: {during:?}; statuses {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 401).count() >= 2,
        "{statuses:?}"
    );
}
