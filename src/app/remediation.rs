//! Remediation rules (FIG. 3, configuration management 308): a condition on a group's
//! telemetry window, held for a duration, fires the rule's actions for that group; recovery,
//! held as long, reverts them. Pure decision logic: an observation of a window and the time
//! go in, a [`Decision`] comes out. Applying it (casts, the group's CDN, events) is the
//! caller's (`remediation_apply`).
//!
//! Hysteresis: the condition fires above its thresholds but clears only below
//! `clear_fraction` of them, so a signal hovering at a threshold does not toggle; both
//! directions must hold for `hold_s`; after a revert the rule rests for `cooldown_s` before
//! it may fire again for that group. A flapping signal therefore never fires or reverts.
//!
//! Owns: rules, each (rule, group)'s phase, and [`Remediations`] (what is in force, the
//! groups' `cdn` and overlays, the events), which `remediation_apply` changes. Must not
//! touch: groups, telemetry windows, shard queues, the store.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shards::proto::GroupId;

/// Most rules at once.
pub const MAX_RULES: usize = 64;

/// What a rule does when it fires (and undoes when it reverts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Push these player-configuration keys (e.g. `max_bitrate_kbps`) to the group's members.
    PlayerConfig { config: Map<String, Value> },
    /// Point the group at another CDN resource.
    Cdn { cdn: String },
    /// Tell broadcasters and operators (every action does; this one does nothing else).
    Notify,
}

/// A rule as the config file and the API give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    /// Group keys the rule watches; empty: every custom group (`gN`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Which telemetry window it reads (one of `telemetry_windows_s`).
    #[serde(default = "default_window")]
    pub window_s: u64,
    /// Fewer distinct reporting viewers in the window than this: no judgement (and no
    /// firing). A viewer reporting every second counts once. Also accepted as `min_viewers`.
    #[serde(default = "default_min_reports", alias = "min_viewers")]
    pub min_reports: u64,
    /// Fires above this many failures per minute.
    #[serde(default)]
    pub failures_per_min_above: Option<f64>,
    /// Fires above this mean buffering ratio.
    #[serde(default)]
    pub buffering_ratio_above: Option<f64>,
    /// How long the condition (and later the recovery) must hold.
    #[serde(default = "default_hold")]
    pub hold_s: u64,
    /// Recovery is below this fraction of each threshold (hysteresis).
    #[serde(default = "default_clear")]
    pub clear_fraction: f64,
    /// Rest after a revert before the rule may fire again for the group.
    #[serde(default = "default_cooldown")]
    pub cooldown_s: u64,
    pub actions: Vec<Action>,
}

fn default_window() -> u64 {
    10
}
fn default_min_reports() -> u64 {
    5
}
fn default_hold() -> u64 {
    5
}
fn default_clear() -> f64 {
    0.5
}
fn default_cooldown() -> u64 {
    60
}

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule: {0}")]
    Invalid(String),
    #[error("rule \"{0}\" already exists")]
    Exists(String),
    #[error("no rule \"{0}\"")]
    NotFound(String),
    #[error("at most {MAX_RULES} rules")]
    TooMany,
}

impl RuleSpec {
    /// Checks a rule against the windows the server keeps.
    pub fn check(&self, windows_s: &[u64]) -> Result<(), RuleError> {
        let bad = |m: String| Err(RuleError::Invalid(m));
        let id_ok = (1..=64).contains(&self.id.len())
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return bad("\"id\" must be 1-64 letters, digits, '-', '_' or '.'".into());
        }
        if !windows_s.contains(&self.window_s) {
            return bad(format!("\"window_s\" must be one of {windows_s:?}"));
        }
        let thresholds = [self.failures_per_min_above, self.buffering_ratio_above];
        if thresholds.iter().all(Option::is_none) {
            return bad("needs failures_per_min_above or buffering_ratio_above".into());
        }
        if thresholds
            .iter()
            .flatten()
            .any(|t| !t.is_finite() || *t < 0.0)
        {
            return bad("thresholds must be finite and not negative".into());
        }
        if !(0.0..=1.0).contains(&self.clear_fraction) {
            return bad("\"clear_fraction\" must be from 0 to 1".into());
        }
        if self.hold_s > 3600 || self.cooldown_s > 86_400 {
            return bad("\"hold_s\" at most 3600, \"cooldown_s\" at most 86400".into());
        }
        if self.actions.is_empty() || self.actions.len() > 8 || self.groups.len() > 64 {
            return bad("1-8 actions and at most 64 groups".into());
        }
        for a in &self.actions {
            match a {
                Action::Cdn { cdn } if cdn.is_empty() || cdn.len() > 64 => {
                    return bad("a cdn action needs \"cdn\" of 1-64 characters".into())
                }
                Action::PlayerConfig { config }
                    if config.is_empty()
                        || Value::Object(config.clone()).to_string().len() > 4096 =>
                {
                    return bad("a player_config action needs 1-4096 bytes of \"config\"".into())
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One window of a group, as a rule reads it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observation {
    pub reports: u64,
    /// Distinct viewers who reported in the window (what `min_reports` is compared with).
    pub viewers: u64,
    pub failures_per_min: f64,
    /// Mean buffering ratio of the reports that carried one.
    pub buffering_ratio: Option<f64>,
}

impl Observation {
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "reports": self.reports,
            "viewers": self.viewers,
            "failures_per_min": self.failures_per_min,
            "buffering_ratio": self.buffering_ratio,
        })
    }
}

/// Where a (rule, group) pair is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    /// The condition holds since.
    Pending {
        since: u64,
    },
    /// Fired; the actions are in force.
    Active,
    /// In force, and the recovery holds since.
    Recovering {
        since: u64,
    },
    /// Reverted; may not fire before.
    Cooldown {
        until: u64,
    },
}

