//! Operator API tokens with scopes, so a dashboard need not hold the admin key.
//!
//! - `read`: every `GET` (stats, streams, groups, viewers, polls, audits) and the
//!   broadcaster results socket.
//! - `operate`: `read`, and running a show: streams, groups, messages, tags, polls.
//! - `admin`: everything, including `DELETE` and audits.
//!
//! The `--api-token` (or `OVATION_API_TOKEN`, or the generated one) is an admin token;
//! `api_tokens` in the configuration file adds more, each with its scope. A presented token
//! is compared with every configured token in constant time (no early exit, and every token
//! is compared), so response time reveals neither a prefix nor which token matched.

use serde::{Deserialize, Serialize};

/// What a token may do; each scope includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Operate,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    /// The scope a request needs: `GET` reads, `DELETE` and audits administer, the rest
    /// operates.
    pub fn needed(method: &str, path: &str) -> Scope {
        if method == "GET" || method == "HEAD" {
            Scope::Read
        } else if method == "DELETE" || path.trim_matches('/').starts_with("api/audits") {
            Scope::Admin
        } else {
            Scope::Operate
        }
    }
}

/// One extra API token from the configuration file (`[[api_tokens]]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub token: String,
    pub scope: Scope,
}

/// Compares without an early exit, so response time does not reveal a token prefix.
pub fn token_matches(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// The scope of `given`: the admin token's, or the widest of the matching extra tokens.
/// Every token is compared, whatever matched before.
pub fn scope_of(given: &str, admin: &str, extra: &[ApiToken]) -> Option<Scope> {
    let mut found = token_matches(given, admin).then_some(Scope::Admin);
    for t in extra {
        if token_matches(given, &t.token) {
            found = found.max(Some(t.scope));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_routes_need_the_right_one() {
        assert!(Scope::Read < Scope::Operate && Scope::Operate < Scope::Admin);
        assert_eq!(Scope::needed("GET", "/api/stats"), Scope::Read);
        assert_eq!(Scope::needed("POST", "/api/polls"), Scope::Operate);
        assert_eq!(Scope::needed("PUT", "/api/viewers/x/tags"), Scope::Operate);
        assert_eq!(Scope::needed("DELETE", "/api/groups/g"), Scope::Admin);
        assert_eq!(Scope::needed("POST", "/api/audits"), Scope::Admin);
    }

    #[test]
    fn tokens_map_to_their_scopes() {
        let extra = vec![
            ApiToken {
                token: "dashboard-0123456789".into(),
                scope: Scope::Read,
            },
            ApiToken {
                token: "producer-0123456789".into(),
                scope: Scope::Operate,
            },
        ];
        let admin = "admin-token-0123456789";
        assert_eq!(scope_of(admin, admin, &extra), Some(Scope::Admin));
        assert_eq!(
            scope_of("dashboard-0123456789", admin, &extra),
            Some(Scope::Read)
        );
        assert_eq!(
            scope_of("producer-0123456789", admin, &extra),
            Some(Scope::Operate)
        );
        assert_eq!(scope_of("dashboard-012345678", admin, &extra), None);
        assert_eq!(scope_of("", admin, &extra), None);
        assert!(!token_matches("abc", "abcdefghijklmnop"));
    }
}
