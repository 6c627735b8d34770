//! The operator API's per-address refusal counters: counted by the transport
//! (`api::server`), shown by `/api/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

/// API connections refused by the per-address limits (one API per process).
pub static REFUSED_ADDRESS_CAP: AtomicU64 = AtomicU64::new(0);
pub static REFUSED_RATE_LIMITED: AtomicU64 = AtomicU64::new(0);

/// The API's per-address refusals, for `/api/stats`.
pub fn refusal_counts() -> Value {
    serde_json::json!({
        "refused_address_cap": REFUSED_ADDRESS_CAP.load(Ordering::Relaxed),
        "refused_rate_limited": REFUSED_RATE_LIMITED.load(Ordering::Relaxed),
    })
}
