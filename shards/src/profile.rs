//! Viewer profiles and the predicates that put viewers into groups.
//!
//! A profile is created by the shard at the handshake from the initial operational data (peer
//! address, User-Agent, Accept-Language, query parameters) and changes when the viewer sends a
//! `hello` or watches a stream, or when the application core tags it. The shard owns the
//! profile; the application core keeps a mirror fed by full snapshots. Its layout is compact
//! ([`crate::compact`]): 96 bytes, nothing on the heap for an anonymous, untagged viewer.

use std::net::SocketAddr;
use std::num::NonZeroU16;

use serde::{Deserialize, Serialize};

/// The compact parts of a profile.
pub use crate::compact::{Params, Peer, Rare};

/// The interned strings of profile fields (one shared allocation per distinct value).
pub use crate::sym::Sym;
/// A viewer's identity; its layout (shard, id epoch, counter) is the protocol's.
pub use protocol::ViewerId;

macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The lowercase label used in predicates, the API and the wire protocol.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }
    };
}

label_enum!(
    /// Operating system family, from the User-Agent.
    Os { Windows => "windows", Macos => "macos", Linux => "linux", Ios => "ios", Android => "android",
         Chromeos => "chromeos", Tvos => "tvos", Tizen => "tizen", Webos => "webos", Other => "other" }
);
label_enum!(
    /// Browser or client family, from the User-Agent. `App` is a native player app.
    Browser { Chrome => "chrome", Firefox => "firefox", Safari => "safari", Edge => "edge",
              Opera => "opera", Samsung => "samsung", App => "app", Other => "other" }
);
label_enum!(
    /// Device class, from the User-Agent.
    Device { Desktop => "desktop", Mobile => "mobile", Tablet => "tablet", Tv => "tv", Other => "other" }
);

/// The coarse classes ovation groups viewers by. Parsing is a handful of substring checks:
/// it runs once per connection at connect-storm rates, so a regex database would cost more
/// than the classification is worth.
pub fn classify_user_agent(ua: &str) -> (Os, Browser, Device) {
    let has = |needle: &str| ua.contains(needle);
    let os = if has("Windows") {
        Os::Windows
    } else if has("iPhone") || has("iPad") || has("iPod") || has("iOS") {
        Os::Ios
    } else if has("AppleTV") || has("tvOS") {
        Os::Tvos
    } else if has("Android") {
        Os::Android
    } else if has("CrOS") {
        Os::Chromeos
    } else if has("Tizen") {
        Os::Tizen
    } else if has("Web0S") || has("webOS") {
        Os::Webos
    } else if has("Mac OS X") || has("Macintosh") {
        Os::Macos
    } else if has("Linux") || has("X11") {
        Os::Linux
    } else {
        Os::Other
    };
    let browser = if has("Edg/") || has("EdgA/") || has("EdgiOS/") || has("Edge/") {
        Browser::Edge
    } else if has("OPR/") || has("Opera") {
        Browser::Opera
    } else if has("SamsungBrowser/") {
        Browser::Samsung
    } else if has("Firefox/") || has("FxiOS/") {
        Browser::Firefox
    } else if has("Chrome/") || has("CriOS/") || has("Chromium/") {
        Browser::Chrome
    } else if has("Safari/") && has("Version/") {
        Browser::Safari
    } else if !has("Mozilla/") && ua.split('/').next().is_some_and(|p| !p.is_empty()) {
        // "OvationPlayer/3.2 (iPhone; iOS 17.4)", "okhttp/4.12", "AppleCoreMedia/1.0": apps.
        Browser::App
    } else {
        Browser::Other
    };
    let tv = has("SmartTV") || has("SMART-TV") || has("AppleTV") || has("Tizen");
    let device = if tv || os == Os::Tvos || os == Os::Webos {
        Device::Tv
    } else if has("iPad") || has("Tablet") || (os == Os::Android && !has("Mobile")) {
        Device::Tablet
    } else if has("Mobile") || has("iPhone") || has("iPod") || os == Os::Android {
        Device::Mobile
    } else if matches!(os, Os::Windows | Os::Macos | Os::Linux | Os::Chromeos) {
        Device::Desktop
    } else if os == Os::Ios {
        Device::Mobile
    } else {
        Device::Other
    };
    (os, browser, device)
}

