//! Geolocation behind a load balancer (issue 14): from a trusted balancer, the PROXY protocol
//! (v1 and v2) or `X-Forwarded-For` gives the viewer's address, whose country (from a tiny
//! database written at test time) joins the profile and the group predicates. From anyone
//! else those headers are not believed: a PROXY header is a malformed request (400) and
//! `X-Forwarded-For` is ignored.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const DB: &[(&str, &str)] = &[
    ("11.0.0.0/8", "HU"),
    ("22.0.0.0/8", "DE"),
    ("33.0.0.0/8", "BR"),
];

/// A server trusting `trusted` as a balancer, with the test database.
pub fn server_with_geo(trusted: &str) -> (Server, std::path::PathBuf) {
    // One file per server: the tests run in parallel and each removes its own at the end.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let db = std::env::temp_dir().join(format!("ovation-geo-{}-{n}.mmdb", std::process::id()));
    std::fs::write(&db, mmdb::country_db(DB)).unwrap();
    let server = Server::start(&[
        "--shards",
        "2",
        "--cpu-steering",
        "false",
        "--trusted-proxies",
        trusted,
        "--geo-db",
        db.to_str().unwrap(),
    ]);
    (server, db)
}

fn proxy_v2(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut b = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    b.extend_from_slice(&[0x21, 0x11, 0, 12]);
    b.extend_from_slice(&ip);
    b.extend_from_slice(&[127, 0, 0, 1]);
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(&8080u16.to_be_bytes());
    b
}

/// A WebSocket viewer whose connection starts with `preamble` (a PROXY header), with extra
/// request headers.
fn viewer(server: &Server, preamble: &[u8], headers: &[(&'static str, &str)]) -> (Ws, Value) {
    use tungstenite::client::IntoClientRequest;
    let mut tcp = TcpStream::connect(server.viewer).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(preamble).unwrap();
    let mut req = server.url("").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    let (mut ws, _) =
        tungstenite::client(req, tungstenite::stream::MaybeTlsStream::Plain(tcp)).expect("upgrade");
    let welcome = next_json(&mut ws);
    (ws, welcome)
}

fn profile(server: &Server, welcome: &Value) -> Value {
    let id = welcome["viewer"].as_str().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = server.api("GET", &format!("/api/viewers/{id}"), None);
        if status == 200 {
            return v;
        }
        assert!(Instant::now() < deadline, "viewer {id} never mirrored");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn trusted_balancer_gives_address_and_country() {
    let (server, db) = server_with_geo("127.0.0.1");
    let (_a, wa) = viewer(
        &server,
        b"PROXY TCP4 11.1.2.3 127.0.0.1 40000 8080\r\n",
        &[],
    );
    let (_b, wb) = viewer(&server, &proxy_v2([22, 9, 9, 9], 41000), &[]);
    let (_c, wc) = viewer(&server, b"", &[("X-Forwarded-For", "10.9.9.9, 33.4.4.4")]);
    let (_d, wd) = viewer(&server, b"PROXY UNKNOWN\r\n", &[]);
    let a = profile(&server, &wa);
    assert_eq!(
        (a["peer"].as_str(), a["country"].as_str()),
        (Some("11.1.2.3:40000"), Some("HU"))
    );
    let b = profile(&server, &wb);
    assert_eq!(
        (b["peer"].as_str(), b["country"].as_str()),
        (Some("22.9.9.9:41000"), Some("DE"))
    );
    let c = profile(&server, &wc);
    assert_eq!(
        (c["peer"].as_str(), c["country"].as_str()),
        (Some("33.4.4.4:0"), Some("BR"))
    );
    let d = profile(&server, &wd);
    assert!(d["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{d}");
    assert_eq!(d["country"], Value::Null, "loopback is in no country");

    // `country` joins the group predicates.
    let (status, g) = server.api(
        "POST",
        "/api/groups",
        Some(&json!({"name": "hu-de", "match": {"country": ["hu", "DE"]}})),
    );
    assert_eq!(status, 201, "{g}");
    assert_eq!(g["size"], 2);
    let _ = std::fs::remove_file(db);
}

#[test]
fn untrusted_peers_cannot_claim_an_address() {
    let (server, db) = server_with_geo("10.0.0.0/8");
    // A PROXY header from an untrusted peer is not HTTP: 400, no viewer.
    let mut tcp = TcpStream::connect(server.viewer).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(
        b"PROXY TCP4 11.1.2.3 127.0.0.1 40000 8080\r\nGET /v1/viewer HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // X-Forwarded-For from an untrusted peer is ignored.
    let (_v, w) = viewer(&server, b"", &[("X-Forwarded-For", "11.1.1.1")]);
    let v = profile(&server, &w);
    assert!(v["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");
    assert_eq!(v["country"], Value::Null);
    let _ = std::fs::remove_file(db);
}

#[test]
fn a_malformed_proxy_header_from_a_balancer_is_refused() {
    let (server, db) = server_with_geo("127.0.0.0/8");
    for bad in [
        &b"PROXY TCP4 11.1.2.3 127.0.0.1 99999 8080\r\n"[..],
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x02ab",
    ] {
        let mut tcp = TcpStream::connect(server.viewer).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.write_all(bad).unwrap();
        tcp.write_all(b"GET /v1/viewer HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    // The server still serves a well-formed one afterwards.
    let (_v, w) = viewer(&server, b"PROXY TCP4 22.0.0.1 127.0.0.1 1 8080\r\n", &[]);
    assert_eq!(profile(&server, &w)["country"], "DE");
    let _ = std::fs::remove_file(db);
}
