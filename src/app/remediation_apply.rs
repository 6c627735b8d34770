//! `App`'s side of remediation (an `impl App` block; its state, `remediation::Remediations`,
//! is a field of `App`): once per tick every rule reads its groups' telemetry windows
//! and the pure [`Engine`] decides; a decision is applied here. Firing pushes the rule's
//! player configuration to the group (a `config` message for stream `"*"`, cast once), sets
//! the group's `cdn`, records an event and pushes it to every broadcaster; a revert (on
//! recovery or by the API) undoes each of those and is an event too.
//!
//! The group's `cdn` points its members' next session playlists at that CDN resource
//! (`session_ops`, issue 13).

use serde_json::{json, Value};
use shards::proto::GroupId;
use shards::telemetry::Metric;

use super::remediation::{
    Action, Decision, InForce, Observation, RuleError, RuleSpec, EVENTS_KEPT,
};
use super::{messages, App, GroupKind};

impl App {
    /// Adds a rule (from the config file or the API).
    pub fn add_rule(&mut self, rule: RuleSpec) -> Result<(), RuleError> {
        rule.check(&self.config.telemetry_windows_s)?;
        self.remediation.engine.add(rule)
    }

    /// Adds a rule made through the API: kept in the store, so it comes back after a restart.
    pub fn add_api_rule(&mut self, rule: RuleSpec) -> Result<(), RuleError> {
        let record = serde_json::to_value(&rule);
        let key = format!("rule/{}", rule.id);
        self.add_rule(rule)?;
        if let (Some(store), Ok(record)) = (&self.store, record) {
            store.put_setting(&key, &record);
        }
        Ok(())
    }

    /// Brings back the rules the API added before a restart (after the config file's, which
    /// win a clash of ids: the stored one is dropped with a warning).
    pub fn restore_api_rules(&mut self, settings: &[(String, Value)]) {
        for (key, record) in settings {
            let Some(id) = key.strip_prefix("rule/") else {
                continue;
            };
            let added = serde_json::from_value::<RuleSpec>(record.clone())
                .map_err(|e| RuleError::Invalid(e.to_string()))
                .and_then(|rule| self.add_rule(rule));
            if let Err(e) = added {
                tracing::warn!(rule = id, error = %e, "a stored rule is not loaded");
                if let Some(store) = &self.store {
                    store.delete_setting(key);
                }
            }
        }
    }

    /// Removes a rule (from the config file or the API) until the next start; one the API
    /// added is removed from the store too.
    pub fn remove_rule(&mut self, id: &str) -> Result<RuleSpec, RuleError> {
        let rule = self.remediation.engine.remove(id)?;
        if let Some(store) = &self.store {
            store.delete_setting(&format!("rule/{id}"));
        }
        Ok(rule)
    }

    pub fn rules(&self) -> impl Iterator<Item = &RuleSpec> {
        self.remediation.engine.rules()
    }

    /// Every event, oldest first, and the ids of those in force.
    pub fn remediation_events(&self) -> (Vec<Value>, Vec<String>) {
        let in_force = self
            .remediation
            .in_force
            .values()
            .map(|f| f.event.clone())
            .collect();
        (self.remediation.events.iter().cloned().collect(), in_force)
    }

    /// The CDN resource a rule set for the group, if any.
    pub fn group_cdn(&self, group: GroupId) -> Option<&str> {
        self.remediation.cdn.get(&group).map(String::as_str)
    }

    /// (rules fired, actions reverted) so far.
    pub fn remediation_counts(&self) -> (u64, u64) {
        (self.remediation.applied, self.remediation.reverted)
    }

    /// Remediations in force now.
    pub fn remediations_in_force(&self) -> usize {
        self.remediation.in_force.len()
    }

    /// Runs every rule on its groups' windows at `now_ms` (from the ticker, once a second or
    /// faster): O(rules x groups x window seconds), nothing per viewer.
    pub fn evaluate_remediations(&mut self, now_ms: u64) {
        let rules: Vec<RuleSpec> = self.remediation.engine.rules().cloned().collect();
        for rule in rules {
            let groups: Vec<(String, GroupId)> = self
                .groups
                .iter()
                .filter(|g| {
                    if rule.groups.is_empty() {
                        g.kind == GroupKind::Custom
                    } else {
                        rule.groups.contains(&g.key)
                    }
                })
                .map(|g| (g.key.clone(), g.id))
                .collect();
            let window_ms = rule.window_s * 1000;
            for (key, id) in groups {
                let agg = self.telemetry.window(id, window_ms, now_ms);
                let o = Observation {
                    reports: agg.reports,
                    viewers: super::telemetry::viewers(&agg),
                    failures_per_min: super::telemetry::failures_per_min(&agg, window_ms),
                    buffering_ratio: agg.series(Metric::BufferingRatio).mean(),
                };
                match self.remediation.engine.step(&rule.id, &key, &o, now_ms) {
                    Some(Decision::Fire) => self.fire(&rule, &key, id, &o, now_ms),
                    Some(Decision::Revert) => self.revert(&rule.id, &key, "recovery", now_ms),
                    None => {}
                }
            }
        }
    }

