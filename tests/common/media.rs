//! Media test helpers: a real ffmpeg publisher and bounded waits, shared by the media,
//! recording and zero-copy tests.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for any wait on a broadcast (publishing and segmenting take seconds).
pub const MEDIA_WAIT: Duration = Duration::from_secs(60);

pub fn require_tool(tool: &str) {
    let found = Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{tool}` is not installed or not on PATH: this test runs real ffmpeg/ffprobe \
         (Debian: apt-get install ffmpeg; CI installs it)"
    );
}

/// An ffmpeg publishing a 320x240 test pattern with a 440 Hz tone for `secs`, in real time.
pub struct Publisher(Child);

impl Publisher {
    pub fn start(rtmp: SocketAddr, key: &str, secs: u32) -> Publisher {
        Publisher::start_with(rtmp, key, secs, &["-c:v", "libx264", "-g", "25"])
    }

    /// With other video codec arguments (Sorenson Spark: `-c:v flv`).
    pub fn start_with(rtmp: SocketAddr, key: &str, secs: u32, video: &[&str]) -> Publisher {
        Publisher::start_url(&format!("rtmp://{rtmp}/live/{key}"), secs, video)
    }

    /// To any publish URL (`rtmps://` included).
    pub fn start_url(url: &str, secs: u32, video: &[&str]) -> Publisher {
        require_tool("ffmpeg");
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440"])
            .args(["-t", &secs.to_string()])
            .args(video)
            .args(["-preset", "ultrafast", "-tune", "zerolatency"])
            .args(["-c:a", "aac", "-f", "flv"])
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ffmpeg");
        Publisher(child)
    }

    /// The ffmpeg process id (to stop or signal it).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits (bounded) for ffmpeg to exit; returns whether it succeeded and its stderr.
    pub fn wait(mut self) -> (bool, String) {
        let deadline = Instant::now() + MEDIA_WAIT;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait ffmpeg") {
                let mut err = String::new();
                if let Some(mut e) = self.0.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (status.success(), err);
            }
            assert!(Instant::now() < deadline, "ffmpeg did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` until it returns `Some` (bounded by `MEDIA_WAIT`).
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + MEDIA_WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