/// What the caller should do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Fire,
    Revert,
}

/// Rules and the phase of each (rule, group).
#[derive(Debug, Default)]
pub struct Engine {
    rules: BTreeMap<String, RuleSpec>,
    phases: HashMap<(String, String), Phase>,
}

impl Engine {
    pub fn add(&mut self, rule: RuleSpec) -> Result<(), RuleError> {
        if self.rules.contains_key(&rule.id) {
            return Err(RuleError::Exists(rule.id));
        }
        if self.rules.len() >= MAX_RULES {
            return Err(RuleError::TooMany);
        }
        self.rules.insert(rule.id.clone(), rule);
        Ok(())
    }

    /// Removes a rule (actions in force stay until reverted by the API).
    pub fn remove(&mut self, id: &str) -> Result<RuleSpec, RuleError> {
        self.phases.retain(|(r, _), _| r != id);
        self.rules
            .remove(id)
            .ok_or_else(|| RuleError::NotFound(id.to_owned()))
    }

    pub fn rules(&self) -> impl Iterator<Item = &RuleSpec> {
        self.rules.values()
    }

    pub fn rule(&self, id: &str) -> Option<&RuleSpec> {
        self.rules.get(id)
    }

    /// Steps (rule, group) with its window at `now_ms`.
    pub fn step(
        &mut self,
        rule: &str,
        group: &str,
        o: &Observation,
        now_ms: u64,
    ) -> Option<Decision> {
        let spec = self.rules.get(rule)?;
        let hold = spec.hold_s * 1000;
        let (bad, clear) = judge(spec, o);
        let key = (rule.to_owned(), group.to_owned());
        let phase = self.phases.get(&key).copied().unwrap_or(Phase::Idle);
        let phase = match phase {
            Phase::Cooldown { until } if now_ms >= until => Phase::Idle,
            p => p,
        };
        let (next, decision) = match phase {
            Phase::Idle if bad && hold == 0 => (Phase::Active, Some(Decision::Fire)),
            Phase::Idle if bad => (Phase::Pending { since: now_ms }, None),
            Phase::Idle => (Phase::Idle, None),
            Phase::Pending { since } if !bad => {
                let _ = since;
                (Phase::Idle, None)
            }
            Phase::Pending { since } if now_ms.saturating_sub(since) >= hold => {
                (Phase::Active, Some(Decision::Fire))
            }
            p @ Phase::Pending { .. } => (p, None),
            Phase::Active if clear && hold == 0 => {
                (self.rest(spec, now_ms), Some(Decision::Revert))
            }
            Phase::Active if clear => (Phase::Recovering { since: now_ms }, None),
            Phase::Active => (Phase::Active, None),
            Phase::Recovering { .. } if !clear => (Phase::Active, None),
            Phase::Recovering { since } if now_ms.saturating_sub(since) >= hold => {
                (self.rest(spec, now_ms), Some(Decision::Revert))
            }
            p @ Phase::Recovering { .. } => (p, None),
            p @ Phase::Cooldown { .. } => (p, None),
        };
        if next == Phase::Idle {
            self.phases.remove(&key);
        } else {
            self.phases.insert(key, next);
        }
        decision
    }

