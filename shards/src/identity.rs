//! Viewer identity: signed connection tokens (JWT) checked at the handshake.
//!
//! A token names the person (`sub`), when it stops being valid (`exp`, Unix seconds), and
//! optionally the streams the person may watch (`streams`) and tags that join the viewer's
//! profile (`tags`). Keys come from the configuration: an HS256 shared secret and/or public
//! keys (RS256, EdDSA) in PEM. A token verifies when any configured key accepts it.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Close code for a viewer whose token expired while connected (application range).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Longest token accepted (bytes); longer is malformed before any decoding.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Most entries taken from `streams` and `tags`.
const MAX_LIST: usize = 32;

/// Why a token was refused: the reason sent with the 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token, and anonymous viewers are not allowed.
    #[error("a token is required (?token= or Sec-WebSocket-Protocol)")]
    Missing,
    /// Not a JWT (bad base64, JSON or structure), or too long.
    #[error("malformed token")]
    Malformed,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// No configured key verifies the signature (or its algorithm is not accepted).
    #[error("token signature does not verify")]
    BadSignature,
    /// A required claim is missing or has the wrong type.
    #[error("token claim missing or invalid: {0}")]
    BadClaim(String),
}

/// A key reading failure (a configuration error, at start).
#[derive(Debug, thiserror::Error)]
#[error("identity key: {0}")]
pub struct KeyError(pub String);

/// Who a verified token says the viewer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sub: Box<str>,
    /// Unix seconds after which the connection is closed (4001).
    pub exp: u64,
    /// Streams this viewer may `watch`; `None` allows all.
    pub streams: Option<Box<[Box<str>]>>,
    pub tags: Vec<Box<str>>,
}

impl Identity {
    pub fn may_watch(&self, stream: &str) -> bool {
        self.streams
            .as_ref()
            .is_none_or(|s| s.iter().any(|a| &**a == stream))
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    streams: Option<Vec<String>>,
    #[serde(default)]
    tags: Vec<String>,
}

/// The identity settings and the keys tokens are checked with.
pub struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    /// Viewers without a token may connect.
    pub anonymous_viewers: bool,
    /// Viewers without a token may vote.
    pub anonymous_votes: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.iter().map(|k| k.0).collect::<Vec<_>>())
            .field("anonymous_viewers", &self.anonymous_viewers)
            .field("anonymous_votes", &self.anonymous_votes)
            .finish()
    }
}

impl Verifier {
    /// `hs256_secret`: shared secret; `public_pem`: an RSA (RS256) or Ed25519 (EdDSA) public
    /// key in PEM. At least one is needed.
    pub fn new(
        hs256_secret: Option<&[u8]>,
        public_pem: Option<&[u8]>,
        anonymous_viewers: bool,
        anonymous_votes: bool,
    ) -> Result<Verifier, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = hs256_secret {
            if secret.len() < 32 {
                return Err(KeyError(
                    "the HS256 secret must be at least 32 bytes".into(),
                ));
            }
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret)));
        }
        if let Some(pem) = public_pem {
            if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                keys.push((Algorithm::RS256, key));
            } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
                keys.push((Algorithm::EdDSA, key));
            } else {
                return Err(KeyError(
                    "the public key is neither an RSA nor an Ed25519 PEM public key".into(),
                ));
            }
        }
        if keys.is_empty() {
            return Err(KeyError("no key configured".into()));
        }
        Ok(Verifier {
            keys,
            anonymous_viewers,
            anonymous_votes,
        })
    }

    /// Checks `token`'s signature and claims (`exp` against the system clock, no leeway).
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let mut refusal = TokenError::BadSignature;
        for (alg, key) in &self.keys {
            if *alg != header.alg {
                continue;
            }
            let mut validation = Validation::new(*alg);
            validation.leeway = 0;
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "sub"]);
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(identity(data.claims)),
                Err(e) => {
                    refusal = match e.kind() {
                        ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                        ErrorKind::InvalidSignature => TokenError::BadSignature,
                        ErrorKind::MissingRequiredClaim(c) => {
                            return Err(TokenError::BadClaim(c.clone()))
                        }
                        ErrorKind::Json(e) => return Err(TokenError::BadClaim(e.to_string())),
                        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                            return Err(TokenError::Malformed)
                        }
                        _ => TokenError::BadSignature,
                    }
                }
            }
        }
        Err(refusal)
    }
}

