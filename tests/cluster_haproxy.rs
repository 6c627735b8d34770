//! Three edges behind a real `haproxy` (spawned by the test with a generated configuration
//! on free loopback ports): HAProxy takes each edge's weight from its agent-check answer and
//! spreads viewers by it, and the PROXY protocol v2 gives the edges the viewers' addresses.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{have, Edge, HaProxy};
use common::*;

/// The `weight` column of each server of backend `edges` in `show stat`.
fn weights(h: &HaProxy) -> Vec<(String, u64)> {
    let stat = h.admin("show stat");
    let mut lines = stat.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (px, sv, weight) = (col("pxname"), col("svname"), col("weight"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > weight && f[px] == "edges" && f[sv] != "BACKEND")
        .map(|f| (f[sv].to_owned(), f[weight].parse().unwrap_or(0)))
        .collect()
}

fn haproxy_config(edges: &[&Edge]) -> String {
    let mut servers = String::new();
    for e in edges {
        let agent = e.agent.unwrap();
        servers.push_str(&format!(
            "    server {} {} agent-addr {} agent-port {}\n",
            e.id,
            e.viewer,
            agent.ip(),
            agent.port()
        ));
    }
    format!(
        "global\n    stats socket {{socket}} mode 600 level admin\n    maxconn 4000\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n\
         \x20   timeout server 30s\n    timeout tunnel 1h\n\
         frontend viewers\n    bind {{front}}\n    default_backend edges\n\
         backend edges\n    balance roundrobin\n    source 127.0.0.19\n\
         \x20   default-server send-proxy-v2 agent-check agent-inter 100ms weight 100\n{servers}"
    )
}

#[test]
fn haproxy_spreads_viewers_by_the_agents_weights() {
    if !have("haproxy", "haproxy") {
        return;
    }
    let trust = ["--trusted-proxies", "127.0.0.19"];
    let big = ["--max-connections", "1000"];
    let e1 = Edge::start("h1", "127.0.0.11", None, &[&trust[..], &big[..]].concat());
    let e2 = Edge::start("h2", "127.0.0.12", None, &[&trust[..], &big[..]].concat());
    let e3 = Edge::start(
        "h3",
        "127.0.0.13",
        None,
        &[&trust[..], &["--max-connections", "20"][..]].concat(),
    );
    // Edge 3 is half full with viewers of its own: its agent offers half its weight.
    let _direct: Vec<_> = (0..10).map(|_| connect(&e3.url(), None)).collect();
    let deadline = Instant::now() + WAIT;
    while e3.agent_says() != "up 50% maxconn:20\n" {
        assert!(
            Instant::now() < deadline,
            "edge 3 says {:?}",
            e3.agent_says()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let haproxy = HaProxy::start("127.0.0.10", &haproxy_config(&[&e1, &e2, &e3]));
    let deadline = Instant::now() + WAIT;
    loop {
        let w = weights(&haproxy);
        let of = |id: &str| w.iter().find(|(s, _)| s == id).map(|(_, w)| *w);
        if of("h1") == Some(100) && of("h2") == Some(100) && of("h3") == Some(50) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "weights never followed the agents: {w:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // 40 viewers through HAProxy: edges 1 and 2 get about twice edge 3's share.
    let url = format!("ws://{}/v1/viewer", haproxy.front);
    let mut viewers = Vec::new();
    for _ in 0..40 {
        viewers.push(connect(&url, None));
    }
    let connections = |e: &Edge| -> u64 {
        let (status, s) = e.api("GET", "/api/stats", None);
        assert_eq!(status, 200);
        s["connections"].as_u64().unwrap()
    };
    let (n1, n2, n3) = (connections(&e1), connections(&e2), connections(&e3) - 10);
    assert_eq!(n1 + n2 + n3, 40, "{n1} {n2} {n3}");
    assert!(n3 >= 1, "edge 3 still takes some: {n1} {n2} {n3}");
    assert!(
        n3 < n1 && n3 < n2,
        "edge 3 has half the weight: {n1} {n2} {n3}"
    );

    // The edges see each viewer's own address (PROXY v2), not HAProxy's (127.0.0.19).
    let (_, welcome) = &viewers[0];
    let id = welcome["viewer"].as_str().unwrap();
    let peer = [&e1, &e2, &e3]
        .iter()
        .find_map(
            |e| match e.api("GET", &format!("/api/viewers/{id}"), None) {
                (200, v) => Some(v["peer"].as_str().unwrap().to_owned()),
                _ => None,
            },
        )
        .expect("the viewer is on some edge");
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
}
