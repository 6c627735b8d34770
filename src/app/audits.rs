//! Mirror audits: every shard lists a hash of each profile it owns, and the application core
//! compares them with its mirror at the same point of the event stream.
//!
//! Owns: audit records (the last 16). Must not touch: the mirror (read only), shard queues
//! (the caller broadcasts `Audit`).

use std::collections::BTreeMap;

use shards::profile::profile_hash;
use shards::proto::ViewerRef;

use super::mirror::Mirror;

/// Audits kept for the API.
const KEPT: usize = 16;

/// A mirror audit in progress or done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audit {
    pub shards_reported: usize,
    pub viewers_checked: usize,
    pub mismatches: Vec<String>,
}

#[derive(Debug)]
pub struct Audits {
    audits: BTreeMap<u64, Audit>,
    next: u64,
}

impl Default for Audits {
    fn default() -> Self {
        Audits {
            audits: BTreeMap::new(),
            next: 1,
        }
    }
}

impl Audits {
    /// Starts an audit; the caller asks every shard.
    pub fn start(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        self.audits.insert(id, Audit::default());
        while self.audits.len() > KEPT {
            self.audits.pop_first();
        }
        id
    }

    pub fn get(&self, id: u64) -> Option<&Audit> {
        self.audits.get(&id)
    }

    /// One shard's report.
    pub fn report(
        &mut self,
        audit: u64,
        shard: u16,
        profiles: &[(ViewerRef, u64)],
        mirror: &Mirror,
    ) {
        let mut mismatches = Vec::new();
        let mut seen = 0usize;
        for (at, hash) in profiles {
            match mirror.viewer(at.viewer) {
                Some(v) if v.at() == *at && profile_hash(&v.profile) == *hash => seen += 1,
                Some(v) if v.at() == *at => {
                    mismatches.push(format!("{}: profile differs", at.viewer))
                }
                _ => mismatches.push(format!("{}: missing from the mirror", at.viewer)),
            }
        }
        let mirrored = mirror.viewers().filter(|v| v.at().shard == shard).count();
        if mirrored != profiles.len() {
            mismatches.push(format!(
                "shard {shard}: owns {} viewers, the mirror has {mirrored}",
                profiles.len()
            ));
        }
        if let Some(a) = self.audits.get_mut(&audit) {
            a.shards_reported += 1;
            a.viewers_checked += seen + mismatches.len();
            a.mismatches.extend(mismatches);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::profile::{Profile, ViewerId};

    #[test]
    fn reports_compare_with_the_mirror_and_old_audits_are_dropped() {
        let mut m = Mirror::default();
        let at = ViewerRef {
            shard: 0,
            slot: 1,
            viewer: ViewerId(1),
        };
        let p = Profile::from_handshake(
            ViewerId(1),
            "127.0.0.1:1".parse().unwrap(),
            None,
            None,
            &[],
            0,
        );
        m.join(at, "t".into(), p.clone());
        let mut a = Audits::default();
        let id = a.start();
        a.report(id, 0, &[(at, profile_hash(&p))], &m);
        assert_eq!(a.get(id).unwrap().mismatches, Vec::<String>::new());
        a.report(id, 1, &[(ViewerRef { shard: 1, ..at }, 7)], &m);
        let done = a.get(id).unwrap();
        assert_eq!(done.shards_reported, 2);
        assert_eq!(done.mismatches.len(), 2, "{:?}", done.mismatches);
        for _ in 0..20 {
            a.start();
        }
        assert!(a.get(id).is_none());
    }
}
