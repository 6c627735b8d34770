//! Groups and cast backpressure: the global group, one audience group per stream and per open
//! poll, and the operator's custom predicate groups, each with its size kept exact from the
//! profile mirror; and the count of casts each group has in flight on the shards.
//!
//! Owns: group definitions, keys (`global`, `stream:<id>`, `poll:<id>`, `g<n>`), sizes,
//! casts in flight. Must not touch: shard queues (the caller sends `DefineGroup`, `DropGroup`
//! and `Cast`), the mirror (viewers are passed in), the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shards::profile::{Predicate, Profile};
use shards::proto::GroupId;

use super::mirror::Viewer;

/// What kind of group, which decides whether the API may delete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Global,
    Stream,
    /// The audience of a poll; it lives as long as the poll is open.
    Poll,
    Custom,
}

impl GroupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Global => "global",
            GroupKind::Stream => "stream",
            GroupKind::Poll => "poll",
            GroupKind::Custom => "custom",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: GroupId,
    /// The id the API uses: `global`, `stream:<id>`, `poll:<id>` or `g<n>`.
    pub key: String,
    pub name: String,
    pub kind: GroupKind,
    pub predicate: Arc<Predicate>,
    /// Viewers whose mirrored profile matches: kept exact on every event.
    pub size: usize,
    pub created_ms: u64,
}

/// Why a group operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// No group has this key.
    #[error("no group \"{0}\"")]
    NotFound(String),
    /// Built-in groups (global, stream and poll audiences) cannot be deleted.
    #[error("group \"{0}\" is built in and cannot be deleted")]
    BuiltIn(String),
}

/// The durable form of a custom group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub key: String,
    pub name: String,
    pub predicate: Predicate,
    pub created_ms: u64,
}

#[derive(Debug)]
pub struct Groups {
    groups: BTreeMap<GroupId, Group>,
    keys: HashMap<String, GroupId>,
    next_group: u32,
    next_custom: u64,
    /// Casts sent to each group that some shard has not finished writing.
    in_flight: HashMap<GroupId, usize>,
    /// Appended to custom keys (`-<edge>` in a cluster, so edges never hand out the same key).
    custom_suffix: String,
}

impl Groups {
    /// The global group only.
    pub fn new(now_ms: u64) -> Groups {
        let mut g = Groups {
            groups: BTreeMap::new(),
            keys: HashMap::new(),
            next_group: 1,
            next_custom: 1,
            in_flight: HashMap::new(),
            custom_suffix: String::new(),
        };
        let global = Group {
            id: GroupId::GLOBAL,
            key: "global".into(),
            name: "every connected viewer".into(),
            kind: GroupKind::Global,
            predicate: Arc::new(Predicate::default()),
            size: 0,
            created_ms: now_ms,
        };
        g.keys.insert(global.key.clone(), global.id);
        g.groups.insert(global.id, global);
        g
    }

    /// Defines a group sized from `viewers`; the caller tells the shards.
    pub fn add<'a>(
        &mut self,
        key: String,
        name: String,
        kind: GroupKind,
        predicate: Predicate,
        now_ms: u64,
        viewers: impl Iterator<Item = &'a Viewer>,
    ) -> &Group {
        let id = GroupId(self.next_group);
        self.next_group += 1;
        let predicate = Arc::new(predicate);
        let size = viewers.filter(|v| predicate.matches(&v.profile)).count();
        self.keys.insert(key.clone(), id);
        let group = Group {
            id,
            key,
            name,
            kind,
            predicate,
            size,
            created_ms: now_ms,
        };
        self.groups.entry(id).or_insert(group)
    }

    /// The key the next custom group gets: `g<n>`, or `g<n>-<edge>` in a cluster.
    pub fn next_custom_key(&mut self) -> String {
        let key = format!("g{}{}", self.next_custom, self.custom_suffix);
        self.next_custom += 1;
        key
    }

    /// Makes custom keys unique across the edges of a cluster.
    pub fn set_custom_suffix(&mut self, suffix: &str) {
        self.custom_suffix = suffix.to_owned();
    }

    /// Keeps custom keys restored from the store (or defined by another edge) from being
    /// handed out again.
    pub fn reserve_custom_key(&mut self, key: &str) {
        let digits = key.strip_prefix('g').map(|rest| {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            &rest[..end]
        });
        if let Some(n) = digits.and_then(|n| n.parse::<u64>().ok()) {
            self.next_custom = self.next_custom.max(n.saturating_add(1));
        }
    }

    pub fn get(&self, id: GroupId) -> Option<&Group> {
        self.groups.get(&id)
    }

    pub fn by_key(&self, key: &str) -> Option<&Group> {
        self.keys.get(key).and_then(|id| self.groups.get(id))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Deletes a custom group; the caller tells the shards and the store.
    pub fn delete_custom(&mut self, key: &str) -> Result<GroupId, GroupError> {
        let group = self
            .by_key(key)
            .ok_or_else(|| GroupError::NotFound(key.to_owned()))?;
        if group.kind != GroupKind::Custom {
            return Err(GroupError::BuiltIn(key.to_owned()));
        }
        let id = group.id;
        self.remove(id);
        Ok(id)
    }

    /// Forgets a group of any kind. Casts already sent to it stay in flight until the
    /// shards report them written (a poll's final results are cast just before its audience
    /// group is dropped, and shutdown waits for them).
    pub fn remove(&mut self, id: GroupId) {
        if let Some(g) = self.groups.remove(&id) {
            self.keys.remove(&g.key);
        }
    }

    /// A profile entered (`delta` 1) or left (-1) the mirror.
    pub fn count(&mut self, profile: &Profile, delta: isize) {
        for g in self.groups.values_mut() {
            if g.predicate.matches(profile) {
                g.size = g.size.saturating_add_signed(delta);
            }
        }
    }

    /// A mirrored profile changed.
    pub fn recount(&mut self, old: &Profile, new: &Profile) {
        for g in self.groups.values_mut() {
            match (g.predicate.matches(old), g.predicate.matches(new)) {
                (false, true) => g.size += 1,
                (true, false) => g.size = g.size.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// A cast to `group` went to `shards` shards.
    pub fn cast_sent(&mut self, group: GroupId, shards: usize) {
        *self.in_flight.entry(group).or_default() += shards;
    }

    /// One shard finished writing a cast to `group`.
    pub fn cast_done(&mut self, group: GroupId) {
        if let Some(n) = self.in_flight.get_mut(&group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&group);
            }
        }
    }

    /// Whether a cast to `group` is still being written somewhere.
    pub fn cast_in_flight(&self, group: GroupId) -> bool {
        self.in_flight.contains_key(&group)
    }

    /// Whether any cast is still being written.
    pub fn any_cast_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }
}

