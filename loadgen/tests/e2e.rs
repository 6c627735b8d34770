//! End-to-end runs of the coordinator and workers against the in-test fake server: counts,
//! profiles, source addresses, the poll storm, error classification and the hard stop.
//! Every wait is bounded; nothing asserts on timing.

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use clap::Parser;

use ovation_loadgen::cli::{Cli, Command, RunArgs};
use ovation_loadgen::coordinator;
use ovation_loadgen::plan::{Behaviour, BehaviourMix};
use ovation_loadgen::profile::{Profile, CLIENTS};
use ovation_loadgen::report::Report;
use support::fake_server::{FakeServer, Faults};

/// Outer bound for any single run in these tests.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn args(server: &FakeServer, extra: &[&str]) -> RunArgs {
    let url = format!("ws://{}/v1/viewer", server.ws_addr);
    let api = format!("http://{}", server.api_addr);
    let mut argv: Vec<String> = vec![
        "loadgen".into(),
        "run".into(),
        "--url".into(),
        url,
        "--api".into(),
        api,
        "--api-token".into(),
        "sekret".into(),
        "--duration-max".into(),
        "30".into(),
        "--drain-timeout".into(),
        "10".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    match Cli::try_parse_from(argv).expect("arguments parse").command {
        Command::Run(r) => *r,
        Command::Worker | Command::Hls(_) => unreachable!(),
    }
}

