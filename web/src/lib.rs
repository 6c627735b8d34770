//! ovation's browser pages as static assets embedded in the binary, and their HTTP answers.
//!
//! Two pages, each served where its user can reach it:
//!
//! - the **viewer page**, `/watch/{stream}`, on the viewer port (the shards answer it beside
//!   the WebSocket and HLS, so the page, its control connection and its media share one
//!   origin); it plays the stream with hls.js and shows what the server pushes;
//! - the **broadcaster console**, `/console`, on the operator API address (it calls the API
//!   and the broadcaster socket of its own origin with the token typed into it).
//!
//! Their scripts, stylesheet, logo and the player library are under `/web/` on both. Nothing
//! here is secret: these routes need no token. The files are `web/assets/`, embedded with
//! `include_bytes!`; `hls.min.js` is the exact file of the hls.js version pinned by
//! `web/package-lock.json` (a test checks the copy against `web/node_modules` when present).
//!
//! Pure: [`answer`] turns a method and path into the bytes of an HTTP/1.1 response, or `None`
//! for a path that is not a page's, which the caller routes as before.

/// Where a request arrived: which pages that listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site<'a> {
    /// The viewer port: `/watch/{stream}` and `/web/*`. `viewer_path` is the viewer
    /// WebSocket path (`viewer_path` setting) written into the page.
    Viewer { viewer_path: &'a str },
    /// The operator API: `/console` and `/web/*`. `viewer_port` is the bound viewer port,
    /// written into the console so it links each stream's viewer page.
    Console { viewer_port: u16 },
}

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// The body gzipped at build time (`build.rs`), for the larger files.
    gzip: Option<&'static [u8]>,
}

/// The build-time gzip of an asset.
macro_rules! gz {
    ($name:literal) => {
        Some(include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".gz")))
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every embedded file; `/web/{name}` serves the ones not ending in `.html`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "watch.html",
        content_type: HTML,
        body: include_bytes!("../assets/watch.html"),
        gzip: None,
    },
    Asset {
        name: "console.html",
        content_type: HTML,
        body: include_bytes!("../assets/console.html"),
        gzip: None,
    },
    Asset {
        name: "viewer.js",
        content_type: JS,
        body: include_bytes!("../assets/viewer.js"),
        gzip: gz!("viewer.js"),
    },
    Asset {
        name: "console.js",
        content_type: JS,
        body: include_bytes!("../assets/console.js"),
        gzip: gz!("console.js"),
    },
    Asset {
        name: "ovation.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/ovation.css"),
        gzip: gz!("ovation.css"),
    },
    Asset {
        name: "logo.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/logo.svg"),
        gzip: None,
    },
    Asset {
        name: "hls.min.js",
        content_type: JS,
        body: include_bytes!("../assets/hls.min.js"),
        gzip: gz!("hls.min.js"),
    },
];

/// The placeholder in `watch.html` replaced by the viewer WebSocket path.
const VIEWER_PATH_SLOT: &str = "{{viewer_path}}";
/// The placeholder in `console.html` replaced by the viewer port.
const VIEWER_PORT_SLOT: &str = "{{viewer_port}}";

/// The viewer page may be embedded in an operator's site (no `frame-ancestors`); it loads
/// media and logos from wherever the server's `endpoint` and `config` point, and hls.js runs
/// its transmuxer in a worker made from a blob.
const VIEWER_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' http: https: data:; media-src 'self' blob: http: https:; \
     connect-src 'self' ws: wss: http: https:; worker-src 'self' blob:; base-uri 'none'";
/// The console holds an operator token: no framing, connections to its own origin only.
const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' http: https: data:; connect-src 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Whether the request line at the start of `buf` (once complete) asks the viewer port for a
/// page: a target under `/watch/` or `/web/`. Such a connection is served as HTTP (with HLS),
/// not upgraded.
pub fn is_page_request(buf: &[u8]) -> bool {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let mut parts = buf[..end].split(|&b| b == b' ');
    let _method = parts.next();
    parts
        .next()
        .is_some_and(|t| t.starts_with(b"/watch/") || t.starts_with(b"/web/"))
}

/// What [`answer`] needs of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    pub method: &'a str,
    /// The target up to `?`.
    pub path: &'a str,
    /// `If-None-Match`: a current ETag gets 304.
    pub if_none_match: Option<&'a str>,
    /// `Accept-Encoding`: with `gzip` the larger files come compressed.
    pub accept_encoding: Option<&'a str>,
    pub keep_alive: bool,
}