/// The JSON form of a predicate, as the API shows it.
pub fn predicate_json(p: &Predicate) -> serde_json::Value {
    use serde_json::{Map, Value};
    let mut map = Map::new();
    for (field, values) in &p.clauses {
        map.insert(
            field.as_str().to_owned(),
            Value::Array(
                values
                    .iter()
                    .map(|v| Value::String(v.to_string()))
                    .collect(),
            ),
        );
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::profile::{Field, Os, ViewerId};

    fn profile(os: Os) -> Profile {
        let mut p = Profile::from_handshake(
            ViewerId(1),
            "127.0.0.1:1".parse().unwrap(),
            None,
            None,
            &[],
            0,
        );
        p.os = os;
        p
    }

    fn ios() -> Predicate {
        Predicate {
            clauses: vec![(Field::Os, vec!["ios".into()])],
        }
    }

    #[test]
    fn sizes_follow_counts_and_changes() {
        let mut g = Groups::new(0);
        let id = g
            .add(
                "g1".into(),
                "ios".into(),
                GroupKind::Custom,
                ios(),
                0,
                [].into_iter(),
            )
            .id;
        g.count(&profile(Os::Ios), 1);
        g.count(&profile(Os::Linux), 1);
        assert_eq!(g.get(id).unwrap().size, 1);
        assert_eq!(g.by_key("global").unwrap().size, 2);
        g.recount(&profile(Os::Linux), &profile(Os::Ios));
        assert_eq!(g.get(id).unwrap().size, 2);
        g.count(&profile(Os::Ios), -1);
        g.count(&profile(Os::Ios), -1);
        g.count(&profile(Os::Ios), -1);
        assert_eq!(g.get(id).unwrap().size, 0, "never below zero");
    }

    #[test]
    fn only_custom_groups_are_deleted() {
        let mut g = Groups::new(0);
        g.add(
            "stream:s".into(),
            "s".into(),
            GroupKind::Stream,
            Predicate::stream("s"),
            0,
            [].into_iter(),
        );
        assert_eq!(
            g.delete_custom("global"),
            Err(GroupError::BuiltIn("global".into()))
        );
        assert_eq!(
            g.delete_custom("stream:s"),
            Err(GroupError::BuiltIn("stream:s".into()))
        );
        assert_eq!(
            g.delete_custom("g9"),
            Err(GroupError::NotFound("g9".into()))
        );
        let key = g.next_custom_key();
        g.add(
            key.clone(),
            "c".into(),
            GroupKind::Custom,
            ios(),
            0,
            [].into_iter(),
        );
        assert!(g.delete_custom(&key).is_ok());
        assert!(g.by_key(&key).is_none());
        g.reserve_custom_key("g41");
        assert_eq!(g.next_custom_key(), "g42");
        g.set_custom_suffix("-e2");
        g.reserve_custom_key("g50-e1");
        assert_eq!(g.next_custom_key(), "g51-e2");
    }

    #[test]
    fn casts_in_flight_until_every_shard_is_done() {
        let mut g = Groups::new(0);
        g.cast_sent(GroupId(3), 2);
        g.cast_done(GroupId(3));
        assert!(g.cast_in_flight(GroupId(3)));
        g.cast_done(GroupId(3));
        assert!(!g.cast_in_flight(GroupId(3)));
        assert!(!g.any_cast_in_flight());
        g.cast_done(GroupId(3));
        assert!(!g.cast_in_flight(GroupId(3)));
    }
}