async fn run(a: &RunArgs) -> Report {
    let plan = a.validate().expect("arguments validate");
    tokio::time::timeout(RUN_LIMIT, coordinator::run(&plan))
        .await
        .expect("run ends within its bound")
        .expect("run succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_poll_storm_in_process() {
    let server = FakeServer::start("sekret", Faults::default()).await;
    let n = 40u64;
    let a = args(
        &server,
        &[
            "--in-process",
            "--connections",
            "40",
            "--processes",
            "2",
            "--rate",
            "4000",
            "--source-ips",
            "127.0.0.2-127.0.0.5",
            "--behaviour",
            "idle:1,watch:1,vote:1,telemetry:1",
            "--streams",
            "s1,s2,s3",
            "--publish-count",
            "5",
            "--publish-interval-ms",
            "5",
            "--poll",
            "--poll-choices",
            "3",
            "--seed",
            "7",
        ],
    );
    let r = run(&a).await;

    assert_eq!(r.connections_attempted, n);
    assert_eq!(r.connections_established, n);
    assert_eq!(r.connect_failures, 0);
    assert_eq!(r.handshake_us.count, n);
    assert!(r.errors.is_empty(), "errors: {:?}", r.errors);
    assert!(
        r.unexpected_closes.is_empty(),
        "closes: {:?}",
        r.unexpected_closes
    );

    // Group-cast: every viewer got every message, each timed against its payload.
    assert_eq!(r.published, 5);
    assert_eq!(r.expected_deliveries, Some(5 * n));
    assert_eq!(r.delivered, 5 * n);
    assert_eq!(r.latency_us.count, 5 * n);

    // Poll storm: one voter in four, all votes acknowledged and in the final total.
    let voters = n / 4;
    assert_eq!(r.poll_id.as_deref(), Some("p1"));
    assert_eq!(r.polls_received, voters);
    assert_eq!(r.votes_sent, voters);
    assert_eq!(r.votes_acked, voters);
    assert_eq!(r.vote_ack_us.count, voters);
    assert_eq!(r.finals_received, voters);
    assert_eq!(r.final_total, Some(voters));
    assert_eq!(r.final_total_matches_acked, Some(true));
    assert_eq!(r.api_poll_total, Some(voters));
    assert_eq!(r.final_counts.as_ref().map(|c| c.len()), Some(3));
    assert!(r.last_vote_to_final_ms.is_some() && r.close_to_final_ms.is_some());
    assert_eq!(r.closed_by_loadgen, n);

    let st = server.state();
    assert_eq!(st.api_unauthorized, 0);
    assert_eq!(st.close_frames, n, "every viewer closed cleanly");
    // Sources: each of the four addresses, and only those.
    let expected_ips: BTreeSet<IpAddr> = (2..=5)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d)))
        .collect();
    assert_eq!(st.peer_ips, expected_ips);
    // Profiles: what the server saw is what the seed says.
    let mix = BehaviourMix::parse("idle:1,watch:1,vote:1,telemetry:1").unwrap();
    let profiles: Vec<Profile> = (0..n).map(|i| Profile::for_viewer(7, i, 3, &mix)).collect();
    let mut want_ua: Vec<&str> = profiles.iter().map(|p| p.user_agent()).collect();
    let mut got_ua: Vec<&str> = st.user_agents.iter().map(String::as_str).collect();
    want_ua.sort();
    got_ua.sort();
    assert_eq!(got_ua, want_ua);
    assert!(st
        .user_agents
        .iter()
        .all(|ua| CLIENTS.iter().any(|c| c.user_agent == ua)));
    assert!(st
        .queries
        .iter()
        .all(|q| q.starts_with("stream=") && q.contains("&region=")));
    let apps = profiles.iter().filter(|p| p.hello().is_some()).count() as u64;
    assert_eq!(st.hellos, apps);
    assert_eq!(r.hello_sent, apps);
    // Watchers watch their stream; voters watch the poll stream.
    let watchers = profiles
        .iter()
        .filter(|p| p.behaviour == Behaviour::Watch)
        .count() as u64;
    assert_eq!(st.watches.get("loadgen-poll"), Some(&voters));
    let profile_watches: u64 = st
        .watches
        .iter()
        .filter(|(s, _)| s.as_str() != "loadgen-poll")
        .map(|(_, c)| c)
        .sum();
    assert_eq!(profile_watches, watchers);
    assert_eq!(r.endpoints, watchers + voters);
    assert_eq!(st.telemetry, r.telemetry_sent);
    assert_eq!(st.votes, voters);
    assert_eq!(st.streams, ["s1", "s2", "s3", "loadgen-poll"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_closed_connections_are_classified() {
    let faults = Faults {
        reject_every: Some(3),
        close_every: Some(4),
    };
    let server = FakeServer::start("sekret", faults).await;
    let a = args(
        &server,
        &[
            "--in-process",
            "--connections",
            "12",
            "--rate",
            "5000",
            "--source-ips",
            "none",
        ],
    );
    let r = run(&a).await;
    // Ids 0, 3, 6, 9 are refused with 503; of the rest, 4 and 8 are closed with 1011.
    assert_eq!(r.connections_attempted, 12);
    assert_eq!(r.connections_established, 8);
    assert_eq!(r.connect_failures, 4);
    assert_eq!(r.errors.get("handshake_status_503"), Some(&4));
    assert_eq!(r.unexpected_closes.get("1011"), Some(&2));
    assert_eq!(r.closed_by_loadgen, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_end_the_connect_phase() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = FakeServer::start("sekret", Faults::default()).await;
    let mut a = args(
        &server,
        &["--in-process", "--connections", "5", "--rate", "5000"],
    );
    a.url = format!("ws://127.0.0.1:{port}/v1/viewer");
    let r = run(&a).await;
    assert_eq!(r.connections_established, 0);
    assert_eq!(r.connect_failures, 5);
    assert_eq!(r.errors.get("connect_refused"), Some(&5));
    assert!(!r.cut_short);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_max_ends_a_long_hold() {
    let server = FakeServer::start("sekret", Faults::default()).await;
    let mut a = args(
        &server,
        &[
            "--in-process",
            "--connections",
            "6",
            "--rate",
            "5000",
            "--hold",
            "3600",
        ],
    );
    a.duration_max = Duration::from_millis(1500);
    let r = run(&a).await;
    eprintln!("{}", r.render());
    assert!(r.cut_short);
    assert_eq!(r.connections_established, 6);
    assert!(r.duration_s < 3600.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_reported_not_fatal() {
    let server = FakeServer::start("other", Faults::default()).await;
    let a = args(
        &server,
        &[
            "--in-process",
            "--connections",
            "3",
            "--publish-count",
            "2",
            "--publish-interval-ms",
            "1",
        ],
    );
    let r = run(&a).await;
    assert_eq!(r.connections_established, 3);
    assert_eq!(r.published, 0);
    assert_eq!(r.errors.get("api_publish_status_401"), Some(&2));
    assert_eq!(r.delivered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_two_worker_processes_writes_json() {
    let server = FakeServer::start("sekret", Faults::default()).await;
    let dir = std::env::temp_dir().join(format!("loadgen-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--url",
            &format!("ws://{}/v1/viewer", server.ws_addr),
            "--api",
            &format!("http://{}", server.api_addr),
            "--api-token",
            "sekret",
            "--connections",
            "30",
            "--processes",
            "2",
            "--rate",
            "3000/s",
            "--source-ips",
            "127.0.0.2-127.0.0.9",
            "--publish-count",
            "3",
            "--publish-interval-ms",
            "5",
            "--duration-max",
            "30",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("spawn loadgen");
    let status = tokio::time::timeout(RUN_LIMIT, child.wait())
        .await
        .expect("loadgen ends within its bound")
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let r: Report = serde_json::from_str(&text).expect("report parses with the schema");
    assert_eq!(r.processes, 2);
    assert_eq!(r.connections_established, 30);
    assert_eq!(r.expected_deliveries, Some(90));
    assert_eq!(r.delivered, 90);
    assert_eq!(r.latency_us.count, 90);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(server.state().peer_ips.len(), 8);
}
