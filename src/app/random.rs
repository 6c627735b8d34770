//! Random tokens: session ids, poll ids, stream keys.

/// A random token in hex (`bytes` random bytes).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // getrandom(2) only fails before the kernel pool is seeded, long before a server runs;
    // zeros would still be a well-formed (if guessable) session id.
    let _ = getrandom::getrandom(&mut buf);
    protocol::hex(&buf)
}

/// A random number (weighted choices).
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    let _ = getrandom::getrandom(&mut buf);
    u64::from_le_bytes(buf)
}
