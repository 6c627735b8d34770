//! systemd's notify protocol, with the test as the service manager: a datagram socket in
//! NOTIFY_SOCKET receives READY=1 once the server listens, WATCHDOG=1 at half of
//! WATCHDOG_USEC, and STOPPING=1 when SIGTERM starts the drain.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Kills the server if the test fails before it exits.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(socket: &UnixDatagram, want: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "no {want} in {seen:?}");
        let n = socket
            .recv(&mut buf)
            .expect("a notification within the wait");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = text.lines().any(|l| l == want);
        seen.push(text);
        if done {
            return seen;
        }
    }
}

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let dir = std::env::temp_dir().join(format!("ovation-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    // systemd names the watched process in WATCHDOG_PID: the shell's pid, which `exec`
    // hands to ovation.
    let child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_ovation"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args([
            "--rtmp-listen",
            "127.0.0.1:0",
            "--api-token",
            TOKEN,
            "--log",
            "error",
        ])
        .args(["--record", "false", "--shutdown-grace-ms", "2000"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "100000")
        .env_remove("OVATION_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ovation");
    let mut child = Killed(child);
    let child = &mut child.0;
    let line = ready_line(child);
    let seen = wait_for(&socket, "READY=1");
    assert!(line.starts_with("ovation ready"), "{line}");
    wait_for(&socket, "WATCHDOG=1");
    wait_for(&socket, "WATCHDOG=1");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let seen_stop = wait_for(&socket, "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!seen.is_empty() && !seen_stop.is_empty());
}