fn identity(c: Claims) -> Identity {
    let list = |v: Vec<String>| -> Vec<Box<str>> {
        v.into_iter()
            .filter_map(|s| crate::profile::field(&s))
            .take(MAX_LIST)
            .collect()
    };
    Identity {
        sub: c.sub.into_boxed_str(),
        exp: c.exp,
        streams: c.streams.map(|s| list(s).into_boxed_slice()),
        tags: list(c.tags),
    }
}

/// The token a handshake presents: `?token=` first, else a `Sec-WebSocket-Protocol` entry
/// `token.<JWT>`. Returns the token and the subprotocol to answer with (a browser needs one
/// of those it offered echoed back): `ovation.v1` when offered, else the token entry itself.
pub fn presented<'a>(
    query: &'a [(String, String)],
    protocols: Option<&'a str>,
) -> (Option<&'a str>, Option<&'a str>) {
    let offered = || {
        protocols
            .into_iter()
            .flat_map(|p| p.split(','))
            .map(str::trim)
    };
    let from_protocol = offered().find_map(|p| p.strip_prefix("token."));
    let answer = if offered().any(|p| p == "ovation.v1") {
        Some("ovation.v1")
    } else {
        offered().find(|p| p.starts_with("token."))
    };
    let from_query = query
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str());
    (from_query.or(from_protocol), answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn good_expired_wrongly_signed_and_malformed_tokens() {
        let v = Verifier::new(Some(SECRET), None, true, true).unwrap();
        let good = sign(
            serde_json::json!({"sub": "alice", "exp": now() + 60, "streams": ["main"], "tags": ["vip", ""]}),
            SECRET,
        );
        let id = v.verify(&good).unwrap();
        assert_eq!(&*id.sub, "alice");
        assert!(id.may_watch("main") && !id.may_watch("other"));
        assert_eq!(
            id.tags,
            vec![Box::<str>::from("vip")],
            "empty tags are dropped"
        );
        let expired = sign(serde_json::json!({"sub": "a", "exp": now() - 10}), SECRET);
        assert_eq!(v.verify(&expired), Err(TokenError::Expired));
        let wrong = sign(
            serde_json::json!({"sub": "a", "exp": now() + 60}),
            b"another-secret-another-secret-xx",
        );
        assert_eq!(v.verify(&wrong), Err(TokenError::BadSignature));
        assert_eq!(v.verify("not.a.jwt"), Err(TokenError::Malformed));
        assert_eq!(v.verify(""), Err(TokenError::Malformed));
        assert_eq!(v.verify(&"a".repeat(5000)), Err(TokenError::Malformed));
        let no_sub = sign(serde_json::json!({"exp": now() + 60}), SECRET);
        assert!(matches!(v.verify(&no_sub), Err(TokenError::BadClaim(_))));
    }

    #[test]
    fn token_from_query_or_subprotocol() {
        let q = vec![("token".to_string(), "abc".to_string())];
        assert_eq!(presented(&q, None), (Some("abc"), None));
        assert_eq!(
            presented(&[], Some("ovation.v1, token.xyz")),
            (Some("xyz"), Some("ovation.v1"))
        );
        assert_eq!(
            presented(&[], Some("token.xyz")),
            (Some("xyz"), Some("token.xyz"))
        );
        assert_eq!(presented(&[], None), (None, None));
    }

    #[test]
    fn short_secrets_and_bad_keys_are_refused() {
        assert!(Verifier::new(Some(b"short"), None, true, true).is_err());
        assert!(Verifier::new(None, Some(b"junk"), true, true).is_err());
        assert!(Verifier::new(None, None, true, true).is_err());
    }
}