/// The primary language of an `Accept-Language` header: the first tag's primary subtag,
/// lowercased (`"hu-HU,hu;q=0.9,en;q=0.8"` gives `"hu"`).
pub fn primary_language(accept_language: &str) -> Option<Sym> {
    let first = accept_language.split(',').next()?.split(';').next()?.trim();
    let primary = first.split(['-', '_']).next()?.trim();
    if primary.is_empty() || primary == "*" || primary.len() > 8 {
        return None;
    }
    if !primary.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    if primary.bytes().all(|b| b.is_ascii_lowercase()) {
        return Some(Sym::new(primary));
    }
    Some(Sym::new(&primary.to_ascii_lowercase()))
}

/// Trims and bounds a peer-supplied string (`None` when blank); shared with the protocol parser.
pub use protocol::field;
/// Longest value kept for any free-form profile field; longer values are cut at a char boundary.
pub use protocol::MAX_FIELD_LEN;
/// Most extra query parameters kept per viewer.
pub const MAX_PARAMS: usize = 16;

/// Normalises a region code: uppercase (`hu` -> `HU`).
pub fn region(value: &str) -> Option<Sym> {
    field(value).map(|r| Sym::new(&r.to_ascii_uppercase()))
}

/// A free-form field ([`field`]), interned.
pub fn sym_field(value: &str) -> Option<Sym> {
    field(value).map(Sym::from)
}

/// Everything the server knows about one viewer. The string fields a crowd shares (stream,
/// region, language, app version, hardware, the list of query parameters) are interned
/// [`Sym`]s: one pointer each, no allocation of their own. Tags and the person are in
/// [`Rare`] (read with [`Profile::tags`] and [`Profile::sub`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    pub viewer: ViewerId,
    pub peer: Peer,
    pub os: Os,
    pub browser: Browser,
    pub device: Device,
    pub language: Option<Sym>,
    pub region: Option<Sym>,
    /// ISO country code from the viewer's address (geolocation), if a database knows it.
    /// Two bytes: it fits in the padding the enums and the peer leave.
    pub country: Option<CountryCode>,
    pub stream: Option<Sym>,
    pub app_version: Option<Sym>,
    pub hardware: Option<Sym>,
    /// Query parameters other than the ones above, in arrival order.
    pub params: Params,
    /// Unix milliseconds of the handshake.
    pub connected_at_ms: u64,
    /// Tags and the person, from a verified token (`sub`); empty for an anonymous, untagged
    /// viewer.
    pub rare: Rare,
}

/// A hash of a whole profile with fixed keys, equal in every thread and process of one build:
/// mirror audits compare these instead of shipping profiles.
pub fn profile_hash(p: &Profile) -> u64 {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)] // SipHasher's fixed keys are the point here.
    let mut h = std::hash::SipHasher::new();
    p.hash(&mut h);
    h.finish()
}

impl Profile {
    /// The profile built from the handshake's initial operational data.
    pub fn from_handshake(
        viewer: ViewerId,
        peer: SocketAddr,
        user_agent: Option<&str>,
        accept_language: Option<&str>,
        query: &[(String, String)],
        connected_at_ms: u64,
    ) -> Profile {
        let (os, browser, device) = classify_user_agent(user_agent.unwrap_or(""));
        let mut profile = Profile {
            viewer,
            peer: Peer::from(peer),
            os,
            browser,
            device,
            language: accept_language.and_then(primary_language),
            region: None,
            country: None,
            stream: None,
            app_version: None,
            hardware: None,
            params: Params::default(),
            connected_at_ms,
            rare: Rare::default(),
        };
        let mut params = Vec::new();
        for (key, value) in query {
            match key.as_str() {
                "region" => profile.region = region(value),
                // The stream a viewer asks for at connect time still goes through `watch`
                // validation at the application core; until then it is only a parameter.
                "lang" | "language" => profile.language = primary_language(value),
                "resume" => {}
                _ if params.len() < MAX_PARAMS => {
                    if let (Some(k), Some(v)) = (field(key), field(value)) {
                        params.push((k, v));
                    }
                }
                _ => {}
            }
        }
        profile.params = Params::new(params.iter().map(|(k, v)| (&**k, &**v)));
        profile
    }

