//! The RTMP chunk stream: messages cut into chunks with compressed headers, and back.
//!
//! [`ChunkDecoder`] reassembles messages from any split of the input and applies the two
//! control messages that change framing itself (Set Chunk Size, Abort) the moment they are
//! decoded, since the very next chunk may depend on them. [`ChunkEncoder`] cuts messages into
//! chunks, compressing headers the way common encoders do (types 0 to 3).

use std::collections::HashMap;

use super::{ChunkError, Limits};

/// Message type: Set Chunk Size.
pub const SET_CHUNK_SIZE: u8 = 1;
/// Message type: Abort Message.
pub const ABORT: u8 = 2;
/// Message type: Acknowledgement.
pub const ACKNOWLEDGEMENT: u8 = 3;
/// Message type: User Control Message.
pub const USER_CONTROL: u8 = 4;
/// Message type: Window Acknowledgement Size.
pub const WINDOW_ACK_SIZE: u8 = 5;
/// Message type: Set Peer Bandwidth.
pub const SET_PEER_BANDWIDTH: u8 = 6;
/// Message type: audio (an FLV audio tag body).
pub const AUDIO: u8 = 8;
/// Message type: video (an FLV video tag body).
pub const VIDEO: u8 = 9;
/// Message type: AMF3 data message.
pub const DATA_AMF3: u8 = 15;
/// Message type: AMF3 command message.
pub const COMMAND_AMF3: u8 = 17;
/// Message type: AMF0 data message (metadata).
pub const DATA_AMF0: u8 = 18;
/// Message type: AMF0 command message.
pub const COMMAND_AMF0: u8 = 20;

/// The chunk size both sides start with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
const EXTENDED: u32 = 0x00FF_FFFF;

/// One reassembled RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream the message arrived on.
    pub csid: u32,
    /// Absolute timestamp in milliseconds (wraps at 2^32).
    pub timestamp: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Message body.
    pub payload: Vec<u8>,
}

#[derive(Debug, Default)]
struct InState {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    /// Body bytes of the message in progress; empty between messages.
    partial: Vec<u8>,
    in_progress: bool,
}

/// Reassembles RTMP messages from chunk-stream bytes.
#[derive(Debug)]
pub struct ChunkDecoder {
    limits: Limits,
    chunk_size: u32,
    streams: HashMap<u32, InState>,
    buf: Vec<u8>,
    pos: usize,
    partial_bytes: usize,
}

impl ChunkDecoder {
    /// A decoder at the default chunk size of 128.
    pub fn new(limits: Limits) -> Self {
        ChunkDecoder {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
            buf: Vec::new(),
            pos: 0,
            partial_bytes: 0,
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Bytes held: unparsed input plus partly received messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos + self.partial_bytes
    }

    /// Feeds bytes; appends every message completed by them to `out`.
    ///
    /// Set Chunk Size and Abort are applied here and not returned. After an error the
    /// decoder must not be fed again (the connection is to be closed).
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ChunkError> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
        loop {
            match self.parse_chunk()? {
                Some(Some(msg)) => match msg.type_id {
                    SET_CHUNK_SIZE => self.apply_chunk_size(&msg.payload)?,
                    ABORT => self.apply_abort(&msg.payload)?,
                    _ => out.push(msg),
                },
                Some(None) => {}
                None => break,
            }
        }
        // Keep the unparsed tail small and at the front.
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(())
    }

    fn apply_chunk_size(&mut self, payload: &[u8]) -> Result<(), ChunkError> {
        let size = read_u32(payload).ok_or(ChunkError::BadControl("Set Chunk Size"))? & 0x7FFF_FFFF;
        if size == 0 || size > self.limits.max_chunk_size {
            return Err(ChunkError::ChunkSize {
                size,
                max: self.limits.max_chunk_size,
            });
        }
        self.chunk_size = size;
        Ok(())
    }

    fn apply_abort(&mut self, payload: &[u8]) -> Result<(), ChunkError> {
        let csid = read_u32(payload).ok_or(ChunkError::BadControl("Abort"))?;
        if let Some(state) = self.streams.get_mut(&csid) {
            self.partial_bytes -= state.partial.len();
            state.partial = Vec::new();
            state.in_progress = false;
        }
        Ok(())
    }

