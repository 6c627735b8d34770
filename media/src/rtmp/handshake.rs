//! The RTMP handshake, server side: C0+C1 in, S0+S1+S2 out, C2 in.
//!
//! Two forms exist. The simple one (version 0 in C1) only echoes. The digest form that Flash
//! Player, ffmpeg and OBS builds with crypto send hides an HMAC-SHA256 digest in C1; a server
//! answers with its own digest in S1 and an S2 keyed on the client's digest, which those
//! clients may verify. Both are accepted here. Encrypted RTMPE (C0 = 6) is refused.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::HandshakeError;

/// Size of C1, C2, S1 and S2.
pub const PACKET: usize = 1536;
const DIGEST: usize = 32;

const GENUINE_FP: &[u8] = b"Genuine Adobe Flash Player 001";
const GENUINE_FMS: &[u8] = b"Genuine Adobe Flash Media Server 001";
const KEY_TAIL: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
    0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];
/// The version a digest-form server advertises in S1 (as nginx-rtmp does).
const SERVER_VERSION: [u8; 4] = [0x0D, 0x0E, 0x0A, 0x0D];

/// Which handshake the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// Version 0 in C1 or no valid digest: S2 echoes C1.
    Simple,
    /// A valid client digest found at the offset given by the scheme (base 8 or 772).
    Digest {
        /// 8 or 772: where the offset bytes that locate the digest sit.
        base: usize,
    },
}

/// Progress of [`Handshake::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes needed.
    Pending,
    /// Done; these bytes came after C2 and belong to the chunk stream.
    Done(Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    AwaitC0C1,
    AwaitC2,
    Done,
}

/// The server side of the handshake as a state machine.
#[derive(Debug)]
pub struct Handshake {
    state: State,
    buf: Vec<u8>,
    kind: Option<HandshakeKind>,
    epoch_ms: u32,
    seed: u64,
}

impl Handshake {
    /// `epoch_ms` goes into S1's time field; `seed` fills S1's random bytes.
    pub fn new(epoch_ms: u32, seed: u64) -> Self {
        Handshake {
            state: State::AwaitC0C1,
            buf: Vec::with_capacity(1 + PACKET),
            kind: None,
            epoch_ms,
            seed,
        }
    }

    /// The form detected, once C1 is in.
    pub fn kind(&self) -> Option<HandshakeKind> {
        self.kind
    }

    /// Feeds bytes; S0+S1+S2 are appended to `out` as soon as C1 is complete.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        let mut data = data;
        loop {
            match self.state {
                State::AwaitC0C1 => {
                    let need = 1 + PACKET - self.buf.len();
                    let n = need.min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if let Some(&version) = self.buf.first() {
                        if version != 3 {
                            return Err(HandshakeError::UnsupportedVersion(version));
                        }
                    }
                    if self.buf.len() < 1 + PACKET {
                        return Ok(Progress::Pending);
                    }
                    let c1 = std::mem::take(&mut self.buf);
                    self.respond(&c1[1..], out);
                    self.state = State::AwaitC2;
                }
                State::AwaitC2 => {
                    let need = PACKET - self.buf.len();
                    let n = need.min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.buf.len() < PACKET {
                        return Ok(Progress::Pending);
                    }
                    // C2 is not checked: clients differ in what they echo, and nothing
                    // depends on it.
                    self.buf = Vec::new();
                    self.state = State::Done;
                    return Ok(Progress::Done(data.to_vec()));
                }
                State::Done => return Err(HandshakeError::AlreadyDone),
            }
        }
    }

    fn respond(&mut self, c1: &[u8], out: &mut Vec<u8>) {
        let mut rng = XorShift(self.seed | 1);
        let mut s1 = vec![0u8; PACKET];
        rng.fill(&mut s1[8..]);
        s1[..4].copy_from_slice(&self.epoch_ms.to_be_bytes());
        let client_digest = if c1[4..8] == [0, 0, 0, 0] {
            None
        } else {
            [772, 8]
                .into_iter()
                .find_map(|base| find_digest(c1, base, GENUINE_FP).map(|d| (base, d)))
        };
        out.push(3);
        match client_digest {
            None => {
                self.kind = Some(HandshakeKind::Simple);
                out.extend_from_slice(&s1);
                out.extend_from_slice(c1);
            }
            Some((base, digest)) => {
                self.kind = Some(HandshakeKind::Digest { base });
                s1[4..8].copy_from_slice(&SERVER_VERSION);
                let pos = digest_offset(&s1, base);
                let server_digest = digest_around(&s1, pos, GENUINE_FMS);
                s1[pos..pos + DIGEST].copy_from_slice(&server_digest);
                out.extend_from_slice(&s1);

                let mut s2 = vec![0u8; PACKET];
                rng.fill(&mut s2);
                let key = hmac(&[GENUINE_FMS, &KEY_TAIL].concat(), &[&digest]);
                let signature = hmac(&key, &[&s2[..PACKET - DIGEST]]);
                s2[PACKET - DIGEST..].copy_from_slice(&signature);
                out.extend_from_slice(&s2);
            }
        }
    }
}

/// Where the digest sits for a scheme: four offset bytes at `base`, summed, mod 728.
pub fn digest_offset(packet: &[u8], base: usize) -> usize {
    let sum: usize = packet[base..base + 4].iter().map(|&b| usize::from(b)).sum();
    sum % 728 + base + 4
}

