//! Streams across edges (issue 17), with real servers: three ovation edges joined over a
//! real `nats-server`, a real ffmpeg publishing over RTMP to edge 1 (the origin, which
//! refuses playlists without a viewing session), and viewers, raw HTTP clients and ffprobe
//! on edge 3. Edge 3's playlist lists the origin's segments with the origin's sequence
//! numbers, durations and wall times, byte for byte; each segment is pulled from the origin
//! once per edge however many viewers edge 3 has; a viewer on edge 3 plays its session
//! playlist; a second publisher on edge 3 is refused while the stream is live on edge 1; and
//! when the publisher stops, edge 3's audience gets `ended` and its playlist an ENDLIST.
//!
//! Needs `nats-server` and `ffmpeg`/`ffprobe`: skipped when missing, failed under `CI=true`.

mod common;

use std::collections::BTreeMap;

use common::cluster::{have, Edge, Nats};
use common::hls::{get, target};
use common::media::{ffprobe, wait_for, Publisher, MEDIA_WAIT};
use common::*;
use serde_json::{json, Value};

/// One-second segments (the shortest a keyframe every 25 frames allows) keep the test short.
const SHORT: [&str; 4] = ["--hls-segment-ms", "1000", "--hls-window", "6"];

/// Each segment of a playlist by its URI (query left out): its tag lines (EXTINF,
/// PROGRAM-DATE-TIME, DISCONTINUITY), and the playlist's media sequence.
fn blocks(text: &str) -> (u64, BTreeMap<u64, Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut tags = Vec::new();
    let mut media_sequence = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            media_sequence = n.parse().ok();
        } else if line.starts_with("#EXTINF")
            || line.starts_with("#EXT-X-PROGRAM-DATE-TIME")
            || line == "#EXT-X-DISCONTINUITY"
        {
            tags.push(line.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let uri = line.split('?').next().unwrap();
            let seq: u64 = uri.strip_suffix(".ts").unwrap().parse().unwrap();
            out.insert(seq, std::mem::take(&mut tags));
        }
    }
    (media_sequence.expect("a media sequence"), out)
}

