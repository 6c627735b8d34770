//! Media test helpers: a real ffmpeg publisher and bounded waits, shared by the media,
//! recording and zero-copy tests.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
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

/// Encodes `secs` one-second MPEG-TS segments (H.264 + AAC, like the publisher) of `source`
/// (an lavfi video source: `testsrc`, `smptebars`, ...) into `dir/name/{n}.ts`: an ad.
pub fn encode_ad(dir: &Path, name: &str, source: &str, secs: u32) -> Vec<Vec<u8>> {
    require_tool("ffmpeg");
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("{source}=size=320x240:rate=25"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=880"])
        .args(["-t", &secs.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-force_key_frames", "expr:gte(t,n_forced*1)", "-c:a", "aac"])
        .args([
            "-f",
            "segment",
            "-segment_time",
            "1",
            "-segment_format",
            "mpegts",
        ])
        .arg(out.join("%d.ts"))
        .stdin(Stdio::null())
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not encode the ad");
    (0..secs)
        .map(|i| std::fs::read(out.join(format!("{i}.ts"))).expect("a segment"))
        .collect()
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

/// The codec names ffprobe reads from `url` (`codec_name=...` lines), as its whole output;
/// bounded by `MEDIA_WAIT` (killed after).
pub fn ffprobe(url: &str) -> Output {
    require_tool("ffprobe");
    let child = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name"])
        .args([
            "-of",
            "default=noprint_wrappers=1",
            "-rw_timeout",
            "10000000",
        ])
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffprobe");
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(MEDIA_WAIT) {
        Ok(out) => out.expect("ffprobe output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("ffprobe did not finish in time");
        }
    }
}