/// HMAC-SHA256 over the packet minus the 32 bytes at `pos`.
pub fn digest_around(packet: &[u8], pos: usize, key: &[u8]) -> [u8; DIGEST] {
    hmac(key, &[&packet[..pos], &packet[pos + DIGEST..]])
}

fn find_digest(c1: &[u8], base: usize, key: &[u8]) -> Option<[u8; DIGEST]> {
    let pos = digest_offset(c1, base);
    let expect = digest_around(c1, pos, key);
    (c1[pos..pos + DIGEST] == expect).then_some(expect)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Filler for S1/S2. These bytes need no secrecy (the handshake authenticates nothing).
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Test helpers that play the client side (also used by the session tests).
#[cfg(test)]
pub(crate) mod client {
    use super::*;

    /// C0+C1: simple (version 0) or with a digest at the given scheme, as ffmpeg builds it.
    pub fn c0c1(digest_base: Option<usize>) -> Vec<u8> {
        let mut c1 = vec![0u8; PACKET];
        XorShift(0x1234_5678_9abc_def1).fill(&mut c1[8..]);
        if let Some(base) = digest_base {
            c1[4..8].copy_from_slice(&[0x80, 0x00, 0x07, 0x02]);
            let pos = digest_offset(&c1, base);
            let d = digest_around(&c1, pos, GENUINE_FP);
            c1[pos..pos + DIGEST].copy_from_slice(&d);
        }
        let mut out = vec![3];
        out.extend_from_slice(&c1);
        out
    }

    /// Checks S1/S2 as a verifying (playing) client would; returns S1 to echo as C2.
    pub fn verify(c0c1: &[u8], reply: &[u8], base: usize) -> bool {
        let s1 = &reply[1..1 + PACKET];
        let s2 = &reply[1 + PACKET..];
        let pos = digest_offset(s1, base);
        if s1[pos..pos + DIGEST] != digest_around(s1, pos, GENUINE_FMS) {
            return false;
        }
        let c1 = &c0c1[1..];
        let cpos = digest_offset(c1, base);
        let key = hmac(
            &[GENUINE_FMS, &KEY_TAIL].concat(),
            &[&c1[cpos..cpos + DIGEST]],
        );
        let signature = hmac(&key, &[&s2[..PACKET - DIGEST]]);
        s2[PACKET - DIGEST..] == signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], step: usize) -> (Handshake, Vec<u8>, Vec<u8>) {
        let mut hs = Handshake::new(42, 7);
        let mut out = Vec::new();
        let mut rest: Option<Vec<u8>> = None;
        for piece in input.chunks(step) {
            match &mut rest {
                // After C2, bytes belong to the chunk stream, not the handshake.
                Some(rest) => rest.extend_from_slice(piece),
                None => {
                    if let Progress::Done(tail) = hs.push(piece, &mut out).unwrap() {
                        rest = Some(tail);
                    }
                }
            }
        }
        let rest = rest.expect("handshake completed");
        (hs, out, rest)
    }

    #[test]
    fn simple_handshake_echoes_c1() {
        let c0c1 = client::c0c1(None);
        let mut input = c0c1.clone();
        input.extend_from_slice(&[9u8; PACKET]);
        input.extend_from_slice(b"tail");
        for step in [1, 7, 1536, 5000] {
            let (hs, out, rest) = run(&input, step);
            assert_eq!(hs.kind(), Some(HandshakeKind::Simple));
            assert_eq!(out.len(), 1 + 2 * PACKET);
            assert_eq!(out[0], 3);
            assert_eq!(&out[1..5], &42u32.to_be_bytes());
            assert_eq!(&out[1 + PACKET..], &c0c1[1..]);
            assert_eq!(rest, b"tail");
        }
    }

    #[test]
    fn digest_handshake_both_schemes_verify_as_a_client_checks() {
        for base in [8, 772] {
            let c0c1 = client::c0c1(Some(base));
            let mut input = c0c1.clone();
            input.extend_from_slice(&[0u8; PACKET]);
            let (hs, out, rest) = run(&input, 100);
            assert_eq!(hs.kind(), Some(HandshakeKind::Digest { base }));
            assert!(client::verify(&c0c1, &out, base), "scheme {base}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn a_version_without_a_valid_digest_falls_back_to_simple() {
        let mut c0c1 = client::c0c1(None);
        c0c1[5] = 9; // non-zero version, no digest
        let mut out = Vec::new();
        Handshake::new(0, 1).push(&c0c1, &mut out).unwrap();
        assert_eq!(&out[1 + PACKET..], &c0c1[1..]);
    }

    #[test]
    fn rtmpe_and_garbage_are_refused_at_the_first_byte() {
        let mut out = Vec::new();
        assert_eq!(
            Handshake::new(0, 1).push(&[6], &mut out),
            Err(HandshakeError::UnsupportedVersion(6))
        );
        assert_eq!(
            Handshake::new(0, 1).push(b"GET / HTTP/1.1\r\n", &mut out),
            Err(HandshakeError::UnsupportedVersion(b'G'))
        );
        assert!(out.is_empty());
    }
}
