//! TLS for the operator API port: netstack's sans-IO [`TlsSession`] behind `AsyncRead` and
//! `AsyncWrite`, so the API's connection task and the broadcaster session run unchanged over
//! it. The handshake runs inside the first reads (the API always reads a request first).
//!
//! Writes are accepted whole once earlier ciphertext is out: at most one write's records wait
//! in `out`, so memory stays bounded by the largest response.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use netstack::tls::TlsSession;

pub struct TlsStream {
    inner: TcpStream,
    session: Box<TlsSession>,
    /// Plaintext decrypted and not yet read, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Ciphertext not yet written, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    peer_closed: bool,
    /// close_notify is queued (sent once).
    closing: bool,
}

/// A connection the API serves: plain TCP or TLS.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Half-closes the write side (after a TLS close_notify), so the client reads the last
    /// response and then EOF.
    fn shutdown_write(&mut self) -> impl std::future::Future<Output = io::Result<()>>;
}

impl Transport for TcpStream {
    async fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
            .await
            .map_err(Into::into)
    }
}

impl Transport for TlsStream {
    async fn shutdown_write(&mut self) -> io::Result<()> {
        self.queue_close_notify();
        futures_lite::AsyncWriteExt::flush(self).await?;
        self.inner
            .shutdown(std::net::Shutdown::Write)
            .await
            .map_err(Into::into)
    }
}

fn invalid(e: netstack::tls::TlsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    pub fn new(inner: TcpStream, session: TlsSession) -> TlsStream {
        TlsStream {
            inner,
            session: Box::new(session),
            plain: Vec::new(),
            plain_at: 0,
            out: Vec::new(),
            out_at: 0,
            peer_closed: false,
            closing: false,
        }
    }

    fn queue_close_notify(&mut self) {
        if !self.closing && !self.session.is_handshaking() {
            self.closing = true;
            let _ = self.session.close_notify(&mut self.out);
        }
    }

    /// Writes pending ciphertext; `Ready(Ok)` once none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        self.out.clear();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            // Handshake messages and alerts go out before we wait for more input.
            ready!(this.poll_drain(cx))?;
            if this.plain_at < this.plain.len() {
                let n = buf.len().min(this.plain.len() - this.plain_at);
                buf[..n].copy_from_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plain.len() {
                    this.plain.clear();
                    this.plain_at = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(0));
            }
            let mut cipher = [0u8; 4096];
            let n = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut cipher))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            let received = this
                .session
                .receive(&cipher[..n], &mut this.plain, &mut this.out);
            match received {
                Ok(r) => this.peer_closed |= r.peer_closed,
                Err(e) => {
                    // Try to get the alert out; the connection is over either way.
                    let _ = this.poll_drain(cx);
                    return Poll::Ready(Err(invalid(e)));
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.session.encrypt(data, &mut this.out).map_err(invalid)?;
        // Accepted: the records wait in `out` if the socket is full now.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.queue_close_notify();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}