fn stats(edge: &Edge) -> Value {
    let (status, body) = edge.api("GET", "/api/stats", None);
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn a_stream_ingested_on_edge_1_plays_from_edge_3() {
    if !have("nats-server", "nats-server") || !have("ffmpeg", "ffmpeg") {
        return;
    }
    let nats = Nats::start();
    let origin_args: Vec<&str> = SHORT
        .iter()
        .copied()
        .chain(["--hls-require-session", "true"])
        .collect();
    let edges = [
        Edge::start("e1", "127.0.0.1", Some(&nats.url()), &origin_args),
        Edge::start("e2", "127.0.0.2", Some(&nats.url()), &SHORT),
        Edge::start("e3", "127.0.0.3", Some(&nats.url()), &SHORT),
    ];
    for e in &edges {
        e.wait_edges(3);
    }
    let (e1, e2, e3) = (&edges[0], &edges[1], &edges[2]);
    let (status, created) = e1.api("POST", "/api/streams", Some(&json!({"id": "main"})));
    assert_eq!(status, 201, "{created}");
    let key = created["stream_key"].as_str().unwrap().to_owned();
    e3.wait("/api/streams", "the stream on edge 3", |b| {
        b["streams"].as_array().is_some_and(|s| s.len() == 1)
    });

    // A viewer on edge 3 watches before the stream is live.
    let (mut viewer, _) = connect(&e3.url(), None);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = viewer.get_mut() {
        s.set_read_timeout(Some(MEDIA_WAIT)).unwrap();
    }
    send_json(&mut viewer, &json!({"type": "watch", "stream": "main"}));
    assert_eq!(
        next_json(&mut viewer),
        json!({"type": "stream", "stream": "main", "state": "offline"})
    );
    next_of_type(&mut viewer, "endpoint");

    // ffmpeg publishes to edge 1; edge 3's audience hears it is live and gets a session of
    // edge 3.
    let publisher = Publisher::start(e1.rtmp, &key, 9);
    assert_eq!(
        next_json(&mut viewer),
        json!({"type": "stream", "stream": "main", "state": "live"})
    );
    let endpoint = next_of_type(&mut viewer, "endpoint");
    let session_url = endpoint["url"].as_str().unwrap().to_owned();
    assert!(
        session_url.starts_with(&format!(
            "http://{}/hls/main/index.m3u8?session=",
            e3.viewer
        )),
        "{session_url}"
    );
    let listed = e3.wait("/api/streams", "main live on edge 3", |b| {
        b["streams"][0]["state"] == "live"
    });
    assert_eq!(listed["streams"][0]["relayed_from"], "e1", "{listed}");

    // Edge 3 has the stream, though the origin refuses its public playlist (sessions
    // required there).
    let text = wait_for("three segments on edge 3", || {
        let r = get(e3.viewer, "/hls/main/index.m3u8");
        (r.status == 200 && blocks(&r.text()).1.len() >= 3).then(|| r.text())
    });
    assert_eq!(get(e1.viewer, "/hls/main/index.m3u8").status, 403);

    // A second publisher on edge 3 while the stream is live on edge 1 is refused.
    let (ok, _) = Publisher::start(e3.rtmp, &key, 2).wait();
    assert!(!ok, "a second origin was let in");
    assert_eq!(stats(e3)["ingest"]["refused_busy"], 1);

    // Same sequence numbers, durations, wall times and bytes as the origin's window.
    let (status, origin) = {
        let raw = raw_api_call(
            e1.api,
            "GET",
            "/api/relay/main/index.m3u8",
            b"",
            Some(TOKEN),
        );
        let r = common::hls::split_response(&raw);
        (r.status, r.text())
    };
    assert_eq!(status, 200, "{origin}");
    let (_, here) = blocks(&text);
    let (_, there) = blocks(&origin);
    let mut compared = 0;
    for (seq, tags) in &here {
        if let Some(origin_tags) = there.get(seq) {
            assert_eq!(tags, origin_tags, "segment {seq}:\n{text}\n{origin}");
        }
        let mine = get(e3.viewer, &format!("/hls/main/{seq}.ts"));
        let theirs = get(e1.viewer, &format!("/hls/main/{seq}.ts"));
        if theirs.status == 200 {
            assert_eq!(mine.status, 200);
            assert!(mine.body == theirs.body, "segment {seq} differs");
            compared += 1;
        }
    }
    assert!(
        compared >= 2,
        "compared {compared} segments\n{text}\n{origin}"
    );

    // The viewer's session playlist on edge 3 plays (ffprobe reads H.264 and AAC from it),
    // and three more viewers watching on edge 3, each playing its own session playlist,
    // pull nothing more from the origin (checked by the counters at the end).
    let session = get(e3.viewer, &target(&session_url));
    assert_eq!(session.status, 200, "{}", session.head);
    assert!(
        session.text().contains(".ts?session="),
        "{}",
        session.text()
    );
    let probe = ffprobe(&session_url);
    let found = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        found.contains("codec_name=h264") && found.contains("codec_name=aac"),
        "{found}"
    );
    let mut others = Vec::new();
    for _ in 0..3 {
        let (mut ws, _) = connect(&e3.url(), None);
        send_json(&mut ws, &json!({"type": "watch", "stream": "main"}));
        let url = next_of_type(&mut ws, "endpoint")["url"]
            .as_str()
            .unwrap()
            .to_owned();
        others.push((ws, url));
    }
    for _ in 0..2 {
        for (_, url) in &others {
            let r = get(e3.viewer, &target(url));
            assert_eq!(r.status, 200, "{}", r.head);
            for (seq, _) in blocks(&r.text()).1 {
                let path = format!("/hls/main/{seq}.ts?{}", url.split_once('?').unwrap().1);
                assert_eq!(get(e3.viewer, &path).status, 200);
            }
        }
    }

    // How long after the origin cut a segment edge 3 had it (the relay's added delay), for
    // the next two segments the origin cuts.
    let last = |e: &Edge| -> Option<(u64, u64)> {
        let s = e.api("GET", "/api/streams", None).1;
        let l = &s["streams"][0]["last_segment"];
        Some((l["sequence"].as_u64()?, l["completed_ms"].as_u64()?))
    };
    let mut seen = last(e1).map(|(seq, _)| seq);
    let mut delays = Vec::new();
    for _ in 0..2 {
        let (seq, cut_ms) = wait_for("the origin's next segment", || {
            let now = last(e1)?;
            (Some(now.0) != seen).then_some(now)
        });
        seen = Some(seq);
        let relayed_ms = wait_for("the same segment on edge 3", || {
            let (s3, at) = last(e3)?;
            (s3 >= seq).then_some(at)
        });
        delays.push(relayed_ms.saturating_sub(cut_ms));
    }
    eprintln!("relay delay (edge 3 after the origin cut the segment): {delays:?} ms");
    assert!(delays.iter().all(|d| *d < 5_000), "{delays:?}");

    // The publisher stops: edge 3's audience gets `ended`, its playlist an ENDLIST.
    let (ok, err) = publisher.wait();
    assert!(ok, "ffmpeg: {err}");
    assert_eq!(
        next_of_type(&mut viewer, "stream"),
        json!({"type": "stream", "stream": "main", "state": "ended"})
    );
    let ended = get(e3.viewer, "/hls/main/index.m3u8").text();
    assert!(ended.ends_with("#EXT-X-ENDLIST\n"), "{ended}");
    let last_origin = raw_api_call(
        e1.api,
        "GET",
        "/api/relay/main/index.m3u8",
        b"",
        Some(TOKEN),
    );
    let last_origin = common::hls::split_response(&last_origin).text();
    assert_eq!(
        blocks(&ended),
        blocks(&last_origin),
        "edge 3's final window is the origin's"
    );

    // Each segment was pulled once per relaying edge, viewers or not.
    e2.wait("/api/stats", "edge 2's relay to end", |s| {
        s["relay"]["active"] == 0
    });
    let (s1, s2, s3) = (stats(e1), stats(e2), stats(e3));
    let cut = s1["ingest"]["segments"].as_u64().unwrap();
    assert!(cut >= 5, "{s1}");
    for s in [&s2, &s3] {
        assert_eq!(s["relay"]["segments"].as_u64(), Some(cut), "{s}");
        assert_eq!(s["relay"]["missed"], 0, "{s}");
        assert_eq!(
            s["ingest"]["segments"], 0,
            "relayed segments are not cut here: {s}"
        );
    }
    assert_eq!(
        s1["relay"]["served_segments"].as_u64(),
        Some(2 * cut),
        "{s1}"
    );
    assert_eq!(
        s1["relay"]["segments"], 0,
        "the origin relays nothing: {s1}"
    );
    assert_eq!(s3["relay"]["active"], 0);
}

