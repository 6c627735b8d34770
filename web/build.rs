//! Gzips the embedded scripts and stylesheet at build time (`OUT_DIR/{name}.gz`), so a browser
//! that accepts gzip downloads the player in about a third of its bytes. Level 9: built once.

use std::io::Write;
use std::path::Path;

/// The assets served compressed (the HTML pages are templated per request and small).
const COMPRESSED: &[&str] = &["hls.min.js", "viewer.js", "console.js", "ovation.css"];

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for name in COMPRESSED {
        let source = Path::new("assets").join(name);
        println!("cargo:rerun-if-changed={}", source.display());
        let bytes = std::fs::read(&source).expect("an embedded asset");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("gzip in memory");
        let compressed = gz.finish().expect("gzip in memory");
        std::fs::write(Path::new(&out).join(format!("{name}.gz")), compressed)
            .expect("write to OUT_DIR");
    }
}
