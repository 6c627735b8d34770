//! The quality loop end to end (issue 14, seed 000 FIG. 3): seeded viewers in three countries
//! come through a trusted loopback balancer (PROXY protocol: loopback clients all come from
//! 127.0.0.0/8, the header gives them public addresses), are geolocated with a database
//! written at test time, grouped by country and report telemetry. One country's viewers
//! report failures: the rule fires once, for that group only; the group gets the player
//! configuration and the other CDN; broadcasters and the event list learn it; it reverts
//! after recovery. Another country's failures come in short bursts (a flapping signal):
//! nothing fires for it. A second test reverts a remediation through the API.
//!
//! Time: the windows follow the server's wall clock (`--telemetry-windows-s 2,60`), so the
//! test keeps sending reports in rounds until what it waits for happens, every wait bounded;
//! the pacing of the rounds decides nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const COUNTRIES: [(&str, u8); 3] = [("HU", 11), ("DE", 22), ("BR", 33)];
const PER_COUNTRY: usize = 4;
/// Long enough for holds of a few seconds and the recovery.
const LOOP_WAIT: Duration = Duration::from_secs(40);

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

struct Viewer {
    ws: Ws,
    country: &'static str,
    /// Its viewing session of the stream (from the `endpoint`).
    session: String,
}

struct Sim {
    server: Server,
    db: std::path::PathBuf,
    rng: Rng,
    viewers: Vec<Viewer>,
    /// Group key per country.
    groups: Vec<(String, &'static str)>,
    rounds: u64,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.db);
        let _ = std::fs::remove_file(self.db.with_extension("toml"));
    }
}

impl Sim {
    fn start(seed: u64) -> Sim {
        let db =
            std::env::temp_dir().join(format!("ovation-loop-{}-{seed}.mmdb", std::process::id()));
        let entries = [
            ("11.0.0.0/8", "HU"),
            ("22.0.0.0/8", "DE"),
            ("33.0.0.0/8", "BR"),
        ];
        std::fs::write(&db, mmdb::country_db(&entries)).unwrap();
        // The CDN a rule may move a group's sessions to.
        let config = db.with_extension("toml");
        std::fs::write(
            &config,
            "[[cdns]]\nname = \"backup\"\nbase = \"http://127.0.0.1:9/backup\"\nweight = 0\n",
        )
        .unwrap();
        let server = Server::start(&[
            "--config",
            config.to_str().unwrap(),
            "--shards",
            "2",
            "--cpu-steering",
            "false",
            "--trusted-proxies",
            "127.0.0.0/8",
            "--geo-db",
            db.to_str().unwrap(),
            "--telemetry-windows-s",
            "2,60",
        ]);
        let mut sim = Sim {
            server,
            db,
            rng: Rng(seed),
            viewers: Vec::new(),
            groups: Vec::new(),
            rounds: 0,
        };
        sim.populate();
        sim
    }

    fn group(&self, country: &str) -> String {
        self.groups
            .iter()
            .find(|(_, c)| *c == country)
            .unwrap()
            .0
            .clone()
    }

    /// A stream, one group per country, and viewers of the stream in each country.
    fn populate(&mut self) {
        let (status, _) = self
            .server
            .api("POST", "/api/streams", Some(&json!({"id": "live"})));
        assert_eq!(status, 201);
        for (cc, _) in COUNTRIES {
            let (status, g) = self.server.api(
                "POST",
                "/api/groups",
                Some(&json!({"name": format!("viewers in {cc}"), "match": {"country": [cc]}})),
            );
            assert_eq!(status, 201, "{g}");
            self.groups.push((g["id"].as_str().unwrap().to_owned(), cc));
        }
        for (cc, octet) in COUNTRIES {
            for _ in 0..PER_COUNTRY {
                let r = &mut self.rng;
                let header = format!(
                    "PROXY TCP4 {octet}.{}.{}.{} 127.0.0.1 {} 8080\r\n",
                    r.below(256),
                    r.below(256),
                    1 + r.below(254),
                    1024 + r.below(60_000)
                );
                let (mut ws, _) = connect_proxied(&self.server, "", header.as_bytes());
                send_json(&mut ws, &json!({"type": "watch", "stream": "live"}));
                let endpoint = next_of_type(&mut ws, "endpoint");
                let session = endpoint["session"].as_str().unwrap().to_owned();
                self.viewers.push(Viewer {
                    ws,
                    country: cc,
                    session,
                });
            }
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, gs) = self.server.api("GET", "/api/groups", None);
            let sizes: Vec<u64> = gs["groups"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| g["kind"] == "custom")
                .map(|g| g["size"].as_u64().unwrap())
                .collect();
            if sizes == vec![PER_COUNTRY as u64; 3] {
                break;
            }
            assert!(Instant::now() < deadline, "groups never filled: {gs}");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The shards know the groups too: a marker cast after them reached every viewer.
        self.marker();
    }

