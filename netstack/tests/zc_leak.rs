//! monoio-style leak test for the zero-copy sender (`netstack::sys::uring`): sends left in
//! flight by a connection dropped mid-send, and a send given up half way (the caller stops,
//! as a cancelled future does), leak no buffer (the `Arc` strong count is back to 1) and no
//! descriptor (`/proc/self/fd` counts the same before and after). The tests of this binary
//! run one at a time, so no other test opens descriptors meanwhile.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use netstack::sys::uring::ZcSender;

/// Held by every test here: descriptor counts are only meaningful one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Sends `data` until the socket refuses more; returns the bytes the kernel took.
fn fill(zc: &mut ZcSender, s: &TcpStream, data: &Arc<[u8]>) -> usize {
    let mut off = 0;
    while off < data.len() {
        match zc.send(s.as_raw_fd(), data, off) {
            Ok(0) => break,
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("send: {e}"),
        }
    }
    off
}

#[test]
fn dropped_connections_and_abandoned_sends_leak_no_buffer_and_no_descriptor() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = open_fds();
    let data: Arc<[u8]> = vec![7u8; 8 * 1024 * 1024].into();
    {
        let mut zc = match ZcSender::new() {
            Ok(zc) => zc,
            Err(e) => {
                eprintln!("zero-copy sender unavailable here ({e}): nothing to leak");
                return;
            }
        };
        // A connection dropped mid-send: the peer never reads, then both ends close.
        let (a, b) = pair();
        let sent = fill(&mut zc, &a, &data);
        assert!(
            sent > 0 && sent < data.len(),
            "loopback buffers hold part of 8 MiB"
        );
        assert!(
            Arc::strong_count(&data) > 1,
            "the kernel may still read the buffer"
        );
        drop((a, b));

        // A send abandoned half way on a live connection (the caller's future dropped).
        let (c, d) = pair();
        let sent = fill(&mut zc, &c, &data);
        assert!(sent < data.len());
        drop((c, d));
        // Dropping the sender reaps the notifications, then closes the ring.
    }
    assert_eq!(Arc::strong_count(&data), 1, "no buffer leaked");
    assert_eq!(open_fds(), before, "no descriptor leaked");
}

#[test]
fn a_live_sender_releases_buffers_as_notifications_arrive() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Ok(mut zc) = ZcSender::new() else {
        return;
    };
    let data: Arc<[u8]> = vec![1u8; 64 * 1024].into();
    let (a, b) = pair();
    let sent = fill(&mut zc, &a, &data);
    assert_eq!(sent, data.len(), "64 KiB fits an idle loopback socket");
    drop((a, b));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while zc.in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "notifications never came"
        );
        zc.reap();
        std::thread::yield_now();
    }
    assert_eq!(Arc::strong_count(&data), 1);
}
