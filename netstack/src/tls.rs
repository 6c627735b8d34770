//! TLS for the viewer and API ports: rustls' unbuffered server connection behind a sans-IO
//! session (ciphertext in, plaintext and ciphertext out; no sockets, no clock), and a
//! certificate store that can be reloaded while the server runs.
//!
//! Why unbuffered: rustls' buffered `ServerConnection` keeps a read buffer of at least 4 KiB
//! per connection once it has read anything, which an idle viewer would hold forever. Here
//! the only buffer a session owns is `incoming` (ciphertext of a record not yet complete),
//! released as soon as it is empty, so an idle TLS viewer holds the connection state and its
//! keys, nothing more. Output goes into a `Vec` the caller owns and sends.
//!
//! Reload: [`CertStore`] is the `ResolvesServerCert` of the one `ServerConfig`; every new
//! handshake asks it for the current certificate, so [`CertStore::reload`] changes what new
//! handshakes see and leaves open connections (whose keys are already agreed) untouched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, UnbufferedServerConnection};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
pub use rustls::ServerConfig;

/// What can go wrong loading certificates or running a TLS session.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A certificate file held no usable PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// A key file held no usable PEM private key.
    #[error("{0}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    /// rustls refused the key or the configuration.
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
    /// The peer broke the protocol (bad record, failed handshake, bad MAC...). An alert, if
    /// one is due, has been appended to the output.
    #[error("TLS: {0}")]
    Protocol(rustls::Error),
    /// Application data cannot be sent yet (handshake still running) or any more (closed).
    #[error("TLS session cannot send application data in this state")]
    NotReady,
    /// The key's usage limit was reached; the connection must close.
    #[error("TLS encryption limit reached")]
    Exhausted,
}

/// Reads a PEM certificate chain and private key into a signing key for rustls.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_pem = read(key)?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(key.to_owned()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key_der, &provider).map_err(TlsError::Setup)
}