    fn rest(&self, spec: &RuleSpec, now_ms: u64) -> Phase {
        Phase::Cooldown {
            until: now_ms + spec.cooldown_s * 1000,
        }
    }

    /// The API reverted (rule, group)'s actions: the rule rests as after a recovery.
    pub fn reverted(&mut self, rule: &str, group: &str, now_ms: u64) {
        if let Some(spec) = self.rules.get(rule) {
            let phase = self.rest(spec, now_ms);
            self.phases
                .insert((rule.to_owned(), group.to_owned()), phase);
        }
    }

    /// Whether (rule, group)'s actions are in force.
    pub fn is_active(&self, rule: &str, group: &str) -> bool {
        matches!(
            self.phases.get(&(rule.to_owned(), group.to_owned())),
            Some(Phase::Active | Phase::Recovering { .. })
        )
    }
}

/// (the condition holds, the recovery holds) for one observation.
fn judge(spec: &RuleSpec, o: &Observation) -> (bool, bool) {
    let enough = o.viewers >= spec.min_reports;
    let above = |value: f64, threshold: Option<f64>| threshold.is_some_and(|t| value > t);
    let below = |value: f64, threshold: Option<f64>| {
        threshold.is_none_or(|t| value <= t * spec.clear_fraction)
    };
    let ratio = o.buffering_ratio.unwrap_or(0.0);
    let bad = enough
        && (above(o.failures_per_min, spec.failures_per_min_above)
            || above(ratio, spec.buffering_ratio_above));
    // Too few reporting viewers to judge is no reason to keep a remedy in force... nor to lift it:
    // the audience that was failing may simply have left, so it counts as recovered.
    let clear = !enough
        || (below(o.failures_per_min, spec.failures_per_min_above)
            && below(ratio, spec.buffering_ratio_above));
    (bad, clear)
}

/// Events kept for `GET /api/remediations`, newest last.
pub const EVENTS_KEPT: usize = 1000;

/// What a fired rule changed on a group, to undo it.
#[derive(Debug, Clone)]
pub struct InForce {
    pub event: String,
    pub group: GroupId,
    /// The group's `cdn` before, when the rule set one.
    pub previous_cdn: Option<Option<String>>,
    /// Player-configuration keys the rule pushed.
    pub config_keys: Vec<String>,
}

/// Remediation state of the application core.
#[derive(Debug, Default)]
pub struct Remediations {
    pub engine: Engine,
    pub events: VecDeque<Value>,
    pub next_event: u64,
    /// (rule, group key) -> what it changed.
    pub in_force: BTreeMap<(String, String), InForce>,
    /// Each group's CDN resource, where a rule set one.
    pub cdn: HashMap<GroupId, String>,
    /// Each group's player-configuration overlay (stream `"*"`).
    pub overlays: HashMap<GroupId, Map<String, Value>>,
    /// Rules fired and actions reverted, for `/metrics`.
    pub applied: u64,
    pub reverted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> RuleSpec {
        RuleSpec {
            id: "fail".into(),
            groups: vec![],
            window_s: 10,
            min_reports: 5,
            failures_per_min_above: Some(10.0),
            buffering_ratio_above: Some(0.2),
            hold_s: 3,
            clear_fraction: 0.5,
            cooldown_s: 30,
            actions: vec![Action::Notify],
        }
    }

    fn obs(viewers: u64, fpm: f64) -> Observation {
        Observation {
            reports: viewers,
            viewers,
            failures_per_min: fpm,
            buffering_ratio: None,
        }
    }

    fn engine() -> Engine {
        let mut e = Engine::default();
        e.add(rule()).unwrap();
        e
    }

    #[test]
    fn fires_once_after_the_hold_and_reverts_after_recovery() {
        let mut e = engine();
        let mut fired = vec![];
        for s in 0..10u64 {
            if let Some(d) = e.step("fail", "g1", &obs(20, 30.0), s * 1000) {
                fired.push((s, d));
            }
        }
        assert_eq!(fired, vec![(3, Decision::Fire)], "once, after hold_s");
        assert!(e.is_active("fail", "g1"));
        // 8 per minute is under the threshold but above half of it: still in force.
        for s in 10..20u64 {
            assert_eq!(e.step("fail", "g1", &obs(20, 8.0), s * 1000), None);
        }
        let mut reverted = vec![];
        for s in 20..30u64 {
            if let Some(d) = e.step("fail", "g1", &obs(20, 1.0), s * 1000) {
                reverted.push((s, d));
            }
        }
        assert_eq!(reverted, vec![(23, Decision::Revert)]);
        assert!(!e.is_active("fail", "g1"));
        // Cool-down: bad again at once does not fire before 23 + 30 s.
        for s in 30..53u64 {
            assert_eq!(
                e.step("fail", "g1", &obs(20, 30.0), s * 1000),
                None,
                "at {s}"
            );
        }
        let fired: Vec<u64> = (53..60u64)
            .filter(|s| e.step("fail", "g1", &obs(20, 30.0), s * 1000).is_some())
            .collect();
        assert_eq!(fired, vec![56], "after the cool-down, the hold again");
    }