    /// Parses one chunk. `None`: not enough bytes yet (nothing consumed);
    /// `Some(None)`: a chunk consumed that did not finish a message.
    fn parse_chunk(&mut self) -> Result<Option<Option<Message>>, ChunkError> {
        let input = &self.buf[self.pos..];
        let Some(&b0) = input.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut at) = match b0 & 0x3F {
            0 => match input.get(1) {
                Some(&b1) => (64 + u32::from(b1), 2),
                None => return Ok(None),
            },
            1 => match (input.get(1), input.get(2)) {
                (Some(&b1), Some(&b2)) => (64 + u32::from(b1) + 256 * u32::from(b2), 3),
                _ => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(header) = input.get(at..at + header_len) else {
            return Ok(None);
        };
        at += header_len;

        if !self.streams.contains_key(&csid) {
            if fmt != 0 {
                return Err(ChunkError::NoPreviousHeader { csid, fmt });
            }
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(ChunkError::TooManyChunkStreams(
                    self.limits.max_chunk_streams,
                ));
            }
        }
        let prev = self.streams.get(&csid);
        let in_progress = prev.is_some_and(|s| s.in_progress);
        if in_progress && fmt != 3 {
            return Err(ChunkError::InterruptedMessage { csid });
        }

        // Header fields; a 0xFFFFFF time field means a 4-byte extended timestamp follows.
        let time_field = if fmt < 3 { read_u24(header) } else { 0 };
        let extended = match (fmt, prev) {
            (3, Some(p)) => p.extended,
            _ => time_field == EXTENDED,
        };
        let ext_value = if extended {
            let Some(ext) = input.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            read_u32(ext)
        } else {
            None
        };
        let time = ext_value.unwrap_or(time_field);

        let (length, type_id, stream_id) = match (fmt, prev) {
            (0, _) => (
                read_u24(&header[3..]),
                header[6],
                u32::from_le_bytes([header[7], header[8], header[9], header[10]]),
            ),
            (1, Some(p)) => (read_u24(&header[3..]), header[6], p.stream_id),
            (_, Some(p)) => (p.length, p.type_id, p.stream_id),
            // Unreachable: a missing previous header with fmt != 0 was refused above.
            (_, None) => return Err(ChunkError::NoPreviousHeader { csid, fmt }),
        };
        if length > self.limits.max_message_len {
            return Err(ChunkError::MessageTooLong {
                len: length,
                max: self.limits.max_message_len,
            });
        }
        let have = if in_progress {
            prev.map_or(0, |p| p.partial.len())
        } else {
            0
        };
        let take = (length as usize - have).min(self.chunk_size as usize);
        if input.len() < at + take {
            return Ok(None);
        }
        let body = &input[at..at + take];

        // The whole chunk is here: commit the header and the body.
        let state = self.streams.entry(csid).or_default();
        if !in_progress {
            match fmt {
                0 => {
                    state.timestamp = time;
                    state.delta = 0;
                }
                1 | 2 => {
                    state.delta = time;
                    state.timestamp = state.timestamp.wrapping_add(time);
                }
                _ => state.timestamp = state.timestamp.wrapping_add(state.delta),
            }
            state.length = length;
            state.type_id = type_id;
            state.stream_id = stream_id;
            state.in_progress = true;
        }
        if fmt < 3 {
            state.extended = extended;
        }
        if self.partial_bytes + take > self.limits.max_buffered {
            return Err(ChunkError::BufferedTooMuch(self.limits.max_buffered));
        }
        state.partial.extend_from_slice(body);
        self.partial_bytes += take;
        self.pos += at + take;
        if state.partial.len() < length as usize {
            return Ok(Some(None));
        }
        state.in_progress = false;
        let payload = std::mem::take(&mut state.partial);
        self.partial_bytes -= payload.len();
        Ok(Some(Some(Message {
            csid,
            timestamp: state.timestamp,
            type_id: state.type_id,
            stream_id: state.stream_id,
            payload,
        })))
    }
}

fn read_u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

fn read_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

#[derive(Debug, Clone, Copy)]
struct OutState {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
}

/// Cuts messages into chunks with compressed headers.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
    streams: HashMap<u32, OutState>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        ChunkEncoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
        }
    }
}

impl ChunkEncoder {
    /// Our outgoing chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Writes a Set Chunk Size message (at the current size) and switches to `size`.
    pub fn set_chunk_size(&mut self, size: u32, out: &mut Vec<u8>) {
        let size = size.clamp(1, 0x7FFF_FFFF);
        self.write(2, 0, SET_CHUNK_SIZE, 0, &size.to_be_bytes(), out);
        self.chunk_size = size;
    }

