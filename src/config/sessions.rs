//! The viewing-session settings that need more than a number: the CDN resources segment
//! URIs may point at (`[[cdns]]`) and the signing key, and their validation.

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// One CDN resource: segment URIs of the sessions given it are `{base}/hls/{stream}/...`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdnSpec {
    /// The name groups and the API refer to (`PUT /api/groups/{id}/cdn`).
    pub name: String,
    /// Base URL, e.g. `https://cdn-a.example.com` (no trailing slash needed).
    pub base: String,
    /// Share of new sessions among the CDNs that fit the viewer (0: only when set on a group).
    #[serde(default = "one")]
    pub weight: u32,
    /// Regions this CDN is preferred for (the viewer's `region`); empty: any.
    #[serde(default)]
    pub regions: Vec<String>,
}

fn one() -> u32 {
    1
}

/// The built-in resource: ovation serves the segments itself (relative URIs).
pub const OVATION_CDN: &str = "ovation";

/// Checks the session settings: the key, the durations (`session_url_ttl_s`,
/// `session_end_s`, `session_stall_targets`) and the CDNs.
pub fn validate(key: Option<&str>, durations: [u64; 3], cdns: &[CdnSpec]) -> anyhow::Result<()> {
    if key.is_some_and(|k| k.len() < 32) {
        bail!("session_key must be at least 32 bytes");
    }
    if durations.contains(&0) {
        bail!("session_url_ttl_s, session_end_s and session_stall_targets must be at least 1");
    }
    let mut names = std::collections::HashSet::new();
    for cdn in cdns {
        let name_ok = !cdn.name.is_empty()
            && cdn.name.len() <= 64
            && cdn
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok || cdn.name == OVATION_CDN {
            bail!(
                "cdns: name {:?} must be 1-64 of [A-Za-z0-9_-] and not \"ovation\"",
                cdn.name
            );
        }
        if !names.insert(cdn.name.as_str()) {
            bail!("cdns: name {:?} is used twice", cdn.name);
        }
        let scheme_ok = cdn.base.starts_with("http://") || cdn.base.starts_with("https://");
        if !scheme_ok || cdn.base.len() > 512 || cdn.base.bytes().any(|b| b <= b' ') {
            bail!(
                "cdns: base {:?} must be an http(s) URL without spaces",
                cdn.base
            );
        }
    }
    Ok(())
}
