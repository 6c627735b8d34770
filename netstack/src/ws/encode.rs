//! Frame encoders: unmasked server frames (encoded once, shared by every receiver of a
//! broadcast) and masked client frames for tests and the load generator.

use super::*;

/// XORs `buf` with the masking key. `offset` is the position of `buf[0]` within the frame
/// payload, so a payload can be unmasked in pieces. Works eight bytes at a time.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset % 4);
    let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the rotated key lines up with index 0.
    for (b, k) in chunks.into_remainder().iter_mut().zip(m.iter().cycle()) {
        *b ^= k;
    }
}

/// Length of the header [`encode_frame`] writes for a payload of `payload_len` bytes.
pub fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

fn put_header(out: &mut Vec<u8>, first: u8, mask_bit: u8, len: usize) {
    out.push(first);
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Appends a server-to-client frame: FIN set, no mask, minimal length encoding.
///
/// Callers keep control payloads within [`MAX_CONTROL_PAYLOAD`] bytes.
pub fn encode_frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(header_len(payload.len()) + payload.len());
    put_header(out, 0x80 | opcode.as_u8(), 0, payload.len());
    out.extend_from_slice(payload);
}

/// One unfragmented server text frame holding `text`, in a shared buffer: a broadcast encodes
/// its frame once and every receiver's queue holds the same bytes.
pub fn text_frame(text: &str) -> std::sync::Arc<[u8]> {
    let mut buf = Vec::with_capacity(header_len(text.len()) + text.len());
    encode_frame(OpCode::Text, text.as_bytes(), &mut buf);
    buf.into()
}

/// Appends a server Close frame; `reason` is cut at a char boundary so the payload fits in
/// 125 bytes.
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    out.reserve(2 + 2 + reason.len());
    put_header(out, 0x80 | OpCode::Close.as_u8(), 0, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

/// Appends a masked client-to-server frame (for tests and the load generator).
pub fn encode_client_frame(
    opcode: OpCode,
    fin: bool,
    payload: &[u8],
    mask: [u8; 4],
    out: &mut Vec<u8>,
) {
    out.reserve(header_len(payload.len()) + 4 + payload.len());
    let first = if fin { 0x80 } else { 0 } | opcode.as_u8();
    put_header(out, first, 0x80, payload.len());
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frame_is_one_final_text_frame() {
        assert_eq!(&*text_frame("{}"), b"\x81\x02{}");
        let long = "x".repeat(200);
        let frame = text_frame(&long);
        assert_eq!(&frame[..4], [0x81, 126, 0, 200]);
        assert_eq!(&frame[4..], long.as_bytes());
    }
}