    /// The viewer's tags (from its token and the API), in order.
    pub fn tags(&self) -> &[Box<str>] {
        self.rare.tags()
    }

    /// The person, from a verified token (`sub`); `None` for an anonymous viewer.
    pub fn sub(&self) -> Option<&str> {
        self.rare.sub()
    }

    /// Applies a viewer's `hello`: each string present replaces its field (a blank one clears
    /// it); absent fields are left alone.
    pub fn apply_hello(&mut self, hello: &protocol::Hello<'_>) {
        if let Some(v) = &hello.app_version {
            self.app_version = sym_field(v);
        }
        if let Some(v) = &hello.hardware {
            self.hardware = sym_field(v);
        }
        if let Some(v) = &hello.region {
            self.region = region(v);
        }
        if let Some(v) = &hello.language {
            self.language = primary_language(v);
        }
    }

    /// The value of a single-valued field (`None` when absent, and for `tag`, which has many).
    pub fn value(&self, field: Field) -> Option<&str> {
        match field {
            Field::Os => Some(self.os.as_str()),
            Field::Browser => Some(self.browser.as_str()),
            Field::Device => Some(self.device.as_str()),
            Field::Region => self.region.as_deref(),
            Field::Country => self.country.as_ref().map(CountryCode::as_str),
            Field::Language => self.language.as_deref(),
            Field::Stream => self.stream.as_deref(),
            Field::AppVersion => self.app_version.as_deref(),
            Field::Hardware => self.hardware.as_deref(),
            Field::Tag => None,
        }
    }

    /// The value(s) of a predicate field for this profile.
    fn matches(&self, field: Field, accepted: &[Box<str>]) -> bool {
        let one = |value: Option<&str>| value.is_some_and(|v| accepted.iter().any(|a| **a == *v));
        match field {
            Field::Os => one(Some(self.os.as_str())),
            Field::Browser => one(Some(self.browser.as_str())),
            Field::Device => one(Some(self.device.as_str())),
            Field::Region => one(self.region.as_deref()),
            Field::Country => one(self.country.as_ref().map(CountryCode::as_str)),
            Field::Language => one(self.language.as_deref()),
            Field::Stream => one(self.stream.as_deref()),
            Field::AppVersion => one(self.app_version.as_deref()),
            Field::Hardware => one(self.hardware.as_deref()),
            Field::Tag => self.tags().iter().any(|t| one(Some(t))),
        }
    }
}

/// A two-letter ISO 3166 country code, upper case: its two letters in a `NonZeroU16`, so
/// `Option<CountryCode>` is two bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode(NonZeroU16);

/// Every pair of letters `AA`, `AB`, ... `ZZ`, in order: [`CountryCode::as_str`] borrows its
/// text from here.
static LETTER_PAIRS: [u8; 26 * 26 * 2] = {
    let mut out = [0u8; 26 * 26 * 2];
    let mut i = 0;
    while i < 26 * 26 {
        out[2 * i] = b'A' + (i / 26) as u8;
        out[2 * i + 1] = b'A' + (i % 26) as u8;
        i += 1;
    }
    out
};

impl CountryCode {
    /// Two ASCII letters, in any case.
    pub fn parse(code: &str) -> Option<CountryCode> {
        match code.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                let pair = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
                NonZeroU16::new(u16::from_le_bytes(pair)).map(CountryCode)
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        // Two upper-case ASCII letters by construction.
        let [a, b] = self.0.get().to_le_bytes();
        let i = 2 * (usize::from(a.wrapping_sub(b'A')) * 26 + usize::from(b.wrapping_sub(b'A')));
        LETTER_PAIRS
            .get(i..i + 2)
            .and_then(|p| std::str::from_utf8(p).ok())
            .unwrap_or("")
    }
}

impl std::fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl TryFrom<String> for CountryCode {
    type Error = String;
    fn try_from(s: String) -> Result<CountryCode, String> {
        CountryCode::parse(&s).ok_or_else(|| format!("not a country code: {s:?}"))
    }
}

impl From<CountryCode> for String {
    fn from(c: CountryCode) -> String {
        c.as_str().to_owned()
    }
}