/// An edge that joins while the stream is live learns it (the cluster's hello and the
/// origin's announcements) and relays it; when the origin is killed (kill -9) mid-stream,
/// the relaying edges end the stream for their audience instead of hanging.
#[test]
fn a_late_edge_relays_a_live_stream_and_ends_it_when_the_origin_dies() {
    if !have("nats-server", "nats-server") || !have("ffmpeg", "ffmpeg") {
        return;
    }
    let nats = Nats::start();
    let mut e1 = Edge::start("e1", "127.0.0.1", Some(&nats.url()), &SHORT);
    let e2 = Edge::start("e2", "127.0.0.2", Some(&nats.url()), &SHORT);
    e1.wait_edges(2);
    e2.wait_edges(2);
    let (status, created) = e1.api("POST", "/api/streams", Some(&json!({"id": "late"})));
    assert_eq!(status, 201, "{created}");
    let key = created["stream_key"].as_str().unwrap().to_owned();
    let _publisher = Publisher::start(e1.rtmp, &key, 40);
    wait_for("a segment relayed to edge 2", || {
        (get(e2.viewer, "/hls/late/index.m3u8").status == 200).then_some(())
    });

    let e3 = Edge::start("e3", "127.0.0.3", Some(&nats.url()), &SHORT);
    e3.wait_edges(3);
    let (mut viewer, _) = connect(&e3.url(), None);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = viewer.get_mut() {
        s.set_read_timeout(Some(MEDIA_WAIT)).unwrap();
    }
    e3.wait("/api/streams", "the stream relayed to edge 3", |b| {
        b["streams"][0]["relayed_from"] == "e1"
    });
    // A live stream is answered with its endpoint straight away.
    send_json(&mut viewer, &json!({"type": "watch", "stream": "late"}));
    assert_eq!(next_json(&mut viewer)["type"], "endpoint");
    wait_for("two segments on edge 3", || {
        let r = get(e3.viewer, "/hls/late/index.m3u8");
        (r.status == 200 && blocks(&r.text()).1.len() >= 2).then_some(())
    });

    e1.kill();
    assert_eq!(
        next_of_type(&mut viewer, "stream"),
        json!({"type": "stream", "stream": "late", "state": "ended"})
    );
    let ended = get(e3.viewer, "/hls/late/index.m3u8").text();
    assert!(ended.ends_with("#EXT-X-ENDLIST\n"), "{ended}");
    // Edge 3 took the origin's whole window when it joined; edge 2 pulls as they come.
    for (e, least) in [(&e2, 1), (&e3, 2)] {
        let s = e.wait("/api/stats", "the relay to end", |s| {
            s["relay"]["active"] == 0
        });
        assert!(s["relay"]["failures"].as_u64() >= Some(1), "{s}");
        assert!(s["relay"]["segments"].as_u64() >= Some(least), "{s}");
    }
    // The stream is no longer held by a relay: a publisher may now start it on edge 3.
    let listed = e3.wait("/api/streams", "the stream ended on edge 3", |b| {
        b["streams"][0]["state"] == "ended"
    });
    assert_eq!(
        listed["streams"][0]["relayed_from"],
        Value::Null,
        "{listed}"
    );
}

