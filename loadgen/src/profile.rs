//! The viewer profile mix: which client (User-Agent), region (with a matching
//! Accept-Language) and stream each simulated viewer presents.
//!
//! Everything is a pure function of `(seed, global viewer index)`, so a run is reproducible
//! and every worker process derives the same profile for the same viewer without talking.
//! A profile is a handful of table indices (a few bytes per connection); the strings are static.

use crate::plan::{Behaviour, BehaviourMix};

/// SplitMix64: tiny, fast, and good enough to pick profiles and vote choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// An independent stream for one viewer (and one purpose, via `salt`).
    pub fn for_viewer(seed: u64, salt: u64, viewer: u64) -> Self {
        let mut a = Rng(seed ^ salt);
        let mut b = Rng(viewer.wrapping_add(salt));
        Rng(a.next_u64() ^ b.next_u64().rotate_left(17))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// Index into `weights`, chosen in proportion to the weights.
    pub fn weighted(&mut self, weights: impl Iterator<Item = u32> + Clone) -> usize {
        let total: u64 = weights.clone().map(u64::from).sum();
        let mut x = self.below(total);
        let mut last = 0;
        for (i, w) in weights.enumerate() {
            let w = u64::from(w);
            if x < w {
                return i;
            }
            x -= w;
            last = i;
        }
        last
    }
}

const SALT_PROFILE: u64 = 0x7072_6f66_696c_6500; // "profile"
/// Salt for a viewer's behaviour randomness (vote choices, telemetry values).
pub const SALT_BEHAVIOUR: u64 = 0x6265_6861_7669_6f72; // "behavior"

/// A client family: how it identifies itself and whether it sends a `hello` with app data.
#[derive(Debug)]
pub struct Client {
    pub weight: u32,
    pub user_agent: &'static str,
    /// Native apps know their version and hardware and send `hello` after the welcome.
    pub app: Option<AppInfo>,
}

#[derive(Debug)]
pub struct AppInfo {
    pub app_version: &'static str,
    pub hardware: &'static str,
}

const fn browser(weight: u32, user_agent: &'static str) -> Client {
    Client {
        weight,
        user_agent,
        app: None,
    }
}

const fn app(
    weight: u32,
    user_agent: &'static str,
    app_version: &'static str,
    hardware: &'static str,
) -> Client {
    Client {
        weight,
        user_agent,
        app: Some(AppInfo {
            app_version,
            hardware,
        }),
    }
}

