//! TLS on a shard: the handshake-phase reader/writer over a [`TlsSession`] (the HTTP upgrade
//! runs inside it), and the sealing of shared frames into one viewer's records.
//!
//! A group-cast frame is still encoded once for every viewer; each TLS viewer encrypts that
//! shared plaintext with its own keys when it is queued ([`seal`]). Plain viewers never come
//! here.

use std::io;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use netstack::tls::{TlsError, TlsSession};

use crate::proto::Frame;

/// Encrypts `frames` (in order) into one buffer of records for one viewer.
pub(crate) fn seal(session: &mut TlsSession, frames: &[Frame]) -> Result<Frame, TlsError> {
    let plain: usize = frames.iter().map(|f| f.len()).sum();
    let mut out = Vec::with_capacity(plain + 32 * frames.len());
    if let [one] = frames {
        session.encrypt(one, &mut out)?;
    } else {
        // Several frames: one run of records instead of a record (and its tag) each.
        let mut joined = Vec::with_capacity(plain);
        for f in frames {
            joined.extend_from_slice(f);
        }
        session.encrypt(&joined, &mut out)?;
    }
    Ok(Frame::from(out))
}

/// The records of a WebSocket close frame followed by TLS close_notify.
pub(crate) fn seal_close(session: &mut TlsSession, frame: &[u8]) -> Result<Vec<u8>, TlsError> {
    let mut out = Vec::with_capacity(frame.len() + 64);
    session.encrypt(frame, &mut out)?;
    session.close_notify(&mut out)?;
    Ok(out)
}

/// The byte stream of a connection during its HTTP upgrade: plain, or through TLS (whose
/// handshake runs on the first read).
pub(crate) struct Wire {
    tls: Option<Box<TlsSession>>,
    /// Plaintext decrypted and not yet read.
    plain: Vec<u8>,
}

impl Wire {
    pub fn plain() -> Wire {
        Wire {
            tls: None,
            plain: Vec::new(),
        }
    }

    /// No TLS on this connection.
    pub fn is_plain(&self) -> bool {
        self.tls.is_none()
    }

    pub fn tls(session: TlsSession) -> Wire {
        Wire {
            tls: Some(Box::new(session)),
            plain: Vec::new(),
        }
    }

    /// Reads plaintext into `buf`; 0 at EOF (or the peer's close_notify).
    pub async fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        let Some(session) = self.tls.as_mut() else {
            return stream.read(buf).await;
        };
        let mut cipher = [0u8; 4096];
        loop {
            if !self.plain.is_empty() {
                let n = buf.len().min(self.plain.len());
                buf[..n].copy_from_slice(&self.plain[..n]);
                self.plain.drain(..n);
                return Ok(n);
            }
            let n = stream.read(&mut cipher).await?;
            if n == 0 {
                return Ok(0);
            }
            let mut out = Vec::new();
            let received = session.receive(&cipher[..n], &mut self.plain, &mut out);
            if !out.is_empty() {
                stream.write_all(&out).await?;
            }
            let received = received.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if received.peer_closed && self.plain.is_empty() {
                return Ok(0);
            }
        }
    }

    /// Writes `data` (encrypted on a TLS connection).
    pub async fn write_all(&mut self, stream: &mut TcpStream, data: &[u8]) -> io::Result<()> {
        match self.tls.as_mut() {
            None => stream.write_all(data).await,
            Some(session) => {
                let mut out = Vec::with_capacity(data.len() + 64);
                session
                    .encrypt(data, &mut out)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                stream.write_all(&out).await
            }
        }
    }

    /// The session for the viewer's connection, and plaintext read ahead of the request's end.
    pub fn finish(self) -> (Option<Box<TlsSession>>, Vec<u8>) {
        (self.tls, self.plain)
    }
}