    #[test]
    fn a_flapping_signal_never_fires_and_never_oscillates() {
        let mut e = engine();
        for s in 0..600u64 {
            let fpm = if (s / 2) % 2 == 0 { 30.0 } else { 0.0 };
            assert_eq!(
                e.step("fail", "g1", &obs(20, fpm), s * 1000),
                None,
                "at {s}"
            );
        }
        // Once in force, a signal flapping around the threshold keeps it in force.
        let mut e = engine();
        let decisions: Vec<Decision> = (0..600u64)
            .filter_map(|s| {
                let fpm = if s < 5 || (s / 2) % 2 == 0 { 30.0 } else { 9.0 };
                e.step("fail", "g1", &obs(20, fpm), s * 1000)
            })
            .collect();
        assert_eq!(decisions, vec![Decision::Fire]);
    }

    #[test]
    fn too_few_reports_never_fire_and_other_groups_are_separate() {
        let mut e = engine();
        for s in 0..20u64 {
            assert_eq!(e.step("fail", "g1", &obs(4, 1000.0), s * 1000), None);
        }
        let b = Observation {
            reports: 9,
            viewers: 9,
            failures_per_min: 0.0,
            buffering_ratio: Some(0.5),
        };
        let fired: Vec<u64> = (0..10u64)
            .filter(|s| e.step("fail", "g2", &b, s * 1000).is_some())
            .collect();
        assert_eq!(fired, vec![3], "buffering alone fires, in g2 only");
        assert!(!e.is_active("fail", "g1"));
        e.reverted("fail", "g2", 10_000);
        assert!(!e.is_active("fail", "g2"));
        assert_eq!(
            e.step("fail", "g2", &b, 11_000),
            None,
            "resting after the API revert"
        );
    }

    #[test]
    fn rules_are_checked() {
        let windows = [10, 60];
        assert_eq!(rule().check(&windows), Ok(()));
        let bad = |f: fn(&mut RuleSpec)| {
            let mut r = rule();
            f(&mut r);
            r.check(&windows).is_err()
        };
        assert!(bad(|r| r.window_s = 30));
        assert!(bad(|r| {
            r.failures_per_min_above = None;
            r.buffering_ratio_above = None;
        }));
        assert!(bad(|r| r.failures_per_min_above = Some(f64::NAN)));
        assert!(bad(|r| r.id = "a b".into()));
        assert!(bad(|r| r.actions.clear()));
        assert!(bad(|r| r.actions = vec![Action::Cdn { cdn: String::new() }]));
        assert!(bad(|r| r.clear_fraction = 1.5));
        let mut e = engine();
        assert_eq!(e.add(rule()), Err(RuleError::Exists("fail".into())));
        assert!(e.remove("fail").is_ok());
        assert_eq!(e.remove("fail"), Err(RuleError::NotFound("fail".into())));
        let parsed: RuleSpec = serde_json::from_value(serde_json::json!({
            "id": "r", "failures_per_min_above": 5,
            "actions": [{"type": "cdn", "cdn": "backup"},
                        {"type": "player_config", "config": {"max_bitrate_kbps": 1500}},
                        {"type": "notify"}]
        }))
        .unwrap();
        assert_eq!(
            (parsed.window_s, parsed.hold_s, parsed.min_reports),
            (10, 5, 5)
        );
        assert!(serde_json::from_value::<RuleSpec>(
            serde_json::json!({"id": "r", "actions": [], "x": 1})
        )
        .is_err());
        let alias: RuleSpec = serde_json::from_value(serde_json::json!({
            "id": "r", "failures_per_min_above": 5, "min_viewers": 12,
            "actions": [{"type": "notify"}]
        }))
        .unwrap();
        assert_eq!(alias.min_reports, 12, "min_viewers is min_reports");
    }
}