    /// Casts a marker to everyone; returns, per viewer, the messages that came before it.
    fn marker(&mut self) -> Vec<Vec<Value>> {
        let (status, _) = self.server.api(
            "POST",
            "/api/groups/global/messages",
            Some(&json!({"payload": "marker"})),
        );
        assert_eq!(status, 202);
        self.viewers
            .iter_mut()
            .map(|v| {
                let mut before = Vec::new();
                loop {
                    let m = next_json(&mut v.ws);
                    if m["type"] == "message" && m["payload"] == "marker" {
                        return before;
                    }
                    before.push(m);
                }
            })
            .collect()
    }

    fn broadcaster(&self) -> Ws {
        let url = format!(
            "ws://{}/v1/broadcaster?stream=live&token={TOKEN}",
            self.server.api
        );
        let (mut ws, _) = tungstenite::connect(url).expect("broadcaster connects");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(WAIT)).unwrap();
        }
        assert_eq!(next_json(&mut ws)["role"], "broadcaster");
        ws
    }

    /// The CDN each viewer's session is assigned now, by country.
    fn session_cdns(&self) -> Vec<(&'static str, String)> {
        self.viewers
            .iter()
            .map(|v| {
                let (status, s) =
                    self.server
                        .api("GET", &format!("/api/sessions/{}", v.session), None);
                assert_eq!(status, 200, "{s}");
                (v.country, s["cdn"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }

    fn events(&self) -> Vec<Value> {
        let (status, body) = self.server.api("GET", "/api/remediations", None);
        assert_eq!(status, 200);
        body["events"].as_array().unwrap().clone()
    }

    /// One round of reports from every viewer; those `failing` report failures.
    fn round(&mut self, failing: fn(&str, u64) -> bool) {
        let n = self.rounds;
        self.rounds += 1;
        for v in self.viewers.iter_mut() {
            let failures = if failing(v.country, n) { 2 } else { 0 };
            let rtt = 20 + self.rng.below(80);
            let report = json!({"type": "telemetry", "failures": failures, "rtt_ms": rtt,
                                "bitrate_kbps": 2500, "buffering_ratio": 0.0});
            send_json(&mut v.ws, &report);
        }
    }

    /// Rounds every 200 ms until `done` holds for the event list (bounded), or, with
    /// `rounds`, exactly that many rounds; returns the event list.
    fn run(
        &mut self,
        failing: fn(&str, u64) -> bool,
        what: &str,
        rounds: Option<u64>,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + LOOP_WAIT;
        let mut n = 0;
        loop {
            self.round(failing);
            n += 1;
            let list = self.events();
            if rounds.map_or(done(&list), |r| n >= r) {
                return list;
            }
            assert!(Instant::now() < deadline, "never {what}: {list:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// HU fails steadily; DE fails one round in fifteen (every 3 s, a burst shorter than any
/// hold even once the 2 s window smooths it); BR is healthy.
fn hu_fails(country: &str, n: u64) -> bool {
    country == "HU" || (country == "DE" && n % 15 == 0)
}

/// Recovery: only DE's bursts go on.
fn recovered(country: &str, n: u64) -> bool {
    country == "DE" && n % 15 == 0
}

/// The rule: at least every viewer of a country reporting (`min_viewers`, the alias of
/// `min_reports`: distinct viewers, however often each reports).
fn rule(id: &str, groups: &[String]) -> Value {
    json!({
        "id": id, "groups": groups, "window_s": 2, "min_viewers": PER_COUNTRY,
        "failures_per_min_above": 30, "hold_s": 3, "clear_fraction": 0.5, "cooldown_s": 600,
        "actions": [{"type": "player_config", "config": {"max_bitrate_kbps": 1500}},
                    {"type": "cdn", "cdn": "backup"}, {"type": "notify"}]
    })
}

#[test]
fn one_country_fails_the_rule_fires_once_and_reverts_after_recovery() {
    let mut sim = Sim::start(0x000f_1a3d);
    let (hu, de) = (sim.group("HU"), sim.group("DE"));
    let mut caster = sim.broadcaster();
    // Every custom group: the three countries.
    let (status, body) = sim
        .server
        .api("POST", "/api/rules", Some(&rule("failing-country", &[])));
    assert_eq!(status, 201, "{body}");

    let list = sim.run(hu_fails, "fired", None, |l| !l.is_empty());
    assert_eq!(list.len(), 1, "{list:?}");
    let applied = list[0].clone();
    assert_eq!(applied["action"], "applied");
    assert_eq!(applied["group"], hu.as_str());
    assert_eq!(applied["cause"], "condition");
    assert!(applied["window"]["failures_per_min"].as_f64().unwrap() > 30.0);
    assert_eq!(applied["window"]["viewers"], PER_COUNTRY, "{applied}");
    assert!(applied["window"]["reports"].as_u64().unwrap() > PER_COUNTRY as u64);
    // The group's CDN resource: its members' sessions (and so their next playlists, as
    // tests/sessions.rs shows) point at the backup CDN; everyone else's stay on ovation.
    let (_, g) = sim.server.api("GET", &format!("/api/groups/{hu}"), None);
    assert_eq!(g["cdn"], "backup");
    for (country, cdn) in sim.session_cdns() {
        let want = if country == "HU" { "backup" } else { "ovation" };
        assert_eq!(cdn, want, "a viewer in {country}");
    }
    let (_, g) = sim.server.api("GET", &format!("/api/groups/{de}"), None);
    assert_eq!(g["cdn"], Value::Null);
    // The group's members, and only they, got the player configuration.
    let before = sim.marker();
    for (v, got) in sim.viewers.iter().zip(&before) {
        let configs: Vec<&Value> = got.iter().filter(|m| m["type"] == "config").collect();
        if v.country == "HU" {
            assert_eq!(configs.len(), 1, "{got:?}");
            assert_eq!(configs[0]["stream"], "*");
            assert_eq!(configs[0]["config"], json!({"max_bitrate_kbps": 1500}));
        } else {
            assert!(configs.is_empty(), "{} got {configs:?}", v.country);
        }
    }
    let pushed = next_of_type(&mut caster, "remediation");
    assert_eq!(pushed["event"], applied);
    let (_, r) = sim.server.api("GET", "/api/remediations", None);
    assert_eq!(r["in_force"], json!([applied["id"]]));

    // Still failing for 5 s more: no second firing, for HU or anyone.
    let list = sim.run(hu_fails, "", Some(25), |_| false);
    assert_eq!(list.len(), 1, "fires once: {list:?}");

    // Recovery: held, then reverted, and the members' configuration lifted.
    let list = sim.run(recovered, "reverted", None, |l| l.len() > 1);
    assert_eq!(list.len(), 2, "{list:?}");
    let reverted = &list[1];
    assert_eq!(reverted["action"], "reverted");
    assert_eq!(reverted["cause"], "recovery");
    assert_eq!(reverted["reverts"], applied["id"]);
    assert_eq!(reverted["group"], hu.as_str());
    let (_, g) = sim.server.api("GET", &format!("/api/groups/{hu}"), None);
    assert_eq!(g["cdn"], Value::Null);
    for (country, cdn) in sim.session_cdns() {
        assert_eq!(cdn, "ovation", "a viewer in {country}, after the revert");
    }
    let before = sim.marker();
    for (v, got) in sim.viewers.iter().zip(&before) {
        let configs: Vec<&Value> = got.iter().filter(|m| m["type"] == "config").collect();
        if v.country == "HU" {
            assert_eq!(configs.len(), 1, "{got:?}");
            assert_eq!(configs[0]["config"], json!({}), "the overlay is lifted");
        } else {
            assert!(configs.is_empty());
        }
    }
    assert_eq!(next_of_type(&mut caster, "remediation")["event"], *reverted);
    // DE's bursts went on the whole time and never fired anything.
    let list = sim.run(recovered, "", Some(20), |_| false);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|e| e["group"] == hu.as_str()));
}

#[test]
fn a_remediation_is_reverted_by_the_api() {
    let mut sim = Sim::start(0x00a9_1000);
    let br = sim.group("BR");
    let (status, _) = sim.server.api(
        "POST",
        "/api/rules",
        Some(&rule("br-only", std::slice::from_ref(&br))),
    );
    assert_eq!(status, 201);
    fn br_fails(country: &str, _: u64) -> bool {
        country == "BR"
    }
    let list = sim.run(br_fails, "fired", None, |l| !l.is_empty());
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["group"], br.as_str());
    let (status, body) = sim
        .server
        .api("POST", &format!("/api/remediations/{id}/revert"), None);
    assert_eq!(status, 200, "{body}");
    let list = sim.events();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[1]["cause"].as_str(), list[1]["reverts"].as_str()),
        (Some("api"), Some(id.as_str()))
    );
    let (_, g) = sim.server.api("GET", &format!("/api/groups/{br}"), None);
    assert_eq!(g["cdn"], Value::Null);
    let (status, _) = sim
        .server
        .api("POST", &format!("/api/remediations/{id}/revert"), None);
    assert_eq!(status, 404, "not in force any more");
    // Still failing, but the rule rests (cool-down): no new firing.
    let list = sim.run(br_fails, "", Some(25), |_| false);
    assert_eq!(list.len(), 2, "{list:?}");
    // Rules are listed and deleted.
    let (_, rules) = sim.server.api("GET", "/api/rules", None);
    assert_eq!(rules["rules"][0]["id"], "br-only");
    let (status, _) = sim.server.api("DELETE", "/api/rules/br-only", None);
    assert_eq!(status, 200);
    let (status, e) = sim.server.api(
        "POST",
        "/api/rules",
        Some(&json!({"id": "x", "actions": []})),
    );
    assert_eq!(status, 400, "{e}");
}
