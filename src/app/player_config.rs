//! Player configuration (FIG. 3, configuration management 308): per stream, a retained
//! configuration object (title, logo, bitrate hint, operator fields) and the schedule of
//! upcoming broadcasts, which together make the `config` message a viewer gets on `watch`
//! and whenever either changes.
//!
//! Owns: the configurations, the schedule, the version counter. Must not touch: groups and
//! shard queues (the caller casts the frames it builds), streams (the caller checks the stream
//! exists and passes titles in), the store.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

/// Upcoming broadcasts listed in a configuration.
pub const MAX_UPCOMING: usize = 10;

/// What the operator set for a stream: the keys of the `config` object except `upcoming`.
pub type Settings = Map<String, Value>;

/// Configurations and the schedule.
#[derive(Debug, Default)]
pub struct PlayerConfigs {
    by_stream: HashMap<String, Settings>,
    /// Scheduled starts (Unix ms) of streams registered with one.
    schedule: BTreeMap<String, u64>,
    /// Grows with every change; carried by every `config` message.
    version: u64,
}

impl PlayerConfigs {
    /// Replaces `stream`'s settings; returns the new version.
    pub fn set(&mut self, stream: &str, settings: Settings) -> u64 {
        self.by_stream.insert(stream.to_owned(), settings);
        self.bump()
    }

    /// Changes one setting of `stream` (`None` removes it), keeping the others; returns the
    /// new version. Remediation uses it for `max_bitrate_kbps`.
    pub fn set_key(&mut self, stream: &str, key: &str, value: Option<Value>) -> u64 {
        let settings = self.by_stream.entry(stream.to_owned()).or_default();
        match value {
            Some(v) => settings.insert(key.to_owned(), v),
            None => settings.remove(key),
        };
        self.bump()
    }

    /// Records a stream's scheduled start; returns the new version.
    pub fn schedule(&mut self, stream: &str, start_ms: u64) -> u64 {
        self.schedule.insert(stream.to_owned(), start_ms);
        self.bump()
    }

    /// A new version for a message that changes no stream's settings (remediation overlays).
    pub fn next_version(&mut self) -> u64 {
        self.bump()
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn scheduled(&self, stream: &str) -> Option<u64> {
        self.schedule.get(stream).copied()
    }

    /// Whether a viewer of `stream` has anything to be told at `now_ms`.
    pub fn has_any(&self, stream: &str, now_ms: u64) -> bool {
        self.by_stream.contains_key(stream) || self.schedule.values().any(|&s| s >= now_ms)
    }

    /// The `config` object of `stream` at `now_ms`: its settings plus `upcoming`, the
    /// scheduled starts still ahead, soonest first. `title` names a stream by id.
    pub fn config(
        &self,
        stream: &str,
        now_ms: u64,
        title: impl Fn(&str) -> Option<String>,
    ) -> Value {
        let mut config = self.by_stream.get(stream).cloned().unwrap_or_default();
        let mut upcoming: Vec<(u64, &str)> = self
            .schedule
            .iter()
            .filter(|(_, &start)| start >= now_ms)
            .map(|(id, &start)| (start, id.as_str()))
            .collect();
        upcoming.sort_unstable();
        let upcoming: Vec<Value> = upcoming
            .into_iter()
            .take(MAX_UPCOMING)
            .map(|(start, id)| json!({"stream": id, "title": title(id), "scheduled_ms": start}))
            .collect();
        config.insert("upcoming".into(), Value::Array(upcoming));
        Value::Object(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_merges_settings_and_the_schedule_ahead() {
        let mut c = PlayerConfigs::default();
        assert!(!c.has_any("main", 0));
        let mut s = Settings::new();
        s.insert("title".into(), json!("Main stage"));
        assert_eq!(c.set("main", s), 1);
        assert_eq!(c.schedule("finals", 5_000), 2);
        assert_eq!(c.schedule("semis", 3_000), 3);
        assert_eq!(c.schedule("past", 500), 4);
        let title = |id: &str| (id == "finals").then(|| "The finals".to_owned());
        let v = c.config("main", 1_000, title);
        assert_eq!(v["title"], "Main stage");
        let up: Vec<&str> = v["upcoming"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["stream"].as_str().unwrap())
            .collect();
        assert_eq!(up, ["semis", "finals"], "soonest first, the past left out");
        assert_eq!(v["upcoming"][1]["title"], "The finals");
        assert!(
            c.has_any("backstage", 1_000),
            "the schedule is for everyone"
        );
        assert!(!c.has_any("backstage", 6_000));
        assert_eq!(c.set_key("main", "max_bitrate_kbps", Some(json!(1500))), 5);
        assert_eq!(c.config("main", 0, |_| None)["max_bitrate_kbps"], 1500);
        c.set_key("main", "max_bitrate_kbps", None);
        let v = c.config("main", 0, |_| None);
        assert!(v.get("max_bitrate_kbps").is_none());
        assert_eq!(v["title"], "Main stage", "other settings kept");
        assert_eq!(c.version(), 6);
    }
}