/// A profile field a predicate can test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Os,
    Browser,
    Device,
    Region,
    Country,
    Language,
    Stream,
    AppVersion,
    Hardware,
    Tag,
}

impl Field {
    /// Every field, in the order the API documents them.
    pub const ALL: [Field; 10] = [
        Field::Os,
        Field::Browser,
        Field::Device,
        Field::Region,
        Field::Country,
        Field::Language,
        Field::Stream,
        Field::AppVersion,
        Field::Hardware,
        Field::Tag,
    ];

    /// The name used in API bodies (`tags` is accepted as a synonym of `tag`).
    pub fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "os" => Field::Os,
            "browser" => Field::Browser,
            "device" => Field::Device,
            "region" => Field::Region,
            "country" => Field::Country,
            "language" => Field::Language,
            "stream" => Field::Stream,
            "app_version" => Field::AppVersion,
            "hardware" => Field::Hardware,
            "tag" | "tags" => Field::Tag,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Os => "os",
            Field::Browser => "browser",
            Field::Device => "device",
            Field::Region => "region",
            Field::Country => "country",
            Field::Language => "language",
            Field::Stream => "stream",
            Field::AppVersion => "app_version",
            Field::Hardware => "hardware",
            Field::Tag => "tag",
        }
    }

    /// Brings an accepted value to the form profiles store.
    pub fn normalise(self, value: &str) -> Box<str> {
        match self {
            Field::Os | Field::Browser | Field::Device | Field::Language => {
                value.trim().to_ascii_lowercase().into()
            }
            Field::Region | Field::Country => value.trim().to_ascii_uppercase().into(),
            _ => value.trim().into(),
        }
    }
}

/// "All listed fields match, each with one of its accepted values." The empty predicate
/// matches everyone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predicate {
    pub clauses: Vec<(Field, Vec<Box<str>>)>,
}

impl Predicate {
    pub fn matches(&self, profile: &Profile) -> bool {
        self.clauses
            .iter()
            .all(|(field, accepted)| profile.matches(*field, accepted))
    }

