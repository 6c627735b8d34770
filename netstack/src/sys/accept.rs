//! The accept side of a shard's front door without a runtime in between: one non-blocking
//! `accept4(2)` that hands back the new socket (non-blocking, close-on-exec) with its peer's
//! address, so a caller can drain a listener's backlog in a loop until `WouldBlock` and learn
//! each peer without a `getpeername(2)`.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::SockAddr;

/// Accepts one waiting connection on the listening socket `listener`, which must be
/// non-blocking (see [`super::set_nonblocking`]): `WouldBlock` when the backlog is empty. The
/// new socket is `O_NONBLOCK` and `FD_CLOEXEC`. The address is `None` only for a peer that is
/// not IPv4 or IPv6 (which a TCP listener never has).
pub fn accept_nonblocking(listener: RawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are valid for writes for the whole call and `len` holds the
    // size of `storage`, so the kernel writes at most that many bytes of address. A stale
    // `listener` is an error return.
    let fd = syscall_retry!(unsafe {
        libc::accept4(
            listener,
            storage.as_mut_ptr().cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` is a descriptor the kernel just created for us and nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the storage was zeroed and the kernel filled its first `len` bytes with the
    // peer's address (truncated to the storage, which fits every address family).
    let addr = unsafe { SockAddr::new(storage.assume_init(), len) };
    Ok((socket, addr.as_socket()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn drains_the_backlog_then_would_block() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        super::super::set_nonblocking(l.as_raw_fd()).unwrap();
        assert_eq!(
            accept_nonblocking(l.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let clients: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(l.local_addr().unwrap()).unwrap())
            .collect();
        let mut accepted = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while accepted.len() < clients.len() {
            match accept_nonblocking(l.as_raw_fd()) {
                Ok(a) => accepted.push(a),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "connections never came"
                    );
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
        let mut peers: Vec<SocketAddr> = accepted.iter().map(|(_, a)| a.unwrap()).collect();
        let mut locals: Vec<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        peers.sort();
        locals.sort();
        assert_eq!(peers, locals, "each peer address is its client's");
        // The accepted socket is non-blocking and carries data both ways.
        let (fd, peer) = accepted.pop().unwrap();
        let mut server = TcpStream::from(fd);
        let mut client = clients
            .into_iter()
            .find(|c| Some(c.local_addr().unwrap()) == peer)
            .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            server.read(&mut byte).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        client.write_all(b"x").unwrap();
        server.write_all(b"y").unwrap();
        client.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"y");
    }
}