    /// Appends `payload` as one message on chunk stream `csid` (2..=65599).
    pub fn write(
        &mut self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let csid = csid.clamp(2, 65599);
        let length = u32::try_from(payload.len()).unwrap_or(u32::MAX) & 0x00FF_FFFF;
        let payload = &payload[..length as usize];
        let prev = self.streams.get(&csid).copied();
        let delta = prev.map_or(0, |p| timestamp.wrapping_sub(p.timestamp));
        let fmt = match prev {
            None => 0,
            Some(p) if p.stream_id != stream_id || timestamp < p.timestamp => 0,
            Some(p) if p.length != length || p.type_id != type_id => 1,
            // A type-3 header after an extended one is read differently by different peers.
            Some(p) if p.delta != delta || p.extended => 2,
            Some(_) => 3,
        };
        let time_field = if fmt == 0 { timestamp } else { delta };
        let extended = time_field >= EXTENDED;
        let write_basic = |fmt: u8, out: &mut Vec<u8>| match csid {
            2..=63 => out.push((fmt << 6) | csid as u8),
            64..=319 => out.extend_from_slice(&[fmt << 6, (csid - 64) as u8]),
            _ => {
                let id = csid - 64;
                out.extend_from_slice(&[(fmt << 6) | 1, (id & 0xFF) as u8, (id >> 8) as u8]);
            }
        };
        write_basic(fmt, out);
        let t = if extended { EXTENDED } else { time_field };
        if fmt < 3 {
            out.extend_from_slice(&t.to_be_bytes()[1..]);
        }
        if fmt < 2 {
            out.extend_from_slice(&length.to_be_bytes()[1..]);
            out.push(type_id);
        }
        if fmt == 0 {
            out.extend_from_slice(&stream_id.to_le_bytes());
        }
        if extended {
            out.extend_from_slice(&time_field.to_be_bytes());
        }
        let mut chunks = payload.chunks(self.chunk_size as usize);
        if let Some(first) = chunks.next() {
            out.extend_from_slice(first);
        }
        for chunk in chunks {
            write_basic(3, out);
            if extended {
                out.extend_from_slice(&time_field.to_be_bytes());
            }
            out.extend_from_slice(chunk);
        }
        self.streams.insert(
            csid,
            OutState {
                timestamp,
                delta: if fmt == 0 { 0 } else { delta },
                length,
                type_id,
                stream_id,
                extended,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, len: usize) -> Message {
        Message {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: (0..len).map(|i| (i * 7 + csid as usize) as u8).collect(),
        }
    }

    /// A script that exercises every header type, extended timestamps, chunk-size changes,
    /// three-byte chunk stream ids and interleaving.
    fn script() -> (Vec<u8>, Vec<Message>) {
        let mut enc = ChunkEncoder::default();
        let mut wire = Vec::new();
        let mut expect = Vec::new();
        let mut send = |enc: &mut ChunkEncoder, wire: &mut Vec<u8>, m: Message| {
            enc.write(
                m.csid,
                m.timestamp,
                m.type_id,
                m.stream_id,
                &m.payload,
                wire,
            );
            expect.push(m);
        };
        send(&mut enc, &mut wire, msg(3, 0, COMMAND_AMF0, 0, 300)); // fmt 0, 3 chunks
        send(&mut enc, &mut wire, msg(6, 40, VIDEO, 1, 50));
        send(&mut enc, &mut wire, msg(6, 80, VIDEO, 1, 60)); // fmt 1 (length changed)
        send(&mut enc, &mut wire, msg(6, 100, VIDEO, 1, 60)); // fmt 2 (delta changed)
        send(&mut enc, &mut wire, msg(6, 120, VIDEO, 1, 60)); // fmt 3 (same delta)
        enc.set_chunk_size(4096, &mut wire);
        send(&mut enc, &mut wire, msg(4, 0x0100_0000, AUDIO, 1, 5000)); // extended, 2 chunks
        send(&mut enc, &mut wire, msg(4, 0x0100_0010, AUDIO, 1, 5000)); // fmt 2, delta 16
        send(&mut enc, &mut wire, msg(4, 0x0100_0020, AUDIO, 1, 5000)); // fmt 3
        send(&mut enc, &mut wire, msg(100, 7, DATA_AMF0, 1, 10)); // 2-byte basic header
        send(&mut enc, &mut wire, msg(1000, 8, DATA_AMF0, 1, 10)); // 3-byte basic header
        enc.set_chunk_size(1, &mut wire);
        send(&mut enc, &mut wire, msg(5, 9, VIDEO, 1, 5)); // five 1-byte chunks
        (wire, expect)
    }

    fn decode_split(wire: &[u8], cuts: &[usize]) -> Result<Vec<Message>, ChunkError> {
        let mut dec = ChunkDecoder::new(Limits::default());
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
            dec.push(&wire[start..cut], &mut out)?;
            start = cut;
        }
        assert_eq!(dec.buffered(), 0);
        Ok(out)
    }

    #[test]
    fn roundtrip_in_one_piece() {
        let (wire, expect) = script();
        assert_eq!(decode_split(&wire, &[]).unwrap(), expect);
    }

    #[test]
    fn roundtrip_split_at_every_position() {
        let (wire, expect) = script();
        for cut in 0..=wire.len() {
            assert_eq!(decode_split(&wire, &[cut]).unwrap(), expect, "cut at {cut}");
        }
    }

    #[test]
    fn roundtrip_byte_by_byte() {
        let (wire, expect) = script();
        let cuts: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(decode_split(&wire, &cuts).unwrap(), expect);
    }

    #[test]
    fn fmt3_on_a_new_message_repeats_the_delta() {
        // fmt 0 at t=10, fmt 2 delta 5 (t=15), fmt 3 (t=20): hand-written bytes.
        let mut wire = vec![0x04, 0, 0, 10, 0, 0, 1, VIDEO, 1, 0, 0, 0, 0xAA];
        wire.extend_from_slice(&[0x84, 0, 0, 5, 0xBB]);
        wire.extend_from_slice(&[0xC4, 0xCC]);
        let out = decode_split(&wire, &[]).unwrap();
        let times: Vec<u32> = out.iter().map(|m| m.timestamp).collect();
        assert_eq!(times, vec![10, 15, 20]);
        assert_eq!(out[2].payload, vec![0xCC]);
    }

    #[test]
    fn abort_drops_the_partial_message() {
        let mut wire = Vec::new();
        // 200-byte video message, only its first 128-byte chunk sent.
        wire.extend_from_slice(&[0x06, 0, 0, 0, 0, 0, 200, VIDEO, 1, 0, 0, 0]);
        wire.extend_from_slice(&[0u8; 128]);
        // Abort csid 6 (on csid 2).
        wire.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, ABORT, 0, 0, 0, 0, 0, 0, 0, 6]);
        // A fresh fmt 0 message on csid 6.
        wire.extend_from_slice(&[0x06, 0, 0, 1, 0, 0, 1, VIDEO, 1, 0, 0, 0, 0x55]);
        let out = decode_split(&wire, &[]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload, vec![0x55]);
    }

    #[test]
    fn peer_controlled_sizes_are_bounded() {
        let limits = Limits::default();
        let mut out = Vec::new();
        // Message longer than the limit.
        let len = limits.max_message_len + 1;
        let l = len.to_be_bytes();
        let wire = [0x06, 0, 0, 0, l[1], l[2], l[3], VIDEO, 1, 0, 0, 0];
        assert!(matches!(
            ChunkDecoder::new(limits).push(&wire, &mut out),
            Err(ChunkError::MessageTooLong { .. })
        ));
        // Chunk size above the limit, and zero.
        for size in [limits.max_chunk_size + 1, 0, 0x8000_0000] {
            let s = size.to_be_bytes();
            let wire = [
                0x02,
                0,
                0,
                0,
                0,
                0,
                4,
                SET_CHUNK_SIZE,
                0,
                0,
                0,
                0,
                s[0],
                s[1],
                s[2],
                s[3],
            ];
            assert!(matches!(
                ChunkDecoder::new(limits).push(&wire, &mut out),
                Err(ChunkError::ChunkSize { .. })
            ));
        }
        // Continuation chunk with no previous header.
        assert!(matches!(
            ChunkDecoder::new(limits).push(&[0xC5, 1], &mut out),
            Err(ChunkError::NoPreviousHeader { csid: 5, fmt: 3 })
        ));
        // Too many chunk streams, each holding a partial message.
        let mut dec = ChunkDecoder::new(limits);
        let mut result = Ok(());
        for csid in 3..(3 + limits.max_chunk_streams as u32 + 1) {
            let mut wire = Vec::new();
            let mut enc = ChunkEncoder::default();
            enc.write(csid, 0, VIDEO, 1, &[0u8; 10], &mut wire);
            result = dec.push(&wire, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(ChunkError::TooManyChunkStreams(_))));
    }

    #[test]
    fn partial_messages_across_streams_are_bounded() {
        let limits = Limits {
            max_buffered: 1000,
            ..Limits::default()
        };
        let mut dec = ChunkDecoder::new(limits);
        let mut out = Vec::new();
        let mut result = Ok(());
        for csid in 3..20u8 {
            // Each announces 10,000 bytes and sends one 128-byte chunk.
            let mut wire = vec![csid, 0, 0, 0, 0, 0x27, 0x10, VIDEO, 1, 0, 0, 0];
            wire.extend_from_slice(&[0u8; 128]);
            result = dec.push(&wire, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ChunkError::BufferedTooMuch(1000)));
    }

    #[test]
    fn interleaved_new_header_mid_message_is_refused() {
        let mut wire = vec![0x06, 0, 0, 0, 0, 0, 200, VIDEO, 1, 0, 0, 0];
        wire.extend_from_slice(&[0u8; 128]);
        wire.extend_from_slice(&[0x46, 0, 0, 0, 0, 0, 10, VIDEO]);
        let mut out = Vec::new();
        assert_eq!(
            ChunkDecoder::new(Limits::default()).push(&wire, &mut out),
            Err(ChunkError::InterruptedMessage { csid: 6 })
        );
    }
}