    /// The predicate of a stream's audience group.
    pub fn stream(stream: &str) -> Predicate {
        Predicate {
            clauses: vec![(Field::Stream, vec![stream.into()])],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";
    const EDGE_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0";
    const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    const APP_IOS: &str = "OvationPlayer/3.2 (iPhone; iOS 17.4)";
    const TIZEN_TV: &str = "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36";

    #[test]
    fn classifies_common_user_agents() {
        use Browser as B;
        use Device as D;
        let cases = [
            (CHROME_WIN, Os::Windows, B::Chrome, D::Desktop),
            (SAFARI_IPHONE, Os::Ios, B::Safari, D::Mobile),
            (FIREFOX_LINUX, Os::Linux, B::Firefox, D::Desktop),
            (CHROME_ANDROID, Os::Android, B::Chrome, D::Mobile),
            (EDGE_MAC, Os::Macos, B::Edge, D::Desktop),
            (SAFARI_IPAD, Os::Ios, B::Safari, D::Tablet),
            (APP_IOS, Os::Ios, B::App, D::Mobile),
            (TIZEN_TV, Os::Tizen, B::Samsung, D::Tv),
            ("", Os::Other, B::Other, D::Other),
        ];
        for (ua, os, browser, device) in cases {
            assert_eq!(classify_user_agent(ua), (os, browser, device), "{ua}");
        }
    }

    #[test]
    fn language_and_region_are_normalised() {
        assert_eq!(primary_language("hu-HU,hu;q=0.9").as_deref(), Some("hu"));
        assert_eq!(primary_language("EN_us").as_deref(), Some("en"));
        assert_eq!(primary_language("*"), None);
        assert_eq!(primary_language(""), None);
        assert_eq!(primary_language("x1"), None);
        assert_eq!(region(" hu ").as_deref(), Some("HU"));
        let long = "é".repeat(100);
        assert!(field(&long).unwrap().len() <= MAX_FIELD_LEN);
    }

    fn profile(ua: &str, query: &[(&str, &str)]) -> Profile {
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Profile::from_handshake(
            ViewerId(7),
            "127.0.0.1:5000".parse().unwrap(),
            Some(ua),
            Some("hu-HU"),
            &query,
            0,
        )
    }

    #[test]
    fn handshake_profile_takes_query_parameters() {
        let p = profile(
            SAFARI_IPHONE,
            &[("region", "hu"), ("stream", "s1"), ("team", "red")],
        );
        assert_eq!(p.region.as_deref(), Some("HU"));
        assert_eq!(p.language.as_deref(), Some("hu"));
        assert_eq!(p.stream, None, "stream is set by a validated watch");
        assert_eq!(
            p.params.iter().collect::<Vec<_>>(),
            [("stream", "s1"), ("team", "red")]
        );
    }

    #[test]
    fn a_profile_is_96_bytes_and_anonymous_ones_own_no_heap() {
        assert_eq!(std::mem::size_of::<Profile>(), 96);
        assert_eq!(std::mem::size_of::<Option<CountryCode>>(), 2);
        let a = profile(SAFARI_IPHONE, &[("stream", "s1"), ("region", "hu")]);
        let b = profile(CHROME_WIN, &[("stream", "s1")]);
        // The crowd's parameter list is one shared string; no tags or person: no box.
        assert_eq!(a.params, b.params);
        assert_eq!(a.rare, Rare::default());
        assert_eq!(a.peer.to_string(), "127.0.0.1:5000");
        assert_eq!(profile_hash(&a), profile_hash(&a.clone()));
        assert_ne!(profile_hash(&a), profile_hash(&b));
    }

    #[test]
    fn country_codes_are_two_letters_in_two_bytes() {
        for (raw, code) in [("hu", "HU"), ("AZ", "AZ"), ("zA", "ZA"), ("aa", "AA")] {
            let c = CountryCode::parse(raw).unwrap();
            assert_eq!(c.as_str(), code);
            assert_eq!(String::from(c), code);
            assert_eq!(format!("{c:?}"), format!("{code:?}"));
        }
        for bad in ["", "H", "HUN", "H1", "é"] {
            assert_eq!(CountryCode::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            serde_json::to_string(&CountryCode::parse("de")).unwrap(),
            "\"DE\""
        );
    }

    #[test]
    fn predicates_need_every_field_and_any_value() {
        let mut p = profile(SAFARI_IPHONE, &[("region", "HU")]);
        let pred = |clauses: &[(Field, &[&str])]| Predicate {
            clauses: clauses
                .iter()
                .map(|(f, vs)| (*f, vs.iter().map(|v| f.normalise(v)).collect()))
                .collect(),
        };
        assert!(pred(&[]).matches(&p));
        assert!(pred(&[(Field::Os, &["ios"]), (Field::Region, &["hu", "de"])]).matches(&p));
        assert!(!pred(&[(Field::Os, &["ios"]), (Field::Region, &["de"])]).matches(&p));
        assert!(!pred(&[(Field::Stream, &["s1"])]).matches(&p));
        p.stream = Some("s1".into());
        assert!(Predicate::stream("s1").matches(&p));
        assert!(!pred(&[(Field::Tag, &["vip"])]).matches(&p));
        p.rare.add_tags(["vip".into()]);
        assert!(pred(&[(Field::Tag, &["vip", "x"])]).matches(&p));
    }

    #[test]
    fn viewer_ids_round_trip() {
        let id = ViewerId::compose(3, 0, 42);
        assert_eq!(ViewerId::parse(&id.to_string()), Some(id));
        assert_eq!(ViewerId::parse("xyz"), None);
    }

    #[test]
    fn hello_sets_clears_and_leaves_fields() {
        let mut p = profile("Mozilla/5.0 (X11; Linux x86_64)", &[("region", "de")]);
        let msg = protocol::parse_viewer_message(
            r#"{"type":"hello","app_version":" 3.2 ","hardware":"","language":"hu-HU"}"#,
        )
        .unwrap();
        let protocol::ViewerMessage::Hello(hello) = msg else {
            panic!("a hello")
        };
        p.hardware = Some("old".into());
        p.apply_hello(&hello);
        assert_eq!(p.app_version.as_deref(), Some("3.2"));
        assert_eq!(p.hardware, None, "a blank string clears");
        assert_eq!(p.language.as_deref(), Some("hu"));
        assert_eq!(p.region.as_deref(), Some("DE"), "absent: unchanged");
    }
}