impl<'a> Ask<'a> {
    /// The fields of a parsed request.
    pub fn of(req: &'a netstack::http::server::Request) -> Ask<'a> {
        Ask {
            method: &req.method,
            path: &req.path,
            if_none_match: req.header_str("if-none-match"),
            accept_encoding: req.header_str("accept-encoding"),
            keep_alive: req.keep_alive,
        }
    }
}

/// The complete HTTP/1.1 response to `ask` on `site`, or `None` when the path is not a page's
/// (the caller goes on routing). GET and HEAD are answered (HEAD without the body); other
/// methods get 405.
pub fn answer(site: Site<'_>, ask: Ask<'_>) -> Option<Vec<u8>> {
    let Ask {
        method,
        path,
        if_none_match,
        accept_encoding,
        keep_alive,
    } = ask;
    let (index, csp) = route(site, path)?;
    let mut out = Vec::new();
    let Some(index) = index else {
        netstack::http::write_response(
            &mut out,
            404,
            keep_alive,
            &[],
            "text/plain; charset=utf-8",
            b"no such page\n",
        );
        return Some(out);
    };
    if method != "GET" && method != "HEAD" {
        netstack::http::write_response(
            &mut out,
            405,
            keep_alive,
            &[("Allow", "GET, HEAD")],
            "text/plain; charset=utf-8",
            b"pages answer GET and HEAD\n",
        );
        return Some(out);
    }
    let asset = &ASSETS[index];
    let body: std::borrow::Cow<'static, [u8]> = match site {
        Site::Viewer { viewer_path } if asset.name == "watch.html" => {
            fill(asset, VIEWER_PATH_SLOT, &escape(viewer_path)).into()
        }
        Site::Console { viewer_port } if asset.name == "console.html" => {
            fill(asset, VIEWER_PORT_SLOT, &viewer_port.to_string()).into()
        }
        _ => asset.body.into(),
    };
    let gzip = asset
        .gzip
        .filter(|_| accept_encoding.is_some_and(accepts_gzip));
    // One ETag per representation: the gzip one differs from the plain one.
    let etag = match gzip {
        Some(_) => format!("\"{:016x}-gz\"", fnv1a(&body)),
        None => format!("\"{:016x}\"", fnv1a(&body)),
    };
    let mut headers = vec![
        ("Cache-Control", "no-cache"),
        ("ETag", etag.as_str()),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Content-Security-Policy", csp),
    ];
    if asset.gzip.is_some() {
        headers.push(("Vary", "Accept-Encoding"));
    }
    if if_none_match.is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag)) {
        netstack::http::write_response(&mut out, 304, keep_alive, &headers, "", b"");
        // 304 carries no body, and no Content-Length describing one.
        strip_content_length(&mut out);
        return Some(out);
    }
    let sent: &[u8] = match gzip {
        Some(compressed) => {
            headers.push(("Content-Encoding", "gzip"));
            compressed
        }
        None => &body,
    };
    netstack::http::write_response(
        &mut out,
        200,
        keep_alive,
        &headers,
        asset.content_type,
        sent,
    );
    if method == "HEAD" {
        out.truncate(out.len() - sent.len());
    }
    Some(out)
}

/// Whether an `Accept-Encoding` value accepts gzip (listed, and not with `q=0`).
fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// Which asset `path` names on `site`: `None` when the path is not a page route; `Some((None,
/// _))` for a page route naming nothing (404).
fn route(site: Site<'_>, path: &str) -> Option<(Option<usize>, &'static str)> {
    let find = |name: &str| ASSETS.iter().position(|a| a.name == name);
    let csp = match site {
        Site::Viewer { .. } => VIEWER_CSP,
        Site::Console { .. } => CONSOLE_CSP,
    };
    if let Some(name) = path.strip_prefix("/web/") {
        let found = find(name).filter(|_| !name.ends_with(".html"));
        return Some((found, csp));
    }
    match site {
        Site::Viewer { .. } => {
            let stream = path.strip_prefix("/watch/")?;
            let stream = stream.strip_suffix('/').unwrap_or(stream);
            Some((
                valid_stream(stream).then(|| find("watch.html")).flatten(),
                csp,
            ))
        }
        Site::Console { .. } => {
            (path == "/console" || path == "/console/").then(|| (find("console.html"), csp))
        }
    }
}