    fn fire(&mut self, rule: &RuleSpec, key: &str, id: GroupId, o: &Observation, now_ms: u64) {
        let event = format!("r{}", self.remediation.next_event + 1);
        self.remediation.next_event += 1;
        let mut force = InForce {
            event: event.clone(),
            group: id,
            previous_cdn: None,
            config_keys: Vec::new(),
        };
        for action in &rule.actions {
            match action {
                Action::PlayerConfig { config } => {
                    let overlay = self.remediation.overlays.entry(id).or_default();
                    for (k, v) in config {
                        overlay.insert(k.clone(), v.clone());
                        force.config_keys.push(k.clone());
                    }
                }
                Action::Cdn { cdn } => {
                    let before = self.remediation.cdn.insert(id, cdn.clone());
                    force.previous_cdn.get_or_insert(before);
                }
                Action::Notify => {}
            }
        }
        if !force.config_keys.is_empty() {
            self.push_overlay(id);
        }
        if force.previous_cdn.is_some() {
            self.refresh_session_cdns();
        }
        tracing::warn!(rule = rule.id, group = key, event, "remediation applied");
        self.remediation
            .in_force
            .insert((rule.id.clone(), key.to_owned()), force);
        self.remediation.applied += 1;
        self.record(json!({
            "id": event,
            "rule": rule.id,
            "group": key,
            "action": "applied",
            "cause": "condition",
            "at_ms": now_ms,
            "window": o.to_json(),
            "actions": rule.actions,
        }));
    }

    /// Undoes (rule, group)'s actions; `cause` is `recovery` or `api`.
    fn revert(&mut self, rule: &str, key: &str, cause: &str, now_ms: u64) {
        let Some(force) = self
            .remediation
            .in_force
            .remove(&(rule.to_owned(), key.to_owned()))
        else {
            return;
        };
        let id = force.group;
        if !force.config_keys.is_empty() {
            if let Some(overlay) = self.remediation.overlays.get_mut(&id) {
                for k in &force.config_keys {
                    overlay.remove(k);
                }
            }
            self.push_overlay(id);
            self.remediation.overlays.retain(|_, o| !o.is_empty());
        }
        let cdn_changed = force.previous_cdn.is_some();
        match force.previous_cdn {
            Some(Some(before)) => {
                self.remediation.cdn.insert(id, before);
            }
            Some(None) => {
                self.remediation.cdn.remove(&id);
            }
            None => {}
        }
        if cdn_changed {
            self.refresh_session_cdns();
        }
        tracing::warn!(
            rule,
            group = key,
            event = force.event,
            cause,
            "remediation reverted"
        );
        self.remediation.reverted += 1;
        let event = format!("r{}", self.remediation.next_event + 1);
        self.remediation.next_event += 1;
        self.record(json!({
            "id": event,
            "rule": rule,
            "group": key,
            "action": "reverted",
            "cause": cause,
            "reverts": force.event,
            "at_ms": now_ms,
        }));
    }

    /// The API reverts the event `event` (one in force).
    pub fn revert_remediation(&mut self, event: &str, now_ms: u64) -> Result<(), RuleError> {
        let found = self
            .remediation
            .in_force
            .iter()
            .find(|(_, f)| f.event == event)
            .map(|((r, g), _)| (r.clone(), g.clone()));
        let Some((rule, group)) = found else {
            return Err(RuleError::NotFound(event.to_owned()));
        };
        self.revert(&rule, &group, "api", now_ms);
        self.remediation.engine.reverted(&rule, &group, now_ms);
        Ok(())
    }

    /// Keeps an event and pushes it to every broadcaster.
    fn record(&mut self, event: Value) {
        let frame = messages::remediation(event.clone());
        self.broadcasters.retain(|(_, sink)| !sink.is_closed());
        for (_, sink) in &self.broadcasters {
            sink.push(frame.clone());
        }
        self.remediation.events.push_back(event);
        while self.remediation.events.len() > EVENTS_KEPT {
            self.remediation.events.pop_front();
        }
    }

    /// Casts the group's overlay (`config` for stream `"*"`; `{}` once lifted).
    fn push_overlay(&mut self, id: GroupId) {
        let config = self.overlay_of(id);
        let frame = messages::config("*", self.player.next_version(), config);
        self.cast_frame(id, frame);
    }

    fn overlay_of(&self, id: GroupId) -> Value {
        Value::Object(
            self.remediation
                .overlays
                .get(&id)
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// The overlays a viewer with `profile` gets when it starts watching.
    pub(super) fn overlays_for(&self, profile: &shards::profile::Profile) -> Vec<Value> {
        self.remediation
            .overlays
            .keys()
            .filter(|id| {
                self.groups
                    .get(**id)
                    .is_some_and(|g| g.predicate.matches(profile))
            })
            .map(|id| self.overlay_of(*id))
            .collect()
    }
}
