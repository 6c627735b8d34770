//! The session against rustls' own client, wired in memory.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::{CertStore, TlsSession};

/// A CA, and a leaf for `localhost` signed by it, written as PEM files in a fresh directory.
struct Pki {
    dir: std::path::PathBuf,
    ca: CertificateDer<'static>,
}

fn pki(tag: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("ovation-tls-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
    Pki {
        dir,
        ca: ca.der().clone(),
    }
}

fn client(
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Moves bytes both ways until neither side has anything to say; returns the server's
/// plaintext.
fn pump(client: &mut ClientConnection, server: &mut TlsSession) -> Vec<u8> {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let mut to_server = Vec::new();
        client.write_tls(&mut to_server).unwrap();
        let mut to_client = Vec::new();
        server
            .receive(&to_server, &mut plain, &mut to_client)
            .unwrap();
        if !to_client.is_empty() {
            client.read_tls(&mut &to_client[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        if to_server.is_empty() && to_client.is_empty() && !client.wants_write() {
            break;
        }
    }
    plain
}

#[test]
fn handshake_and_data_both_ways_on_tls13_and_tls12() {
    let pki = pki("both");
    let store = CertStore::open(&pki.dir.join("cert.pem"), &pki.dir.join("key.pem")).unwrap();
    let config = store.server_config().unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut c = client(&pki.ca, &[version]);
        let mut s = TlsSession::new(config.clone()).unwrap();
        c.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let got = pump(&mut c, &mut s);
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
        assert!(!s.is_handshaking());
        assert_eq!(c.alpn_protocol(), None, "client offered no ALPN");
        // A large message crosses several records.
        let big = vec![b'x'; 40_000];
        let mut out = Vec::new();
        s.encrypt(&big, &mut out).unwrap();
        let mut wire = &out[..];
        let mut back = Vec::new();
        while !wire.is_empty() {
            // Rustls' buffered client takes a bounded amount per read_tls.
            c.read_tls(&mut wire).unwrap();
            c.process_new_packets().unwrap();
            let _ = c.reader().read_to_end(&mut back);
        }
        let read = back.len();
        assert_eq!(read, big.len());
        assert!(
            s.incoming.capacity() == 0,
            "an idle session holds no buffer"
        );
    }
}

#[test]
fn bytes_split_at_every_position_decrypt_the_same() {
    let pki = pki("split");
    let store = CertStore::open(&pki.dir.join("cert.pem"), &pki.dir.join("key.pem")).unwrap();
    let config = store.server_config().unwrap();
    let mut c = client(&pki.ca, &[&rustls::version::TLS13]);
    let mut s = TlsSession::new(config).unwrap();
    pump(&mut c, &mut s);
    c.writer().write_all(b"hello over tls").unwrap();
    let mut wire = Vec::new();
    c.write_tls(&mut wire).unwrap();
    // Feed one byte at a time: partial records wait in `incoming`.
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    for b in &wire {
        s.receive(std::slice::from_ref(b), &mut plain, &mut out)
            .unwrap();
    }
    assert_eq!(plain, b"hello over tls");
}

#[test]
fn garbage_is_a_protocol_error_not_a_panic() {
    let pki = pki("garbage");
    let store = CertStore::open(&pki.dir.join("cert.pem"), &pki.dir.join("key.pem")).unwrap();
    let mut s = TlsSession::new(store.server_config().unwrap()).unwrap();
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let err = s.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut plain, &mut out);
    assert!(err.is_err());
    assert!(
        s.encrypt(b"x", &mut out).is_err(),
        "no application data before a handshake"
    );
}

#[test]
fn reload_changes_the_certificate_of_new_handshakes_only() {
    let first = pki("reload-a");
    let second = pki("reload-b");
    let cert = first.dir.join("cert.pem");
    let key = first.dir.join("key.pem");
    let store = CertStore::open(&cert, &key).unwrap();
    let config = store.server_config().unwrap();
    let mut old = client(&first.ca, &[&rustls::version::TLS13]);
    let mut old_s = TlsSession::new(config.clone()).unwrap();
    pump(&mut old, &mut old_s);
    // Swap the files for the second CA's and reload.
    std::fs::copy(second.dir.join("cert.pem"), &cert).unwrap();
    std::fs::copy(second.dir.join("key.pem"), &key).unwrap();
    store.reload().unwrap();
    // A client trusting only the second CA now succeeds...
    let mut new = client(&second.ca, &[&rustls::version::TLS13]);
    let mut new_s = TlsSession::new(config.clone()).unwrap();
    new.writer().write_all(b"new").unwrap();
    assert_eq!(pump(&mut new, &mut new_s), b"new");
    // ...and the connection made before the reload still works.
    old.writer().write_all(b"old").unwrap();
    assert_eq!(pump(&mut old, &mut old_s), b"old");
    // A broken file leaves the current certificate in place.
    std::fs::write(&cert, "not pem").unwrap();
    assert!(store.reload().is_err());
    let mut again = client(&second.ca, &[&rustls::version::TLS13]);
    let mut again_s = TlsSession::new(config).unwrap();
    again.writer().write_all(b"again").unwrap();
    assert_eq!(pump(&mut again, &mut again_s), b"again");
}