/// Weights are rough shares of a live-sports audience: mobile-heavy, Chrome-dominated on the
/// desktop, a sizeable native-app share, a tail of TVs.
pub const CLIENTS: &[Client] = &[
    browser(20, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
    browser(6, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80"),
    browser(4, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    browser(5, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
    browser(5, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15"),
    browser(1, "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0"),
    browser(2, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
    browser(1, "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    browser(13, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1"),
    browser(2, "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
    browser(14, "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"),
    browser(3, "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"),
    app(8, "OvationPlayer/3.2 (iPhone; iOS 17.4)", "3.2.0", "iPhone15,2"),
    app(2, "OvationPlayer/3.2 (iPad; iPadOS 17.4)", "3.2.0", "iPad13,18"),
    app(7, "OvationPlayer/3.2.0 (Linux; Android 14; Pixel 8) okhttp/4.12.0", "3.2.0", "Google Pixel 8"),
    app(3, "OvationPlayer/3.1.4 (Linux; Android 13; SM-A546B) okhttp/4.12.0", "3.1.4", "Samsung SM-A546B"),
    app(1, "OvationPlayer/3.1 (AppleTV; tvOS 17.4)", "3.1.0", "AppleTV14,1"),
    app(1, "OvationPlayer/3.2.0 (Linux; Android 12; BRAVIA 4K VH2) okhttp/4.12.0", "3.2.0", "Sony BRAVIA 4K VH2"),
    browser(1, "Mozilla/5.0 (SMART-TV; LINUX; Tizen 7.0) AppleWebKit/537.36 (KHTML, like Gecko) 94.0.4606.31/7.0 TV Safari/537.36"),
    browser(1, "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/87.0.4280.88 Safari/537.36 WebAppManager"),
];

/// A viewer region with the Accept-Language its browsers typically send.
#[derive(Debug)]
pub struct Region {
    pub weight: u32,
    pub code: &'static str,
    pub accept_language: &'static str,
}

const fn region(weight: u32, code: &'static str, accept_language: &'static str) -> Region {
    Region {
        weight,
        code,
        accept_language,
    }
}

pub const REGIONS: &[Region] = &[
    region(10, "HU", "hu-HU,hu;q=0.9,en-US;q=0.8,en;q=0.7"),
    region(14, "DE", "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"),
    region(24, "US", "en-US,en;q=0.9"),
    region(12, "BR", "pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7"),
    region(15, "IN", "en-IN,en;q=0.9,hi;q=0.8"),
    region(8, "JP", "ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7"),
    region(7, "GB", "en-GB,en;q=0.9"),
    region(5, "FR", "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7"),
    region(5, "MX", "es-MX,es;q=0.9,en;q=0.8"),
];

/// One viewer's profile: indices into the static tables plus its behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub client: u16,
    pub region: u8,
    /// Index into the run's `--streams` list.
    pub stream: u16,
    pub behaviour: Behaviour,
}

impl Profile {
    /// The profile of global viewer `viewer`. Streams are Zipf-weighted (the first stream is
    /// the most popular), as audiences concentrate on the headline event.
    pub fn for_viewer(seed: u64, viewer: u64, streams: usize, mix: &BehaviourMix) -> Profile {
        let mut rng = Rng::for_viewer(seed, SALT_PROFILE, viewer);
        let client = rng.weighted(CLIENTS.iter().map(|c| c.weight)) as u16;
        let region = rng.weighted(REGIONS.iter().map(|r| r.weight)) as u8;
        let streams = streams.clamp(1, usize::from(u16::MAX));
        // Zipf with exponent 1: weight of stream k is proportional to 1/(k+1).
        let zipf = (0..streams).map(|k| (1_000_000 / (k as u32 + 1)).max(1));
        let stream = rng.weighted(zipf) as u16;
        Profile {
            client,
            region,
            stream,
            behaviour: mix.behaviour_for(viewer),
        }
    }

    pub fn client(&self) -> &'static Client {
        &CLIENTS[usize::from(self.client) % CLIENTS.len()]
    }

    pub fn region(&self) -> &'static Region {
        &REGIONS[usize::from(self.region) % REGIONS.len()]
    }

    pub fn user_agent(&self) -> &'static str {
        self.client().user_agent
    }

    pub fn accept_language(&self) -> &'static str {
        self.region().accept_language
    }

    pub fn region_code(&self) -> &'static str {
        self.region().code
    }

    /// The `hello` message for native-app clients; browsers send none.
    pub fn hello(&self) -> Option<String> {
        let app = self.client().app.as_ref()?;
        Some(
            serde_json::json!({
                "type": "hello",
                "app_version": app.app_version,
                "hardware": app.hardware,
                "region": self.region_code(),
            })
            .to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix() -> BehaviourMix {
        BehaviourMix::parse("idle:70,vote:30").unwrap()
    }

    #[test]
    fn profiles_are_deterministic_per_seed_and_viewer() {
        let m = mix();
        let a: Vec<Profile> = (0..500).map(|i| Profile::for_viewer(7, i, 3, &m)).collect();
        let b: Vec<Profile> = (0..500).map(|i| Profile::for_viewer(7, i, 3, &m)).collect();
        assert_eq!(a, b);
        let c: Vec<Profile> = (0..500).map(|i| Profile::for_viewer(8, i, 3, &m)).collect();
        assert_ne!(a, c, "a different seed gives a different mix");
        // A worker computing viewer 321 alone gets what the whole run computed.
        assert_eq!(Profile::for_viewer(7, 321, 3, &m), a[321]);
    }

    #[test]
    fn mix_is_realistic_over_many_viewers() {
        let m = mix();
        let n = 20_000;
        let profiles: Vec<Profile> = (0..n).map(|i| Profile::for_viewer(1, i, 3, &m)).collect();
        // Every client family and region shows up.
        for c in 0..CLIENTS.len() {
            assert!(profiles.iter().any(|p| usize::from(p.client) == c));
        }
        for r in 0..REGIONS.len() {
            assert!(profiles.iter().any(|p| usize::from(p.region) == r));
        }
        // Mobile outnumbers desktop Linux by far; stream 0 is the most watched.
        let per_stream = |s: u16| profiles.iter().filter(|p| p.stream == s).count();
        assert!(per_stream(0) > per_stream(1) && per_stream(1) > per_stream(2));
        assert!(per_stream(2) > 0);
        let apps = profiles.iter().filter(|p| p.hello().is_some()).count();
        assert!(apps > 0 && apps < profiles.len() / 2);
        // Accept-Language matches the region.
        let hu = profiles.iter().find(|p| p.region_code() == "HU").unwrap();
        assert!(hu.accept_language().starts_with("hu-HU"));
    }

    #[test]
    fn hello_carries_app_fields() {
        let m = mix();
        let p = (0..1000)
            .map(|i| Profile::for_viewer(3, i, 1, &m))
            .find(|p| p.client().app.is_some())
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&p.hello().unwrap()).unwrap();
        assert_eq!(v["type"], "hello");
        assert_eq!(v["region"], p.region_code());
        assert!(v["app_version"].as_str().unwrap().starts_with('3'));
    }

    #[test]
    fn rng_bounds() {
        let mut r = Rng::new(42);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
            let x = r.between(5, 9);
            assert!((5..=9).contains(&x));
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.weighted([0u32, 5, 0].into_iter()), 1);
    }
}