/// NATS down, then back: a stream that goes live on edge 1 while the bus is down is not
/// known on edge 2 (each edge serves its own), and is relayed by edge 2 once the bus is
/// back (`live` republished on reconnect, listed in announcements); the relay then keeps
/// pulling over HTTP through a second NATS outage.
#[test]
fn a_stream_that_went_live_during_a_nats_outage_is_relayed_when_it_returns() {
    if !have("nats-server", "nats-server") || !have("ffmpeg", "ffmpeg") {
        return;
    }
    let mut nats = Nats::start();
    let url = nats.url();
    let e1 = Edge::start("n1", "127.0.0.6", Some(&url), &SHORT);
    let e2 = Edge::start("n2", "127.0.0.7", Some(&url), &SHORT);
    e1.wait_edges(2);
    e2.wait_edges(2);
    let (status, created) = e1.api("POST", "/api/streams", Some(&json!({"id": "out"})));
    assert_eq!(status, 201, "{created}");
    let key = created["stream_key"].as_str().unwrap().to_owned();
    e2.wait("/api/streams", "the stream on edge 2", |b| {
        b["streams"][0]["id"] == "out"
    });

    nats.kill();
    for e in [&e1, &e2] {
        e.wait("/api/cluster", "the loss", |c| c["connected"] == false);
    }
    let publisher = Publisher::start(e1.rtmp, &key, 12);
    e1.wait("/api/streams", "live on edge 1", |b| {
        b["streams"][0]["last_segment"].is_object()
    });
    let offline = e2.api("GET", "/api/streams", None).1;
    assert_eq!(offline["streams"][0]["state"], "offline", "{offline}");

    nats.restart();
    let relayed = e2.wait("/api/streams", "the relay after the bus came back", |b| {
        b["streams"][0]["relayed_from"] == "n1"
    });
    assert_eq!(relayed["streams"][0]["state"], "live", "{relayed}");
    let first = wait_for("a relayed segment on edge 2", || {
        let r = get(e2.viewer, "/hls/out/index.m3u8");
        (r.status == 200).then(|| *blocks(&r.text()).1.keys().last().unwrap())
    });

    // The bus goes again: the relay carries on over HTTP.
    nats.kill();
    wait_for("newer segments on edge 2 without the bus", || {
        let r = get(e2.viewer, "/hls/out/index.m3u8");
        let last = *blocks(&r.text()).1.keys().last().unwrap();
        (last >= first + 2).then_some(())
    });
    let (ok, err) = publisher.wait();
    assert!(ok, "ffmpeg: {err}");
    wait_for("the ENDLIST on edge 2", || {
        let text = get(e2.viewer, "/hls/out/index.m3u8").text();
        text.ends_with("#EXT-X-ENDLIST\n").then_some(())
    });
    let s = e2.api("GET", "/api/stats", None).1;
    assert_eq!(s["relay"]["missed"], 0, "{s}");
    let origin = e1.api("GET", "/api/stats", None).1;
    assert_eq!(
        s["relay"]["segments"], origin["ingest"]["segments"],
        "every segment cut on the origin, once: {s} {origin}"
    );
}