/// The certificate every new handshake gets, replaceable at run time.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads `cert` (PEM chain, leaf first) and `key` (PEM private key).
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<CertStore>, TlsError> {
        let loaded = load_certified_key(cert, key)?;
        Ok(Arc::new(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// Reads the files again. On error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Arc::new(load_certified_key(&self.cert, &self.key)?);
        match self.current.write() {
            Ok(mut current) => *current = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A server configuration (TLS 1.3 and 1.2, ALPN `http/1.1`) whose certificate is
    /// whatever this store holds at each handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Session tickets would keep per-process state for resumption; handshakes are cheap
        // enough without, and the stateless default keeps memory flat.
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// What [`TlsSession::receive`] found besides plaintext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The peer sent close_notify: no more application data will come.
    pub peer_closed: bool,
}

/// One server-side TLS connection, sans-IO.
pub struct TlsSession {
    conn: UnbufferedServerConnection,
    /// Ciphertext received but not yet processed (a partial record). Empty, with no
    /// capacity, whenever the peer is idle.
    incoming: Vec<u8>,
}

/// Largest ciphertext a session keeps waiting for a record to complete: one maximal TLS
/// record (16 KiB plaintext + header, padding and tag) with room for a second one's start.
const MAX_INCOMING: usize = 2 * (16 * 1024 + 256);

impl TlsSession {
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsSession, TlsError> {
        Ok(TlsSession {
            conn: UnbufferedServerConnection::new(config).map_err(TlsError::Setup)?,
            incoming: Vec::new(),
        })
    }

    /// Whether the handshake is still running (no application data can be sent).
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Takes ciphertext from the peer. Decrypted application data is appended to `plain`,
    /// records to send back (handshake messages, alerts) to `out`, which the caller must
    /// send before anything it encrypts later.
    pub fn receive(
        &mut self,
        data: &[u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Received, TlsError> {
        self.incoming.extend_from_slice(data);
        let mut received = Received::default();
        let result = self.process(plain, out, &mut received);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        } else if self.incoming.len() > MAX_INCOMING {
            return Err(TlsError::Protocol(rustls::Error::General(
                "record too large".into(),
            )));
        }
        result.map(|()| received)
    }

    fn process(
        &mut self,
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
        received: &mut Received,
    ) -> Result<(), TlsError> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let state = state.map_err(TlsError::Protocol)?;
            let more = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(TlsError::Protocol)?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    true
                }
                ConnectionState::ReadEarlyData(mut early) => {
                    // Early data is not enabled; should a peer send some anyway, it is
                    // application data like any other.
                    while let Some(record) = early.next_record() {
                        let record = record.map_err(TlsError::Protocol)?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    true
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    append(out, 1024, |buf| match encode.encode(buf) {
                        Ok(n) => Ok(Ok(n)),
                        Err(EncodeError::InsufficientSize(e)) => Err(e.required_size),
                        Err(EncodeError::AlreadyEncoded) => Ok(Err(TlsError::NotReady)),
                    })?;
                    true
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // The caller sends `out` before anything encrypted later.
                    transmit.done();
                    true
                }
                ConnectionState::PeerClosed => {
                    received.peer_closed = true;
                    true
                }
                ConnectionState::Closed => {
                    received.peer_closed = true;
                    false
                }
                // BlockedHandshake (needs more bytes), WriteTraffic (everything processed).
                _ => false,
            };
            self.incoming.drain(..discard);
            if !more {
                return Ok(());
            }
        }
    }

    /// Encrypts application data into records appended to `out`.
    pub fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        self.write_traffic(out, |traffic, out| {
            let guess = plain.len() + 64 * (plain.len() / (16 * 1024) + 1);
            append(out, guess, |buf| match traffic.encrypt(plain, buf) {
                Ok(n) => Ok(Ok(n)),
                Err(EncryptError::InsufficientSize(e)) => Err(e.required_size),
                Err(EncryptError::EncryptExhausted) => Ok(Err(TlsError::Exhausted)),
            })
        })
    }

    /// Appends a close_notify alert to `out`.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        self.write_traffic(out, |traffic, out| {
            append(out, 64, |buf| match traffic.queue_close_notify(buf) {
                Ok(n) => Ok(Ok(n)),
                Err(EncryptError::InsufficientSize(e)) => Err(e.required_size),
                Err(_) => Ok(Err(TlsError::NotReady)),
            })
        })
    }

    /// Steps the connection to its write state (encoding any pending handshake or key update
    /// records first) and runs `write` there.
    fn write_traffic(
        &mut self,
        out: &mut Vec<u8>,
        write: impl FnOnce(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut Vec<u8>,
        ) -> Result<(), TlsError>,
    ) -> Result<(), TlsError> {
        // Bounded: each round either writes, returns, or encodes one pending record.
        for _ in 0..16 {
            // Only complete records are ever left unprocessed in `receive`, so this sees no
            // application data: pass an empty buffer.
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            match state.map_err(TlsError::Protocol)? {
                ConnectionState::WriteTraffic(mut traffic) => return write(&mut traffic, out),
                ConnectionState::EncodeTlsData(mut encode) => {
                    append(out, 1024, |buf| match encode.encode(buf) {
                        Ok(n) => Ok(Ok(n)),
                        Err(EncodeError::InsufficientSize(e)) => Err(e.required_size),
                        Err(_) => Ok(Err(TlsError::NotReady)),
                    })?;
                }
                ConnectionState::TransmitTlsData(mut transmit) => {
                    if let Some(mut traffic) = transmit.may_encrypt_app_data() {
                        let result = write(&mut traffic, out);
                        transmit.done();
                        return result;
                    }
                    transmit.done();
                }
                ConnectionState::PeerClosed => {}
                _ => return Err(TlsError::NotReady),
            }
        }
        Err(TlsError::NotReady)
    }
}

/// Runs `fill` on a zeroed tail of `out` of `guess` bytes, growing it to the size `fill`
/// asks for (`Err(required)`) until it fits, and keeps the bytes it wrote.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<Result<usize, TlsError>, usize>,
) -> Result<(), TlsError> {
    let start = out.len();
    let mut want = guess;
    for _ in 0..4 {
        out.resize(start + want, 0);
        match fill(&mut out[start..]) {
            Ok(Ok(n)) => {
                out.truncate(start + n);
                return Ok(());
            }
            Ok(Err(e)) => {
                out.truncate(start);
                return Err(e);
            }
            Err(required) => want = required,
        }
    }
    out.truncate(start);
    Err(TlsError::NotReady)
}

#[cfg(test)]
mod tests;
