//! TLS on the viewer port, with independent clients (rustls' client under tungstenite) and a
//! test CA made at test time: `wss://` beside `ws://`, TLS 1.3 and 1.2, ALPN, a group-cast
//! reaching plain and TLS viewers alike, and a certificate reload (SIGHUP) that new
//! handshakes see while an open connection keeps working.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{api_call, TOKEN, WAIT};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};

type TlsWs = tungstenite::WebSocket<StreamOwned<ClientConnection, TcpStream>>;

/// A CA and a `localhost` leaf it signed, written as PEM into `dir`.
fn make_pki(dir: &Path) -> CertificateDer<'static> {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    ca.der().clone()
}

struct TlsServer {
    child: Child,
    viewer: SocketAddr,
    tls: SocketAddr,
    api: SocketAddr,
    api_tls: SocketAddr,
    dir: PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(tag: &str, extra: &[&str]) -> (TlsServer, CertificateDer<'static>) {
    let dir = std::env::temp_dir().join(format!("ovation-tls-test-{}-{tag}", std::process::id()));
    let ca = make_pki(&dir.join("pki"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovation"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args(["--rtmp-listen", "127.0.0.1:0"])
        .args([
            "--tls-listen",
            "127.0.0.1:0",
            "--api-tls-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(dir.join("pki/cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("pki/key.pem"))
        .args(["--api-token", TOKEN, "--log", "error", "--shards", "2"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .env_remove("OVATION_API_TOKEN")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ovation");
    let line = common::ready_line(&mut child);
    let field = |name: &str| -> SocketAddr {
        common::ready_field(&line, name)
            .unwrap_or_else(|| panic!("{name} in {line:?}"))
            .parse()
            .expect("address")
    };
    let server = TlsServer {
        viewer: field("viewer"),
        tls: field("tls"),
        api: field("api"),
        api_tls: field("api_tls"),
        child,
        dir,
    };
    (server, ca)
}

fn client_config(
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Connects over TLS and completes the upgrade; returns the socket and the welcome.
fn try_wss(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<(TlsWs, Value), String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
        .map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    // Drive the handshake first so a certificate error shows as one.
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let url = format!("wss://localhost:{}/v1/viewer", addr.port());
    let (mut ws, resp) = tungstenite::client(url, tls).map_err(|e| e.to_string())?;
    assert_eq!(resp.status(), 101);
    let welcome = next_json(&mut ws);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    Ok((ws, welcome))
}

fn next_json<S: std::io::Read + std::io::Write>(ws: &mut tungstenite::WebSocket<S>) -> Value {
    loop {
        match ws.read().expect("read message") {
            tungstenite::Message::Text(t) => return serde_json::from_str(&t).expect("json"),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

fn next_message<S: std::io::Read + std::io::Write>(ws: &mut tungstenite::WebSocket<S>) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = next_json(ws);
        if v["type"] == "message" {
            return v;
        }
        assert!(Instant::now() < deadline, "no message");
    }
}

fn cast(server: &TlsServer, payload: &Value) {
    let (status, body) = api_call(
        server.api,
        "POST",
        "/api/groups/global/messages",
        Some(&json!({ "payload": payload })),
        Some(TOKEN),
    );
    assert_eq!(status, 202, "{body}");
}

#[test]
fn wss_and_ws_side_by_side_get_the_same_cast_on_tls13_and_tls12() {
    let (server, ca) = start("side", &[]);
    let (mut v13, _) = try_wss(server.tls, client_config(&ca, &[&rustls::version::TLS13])).unwrap();
    let (mut v12, _) = try_wss(server.tls, client_config(&ca, &[&rustls::version::TLS12])).unwrap();
    let (mut plain, _) = common::connect(&format!("ws://{}/v1/viewer", server.viewer), None);
    // A message larger than one TLS record (16 KiB) crosses several.
    let big = "x".repeat(40_000);
    cast(&server, &json!({ "n": 1, "big": big }));
    for got in [
        next_message(&mut v13),
        next_message(&mut v12),
        next_message(&mut plain),
    ] {
        assert_eq!(got["payload"]["n"], 1);
        assert_eq!(got["payload"]["big"].as_str().map(str::len), Some(40_000));
    }
    // The TLS viewer talks back: a ping is answered inside TLS.
    v13.send(tungstenite::Message::Ping(b"p".to_vec())).unwrap();
    loop {
        match v13.read().expect("pong") {
            tungstenite::Message::Pong(p) => {
                assert_eq!(p, b"p");
                break;
            }
            _ => continue,
        }
    }
    // A clean close from the client gets the close handshake back.
    v13.close(None).unwrap();
    loop {
        match v13.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close: {e}"),
        }
    }
}

#[test]
fn plain_bytes_on_the_tls_port_are_refused_without_harm() {
    let (server, ca) = start("garbage", &[]);
    // An HTTP request without TLS: the server drops it (no panic), and TLS still works.
    let mut raw = common::Raw::connect(server.tls);
    raw.send_bytes(b"GET /v1/viewer HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(raw.closed(), "the TLS port closes a non-TLS client");
    try_wss(server.tls, client_config(&ca, &[&rustls::version::TLS13])).unwrap();
}

#[test]
fn sighup_reload_changes_the_certificate_for_new_handshakes_only() {
    let (server, old_ca) = start("reload", &[]);
    let old = client_config(&old_ca, &[&rustls::version::TLS13]);
    let (mut open, _) = try_wss(server.tls, old.clone()).unwrap();

    // A new CA and leaf replace the files; then SIGHUP.
    let new_ca = make_pki(&server.dir.join("next"));
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(
            server.dir.join("next").join(f),
            server.dir.join("pki").join(f),
        )
        .unwrap();
    }
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let new = client_config(&new_ca, &[&rustls::version::TLS13]);
    // The reload runs on the server's signal thread: retry (bounded) until it took effect.
    let deadline = Instant::now() + WAIT;
    let (mut fresh, _) = loop {
        match try_wss(server.tls, new.clone()) {
            Ok(ok) => break ok,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "new certificate never served: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    // The old certificate is gone for new handshakes...
    let err = match try_wss(server.tls, old) {
        Ok(_) => panic!("the old CA still verifies after the reload"),
        Err(e) => e,
    };
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );
    // ...and the connection opened before the reload is untouched.
    cast(&server, &json!("after reload"));
    assert_eq!(next_message(&mut open)["payload"], "after reload");
    assert_eq!(next_message(&mut fresh)["payload"], "after reload");
}

#[test]
fn the_operator_api_over_tls() {
    use std::io::{Read, Write};
    let (server, ca) = start("api", &[]);
    let request = |tls: &mut StreamOwned<ClientConnection, TcpStream>, close: bool| {
        let connection = if close { "close" } else { "keep-alive" };
        write!(
            tls,
            "GET /api/stats HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nConnection: {connection}\r\n\r\n"
        )
        .unwrap();
    };
    let tcp = TcpStream::connect(server.api_tls).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let conn = ClientConnection::new(
        client_config(&ca, &[&rustls::version::TLS13]),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    // Two requests on one connection, the second closing it: both answered, then a clean
    // close_notify (read_to_end would fail on a truncated stream).
    request(&mut tls, false);
    request(&mut tls, true);
    let mut out = String::new();
    tls.read_to_string(&mut out).expect("a clean TLS close");
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.contains("\"connections\":"), "{out}");
    // Plain HTTP on the API's TLS port is refused, and the plain port still works.
    let mut raw = common::Raw::connect(server.api_tls);
    raw.send_bytes(b"GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(raw.closed());
    let (status, _) = api_call(server.api, "GET", "/api/stats", None, Some(TOKEN));
    assert_eq!(status, 200);
}
