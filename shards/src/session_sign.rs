//! Signed per-session playlist URLs (pure): HMAC-SHA256 over the session id, the stream and
//! the expiry, keyed by the server's `session_key`. The application core signs the `endpoint`
//! URL it hands a viewer; every shard holds a copy of the key and checks a playlist request
//! without asking anyone. A URL edited to name another session, another stream or a later
//! expiry no longer matches its signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex digits of a signature (the whole 32-byte HMAC).
pub const SIG_HEX: usize = 64;

/// Why a signed playlist request is refused (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the playlist URL is not signed (exp and sig are required)")]
    Missing,
    #[error("the playlist URL's signature does not match")]
    Mismatch,
    #[error("the playlist URL has expired")]
    Expired,
}

/// The HMAC key shared by the application core and every shard.
#[derive(Clone)]
pub struct SessionKey(std::sync::Arc<[u8]>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    pub fn new(secret: &[u8]) -> SessionKey {
        SessionKey(secret.into())
    }

    fn mac(&self, session: &str, stream: &str, expires_s: u64) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        // Fields are separated by a byte neither an id nor a decimal number contains.
        mac.update(session.as_bytes());
        mac.update(b"\n");
        mac.update(stream.as_bytes());
        mac.update(b"\n");
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = expires_s;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        mac.update(&digits[at..]);
        mac
    }

    /// The signature of (`session`, `stream`, `expires_s`), in lowercase hex.
    pub fn sign(&self, session: &str, stream: &str, expires_s: u64) -> String {
        protocol::hex(&self.mac(session, stream, expires_s).finalize().into_bytes())
    }

    /// Checks `sig` (hex) for the triple, in constant time, and the expiry against `now_s`.
    pub fn verify(
        &self,
        session: &str,
        stream: &str,
        expires: Option<&str>,
        sig: Option<&str>,
        now_s: u64,
    ) -> Result<(), SignError> {
        let (Some(expires), Some(sig)) = (expires, sig) else {
            return Err(SignError::Missing);
        };
        let expires_s = parse_decimal(expires).ok_or(SignError::Mismatch)?;
        let raw = unhex(sig).ok_or(SignError::Mismatch)?;
        self.mac(session, stream, expires_s)
            .verify_slice(&raw)
            .map_err(|_| SignError::Mismatch)?;
        if expires_s <= now_s {
            return Err(SignError::Expired);
        }
        Ok(())
    }
}

fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != SIG_HEX {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_session_stream_and_expiry() {
        let key = SessionKey::new(b"0123456789abcdef0123456789abcdef");
        let sig = key.sign("s1", "main", 1_000);
        assert_eq!(sig.len(), SIG_HEX);
        let check = |session: &str, stream: &str, exp: &str, sig: &str, now: u64| {
            key.verify(session, stream, Some(exp), Some(sig), now)
        };
        assert_eq!(check("s1", "main", "1000", &sig, 999), Ok(()));
        assert_eq!(
            check("s1", "main", "1000", &sig, 1000),
            Err(SignError::Expired)
        );
        assert_eq!(
            check("s2", "main", "1000", &sig, 0),
            Err(SignError::Mismatch)
        );
        assert_eq!(
            check("s1", "other", "1000", &sig, 0),
            Err(SignError::Mismatch)
        );
        assert_eq!(
            check("s1", "main", "2000", &sig, 0),
            Err(SignError::Mismatch)
        );
        assert_eq!(check("s1", "main", "1000", &sig.to_uppercase(), 0), Ok(()));
        let mut flipped = sig.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            check("s1", "main", "1000", &flipped, 0),
            Err(SignError::Mismatch)
        );
        for bad in ["", "zz", &sig[..62], &format!("{sig}00"), "é"] {
            assert_eq!(
                check("s1", "main", "1000", bad, 0),
                Err(SignError::Mismatch)
            );
        }
        for bad in ["", "-1", "1e3", "99999999999999999999999"] {
            assert_eq!(check("s1", "main", bad, &sig, 0), Err(SignError::Mismatch));
        }
        assert_eq!(
            key.verify("s1", "main", None, Some(&sig), 0),
            Err(SignError::Missing)
        );
        let other = SessionKey::new(b"another key");
        assert_eq!(
            other.verify("s1", "main", Some("1000"), Some(&sig), 0),
            Err(SignError::Mismatch)
        );
    }
}
