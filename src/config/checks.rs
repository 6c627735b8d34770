//! Checks of settings that are more than a range: secrets given as tokens, and the cluster's
//! names and addresses.

use anyhow::bail;

/// A bearer token setting: at least 16 printable ASCII characters, no spaces.
pub fn token(name: &str, t: &str) -> anyhow::Result<()> {
    if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{name} must be at least 16 printable ASCII characters without spaces");
    }
    Ok(())
}

/// `edge_id` (empty: made at start) and `cluster_nats_url` (unset: a single edge).
pub fn cluster(edge_id: &str, nats_url: Option<&str>) -> anyhow::Result<()> {
    if !edge_id.is_empty() && !cluster::valid_edge_id(edge_id) {
        bail!("edge_id must be 1 to 32 of A-Z, a-z, 0-9, '-' and '_': {edge_id:?}");
    }
    if nats_url.is_some_and(|u| u.trim().is_empty()) {
        bail!("cluster_nats_url must not be empty (leave it unset for a single edge)");
    }
    Ok(())
}