/// A stream id as `POST /api/streams` allows it: 1-64 letters, digits, `-`, `_`, `.`.
fn valid_stream(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `asset` (UTF-8 text) with `slot` replaced by `value`.
fn fill(asset: &Asset, slot: &str, value: &str) -> Vec<u8> {
    String::from_utf8_lossy(asset.body)
        .replace(slot, value)
        .into_bytes()
}

/// `text` escaped for a double-quoted HTML attribute.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Removes the `Content-Length` header line from an encoded head (for a 304).
fn strip_content_length(out: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(out).into_owned();
    let kept: String = text
        .split_inclusive("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("content-length:"))
        .collect();
    *out = kept.into_bytes();
}

/// 64-bit FNV-1a: the ETag of a body (changes whenever the embedded file does).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEWER: Site<'static> = Site::Viewer {
        viewer_path: "/v1/viewer",
    };
    const CONSOLE: Site<'static> = Site::Console { viewer_port: 8080 };

    fn ask<'a>(method: &'a str, path: &'a str, etag: Option<&'a str>, keep: bool) -> Ask<'a> {
        Ask {
            method,
            path,
            if_none_match: etag,
            accept_encoding: None,
            keep_alive: keep,
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
        let head = response.split("\r\n\r\n").next()?;
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[test]
    fn the_viewer_page_carries_the_viewer_path() {
        let r = text(&answer(VIEWER, ask("GET", "/watch/main", None, true)).unwrap());
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert_eq!(header(&r, "content-type"), Some(HTML));
        assert!(r.contains("data-viewer-path=\"/v1/viewer\""), "{r}");
        assert!(!r.contains(VIEWER_PATH_SLOT));
        let custom = Site::Viewer {
            viewer_path: "/ws\"<x>&",
        };
        let r = text(&answer(custom, ask("GET", "/watch/main/", None, false)).unwrap());
        assert!(
            r.contains("data-viewer-path=\"/ws&quot;&lt;x&gt;&amp;\""),
            "{r}"
        );
        assert_eq!(header(&r, "connection"), Some("close"));
    }

    #[test]
    fn each_site_serves_its_own_page_and_the_shared_assets() {
        assert!(answer(VIEWER, ask("GET", "/console", None, true)).is_none());
        assert!(answer(CONSOLE, ask("GET", "/watch/main", None, true)).is_none());
        assert!(answer(VIEWER, ask("GET", "/hls/main/index.m3u8", None, true)).is_none());
        assert!(answer(CONSOLE, ask("GET", "/api/stats", None, true)).is_none());
        let console = text(&answer(CONSOLE, ask("GET", "/console", None, true)).unwrap());
        assert!(console.starts_with("HTTP/1.1 200"));
        assert!(console.contains("data-viewer-port=\"8080\""), "{console}");
        assert!(header(&console, "content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'"));
        for site in [VIEWER, CONSOLE] {
            for (name, kind) in [
                ("viewer.js", JS),
                ("console.js", JS),
                ("hls.min.js", JS),
                ("ovation.css", "text/css; charset=utf-8"),
                ("logo.svg", "image/svg+xml"),
            ] {
                let r =
                    text(&answer(site, ask("GET", &format!("/web/{name}"), None, true)).unwrap());
                assert!(r.starts_with("HTTP/1.1 200"), "{name}: {r:.80}");
                assert_eq!(header(&r, "content-type"), Some(kind));
                assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
            }
        }
    }

    #[test]
    fn unknown_pages_bad_streams_and_other_methods_are_refused() {
        for path in [
            "/web/nothing.js",
            "/web/watch.html",
            "/web/",
            "/watch/",
            "/watch/has space",
            "/watch/a/b",
            "/watch/..%2f",
        ] {
            let r = text(&answer(VIEWER, ask("GET", path, None, true)).unwrap());
            assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
        }
        let long = format!("/watch/{}", "a".repeat(65));
        assert!(text(&answer(VIEWER, ask("GET", &long, None, true)).unwrap()).contains(" 404 "));
        let r = text(&answer(VIEWER, ask("POST", "/watch/main", None, true)).unwrap());
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
    }

    #[test]
    fn head_has_no_body_and_a_current_etag_gets_304() {
        let get = text(&answer(CONSOLE, ask("GET", "/web/console.js", None, true)).unwrap());
        let head = text(&answer(CONSOLE, ask("HEAD", "/web/console.js", None, true)).unwrap());
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        assert_eq!(
            header(&get, "content-length"),
            header(&head, "content-length")
        );
        let etag = header(&get, "etag").unwrap().to_owned();
        let again = answer(CONSOLE, ask("GET", "/web/console.js", Some(&etag), true)).unwrap();
        let again = text(&again);
        assert!(again.starts_with("HTTP/1.1 304"), "{again}");
        assert!(again.ends_with("\r\n\r\n"));
        assert_eq!(header(&again, "content-length"), None);
        let other = format!("\"x\", {etag}");
        let r = text(&answer(CONSOLE, ask("GET", "/web/console.js", Some(&other), true)).unwrap());
        assert!(r.starts_with("HTTP/1.1 304"));
        let stale = answer(CONSOLE, ask("GET", "/web/console.js", Some("\"0\""), true)).unwrap();
        assert!(text(&stale).starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn page_requests_are_recognised_from_the_request_line() {
        assert!(is_page_request(b"GET /watch/main HTTP/1.1\r\n"));
        assert!(is_page_request(
            b"GET /web/viewer.js HTTP/1.1\r\nHost: x\r\n"
        ));
        assert!(
            !is_page_request(b"GET /watch/main HTTP/1.1"),
            "line incomplete"
        );
        assert!(!is_page_request(b"GET /v1/viewer HTTP/1.1\r\n"));
        assert!(!is_page_request(b"GET /webx HTTP/1.1\r\n"));
        assert!(!is_page_request(b"GET /hls/s/index.m3u8 HTTP/1.1\r\n"));
        assert!(!is_page_request(b""));
    }

    #[test]
    fn larger_files_come_gzipped_to_browsers_that_accept_it() {
        use std::io::Read;
        for accept in ["gzip, deflate, br", "br;q=1.0, GZIP;q=0.5", "*"] {
            let gz = answer(
                CONSOLE,
                Ask {
                    accept_encoding: Some(accept),
                    ..ask("GET", "/web/hls.min.js", None, true)
                },
            )
            .unwrap();
            let at = gz.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = text(&gz[..at]);
            assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{accept}");
            assert_eq!(header(&head, "vary"), Some("Accept-Encoding"));
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&gz[at..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, include_bytes!("../assets/hls.min.js"));
            assert!(
                gz.len() * 2 < plain.len(),
                "{} -> {}",
                plain.len(),
                gz.len()
            );
            // The compressed representation has its own ETag.
            let etag = header(&head, "etag").unwrap();
            assert!(etag.ends_with("-gz\""), "{etag}");
        }
        for accept in [None, Some("identity"), Some("gzip;q=0"), Some("br")] {
            let r = answer(
                CONSOLE,
                Ask {
                    accept_encoding: accept,
                    ..ask("GET", "/web/hls.min.js", None, true)
                },
            )
            .unwrap();
            let head = text(&r[..r.windows(4).position(|w| w == b"\r\n\r\n").unwrap()]);
            assert_eq!(header(&head, "content-encoding"), None, "{accept:?}");
        }
    }

    /// Whatever a client puts in a method, path or header, `answer` returns `None` or a
    /// well-formed response, and never panics (deterministic pseudo-random inputs).
    #[test]
    fn arbitrary_requests_get_well_formed_answers() {
        let pieces = [
            "/",
            "watch",
            "web",
            "console",
            "..",
            "%2f",
            "main",
            "hls.min.js",
            "\u{e9}",
            " ",
            "?",
            "#",
            "\"",
            "<",
            "gzip",
            ";q=0",
            ",",
            "*",
            "",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..20_000 {
            let mut text = || {
                let len = next(6);
                (0..len)
                    .map(|_| pieces[next(pieces.len())])
                    .collect::<String>()
            };
            let (method, path, etag, encoding) = (text(), format!("/{}", text()), text(), text());
            let site = if next(2) == 0 { VIEWER } else { CONSOLE };
            let ask = Ask {
                method: &method,
                path: &path,
                if_none_match: Some(&etag),
                accept_encoding: Some(&encoding),
                keep_alive: next(2) == 0,
            };
            if let Some(r) = answer(site, ask) {
                let head_end = r.windows(4).position(|w| w == b"\r\n\r\n");
                assert!(r.starts_with(b"HTTP/1.1 "), "{path:?}");
                assert!(head_end.is_some(), "{path:?}");
            }
        }
    }

    /// The embedded player is byte for byte the file of the hls.js version the lockfile pins
    /// (when `npm ci` has run in web/; under CI it must have).
    #[test]
    fn embedded_hls_js_is_the_pinned_package_file() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let installed = root.join("node_modules/hls.js/dist/hls.min.js");
        let lock = std::fs::read_to_string(root.join("package-lock.json")).expect("lockfile");
        let pinned = std::fs::read_to_string(root.join("package.json")).expect("package.json");
        assert!(
            lock.contains("\"node_modules/hls.js\""),
            "package-lock.json pins hls.js"
        );
        match std::fs::read(&installed) {
            Ok(bytes) => {
                let embedded = include_bytes!("../assets/hls.min.js");
                assert!(
                    bytes == embedded.as_slice(),
                    "web/assets/hls.min.js differs from {}: copy it after changing the pinned \
                     version ({pinned})",
                    installed.display()
                );
            }
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("{}: {e} (CI runs `npm ci` in web/)", installed.display())
            }
            Err(e) => eprintln!(
                "skipped: {}: {e} (run `npm ci` in web/)",
                installed.display()
            ),
        }
    }

    #[test]
    fn every_asset_is_reachable_and_non_empty() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.name);
        }
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }
}
