//! The incremental frame decoder: unmasking, reassembly, incremental UTF-8 validation,
//! limits.

use std::ops::ControlFlow;

use super::*;

/// Incremental decoder for the frames a client sends to the server.
///
/// Feed it whatever the socket returned; it delivers [`Event`]s in order. See [`Decoder::feed`].
pub struct Decoder {
    /// [`Limits`], as u32s (saturated): a decoder lives in every open connection, and no
    /// limit near 4 GiB makes sense for one message.
    max_frame: u32,
    max_message: u32,
    /// Everything beyond a partial header: allocated only while a frame payload or a
    /// fragmented message is incomplete.
    partial: Option<Box<Partial>>,
    /// A frame header that has not fully arrived (rare: boxed, so an idle decoder holds two
    /// null pointers and its limits).
    stash: Option<Box<Stash>>,
}

/// The bytes so far of a frame header split across reads.
struct Stash {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

/// Decoder state that only exists between a frame's header and the end of its message.
#[derive(Default)]
struct Partial {
    /// The frame whose header has been read but whose payload is still arriving.
    frame: Option<FrameProgress>,
    /// The data message being assembled (an unfragmented frame split across reads, or the
    /// fragments so far of a fragmented one).
    message: Option<Message>,
    /// Payload so far of a control frame split across reads (at most 125 bytes).
    control: Vec<u8>,
}

#[derive(Clone, Copy)]
struct FrameProgress {
    opcode: OpCode,
    fin: bool,
    mask: [u8; 4],
    len: usize,
    received: usize,
}

enum Message {
    Text(TextBuf),
    Binary(Vec<u8>),
}

impl Message {
    fn new(opcode: OpCode, capacity: usize) -> Self {
        if opcode == OpCode::Text {
            Self::Text(TextBuf {
                text: String::with_capacity(capacity),
                pending: [0; 4],
                pending_len: 0,
            })
        } else {
            Self::Binary(Vec::with_capacity(capacity))
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.text.len() + usize::from(t.pending_len),
            Self::Binary(b) => b.len(),
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Self::Text(t) => t.text.capacity(),
            Self::Binary(b) => b.capacity(),
        }
    }

    fn reserve(&mut self, additional: usize) {
        match self {
            Self::Text(t) => t.text.reserve(additional),
            Self::Binary(b) => b.reserve(additional),
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        match self {
            Self::Text(t) => t.push(bytes),
            Self::Binary(b) => {
                b.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// Text assembled so far plus the bytes of a code point cut by a read or fragment boundary.
/// Every byte is validated exactly once, as it arrives.
struct TextBuf {
    text: String,
    pending: [u8; 4],
    pending_len: u8,
}

impl TextBuf {
    fn push(&mut self, mut bytes: &[u8]) -> Result<(), ProtocolError> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = utf8_width(self.pending[0]).saturating_sub(have);
            let take = need.min(bytes.len());
            self.pending[have..have + take].copy_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            match std::str::from_utf8(&self.pending[..have + take]) {
                Ok(s) => {
                    self.text.push_str(s);
                    self.pending_len = 0;
                }
                // Still a valid prefix of a code point: `bytes` is exhausted.
                Err(e) if e.error_len().is_none() => {
                    self.pending_len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            }
        }
        let (head, tail) = bytes.split_at(incomplete_tail_start(bytes));
        let head = std::str::from_utf8(head).map_err(|_| ProtocolError::InvalidUtf8)?;
        self.text.push_str(head);
        if !tail.is_empty() {
            // `tail` is 1-3 bytes starting at a lead byte: keep it if it is a valid prefix.
            match std::str::from_utf8(tail) {
                Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 => {
                    self.pending[..tail.len()].copy_from_slice(tail);
                    self.pending_len = tail.len() as u8;
                }
                _ => return Err(ProtocolError::InvalidUtf8),
            }
        }
        Ok(())
    }
}

/// Encoded length of the UTF-8 sequence a lead byte starts (1 for anything else).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Index where a trailing, incomplete multi-byte sequence starts (`bytes.len()` if none).
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for i in (len.saturating_sub(3)..len).rev() {
        let b = bytes[i];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead
        }
        return if b >= 0xC0 && len - i < utf8_width(b) {
            i
        } else {
            len
        };
    }
    len
}

/// A parsed and validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    opcode: OpCode,
    fin: bool,
    mask: [u8; 4],
    payload_len: usize,
    len: usize,
}

/// Parses the frame header at the start of `buf`; `Ok(None)` if more bytes are needed.
///
/// Checks are made as soon as the bytes they need are present, in a fixed order, so the error
/// does not depend on how the stream was split. `message_len` is the size so far of the
/// fragmented message in progress, if any.
fn parse_header(
    buf: &[u8],
    message_len: Option<usize>,
    limits: &Limits,
) -> Result<Option<Header>, ProtocolError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::UnknownOpcode(b0 & 0x0F))?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(ProtocolError::Unmasked);
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlTooLong);
        }
    } else {
        match (opcode, message_len) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
    }
    let (payload_len, ext) = match len7 {
        126 => {
            let [_, _, a, b, ..] = *buf else {
                return Ok(None);
            };
            let n = u16::from_be_bytes([a, b]);
            if n < 126 {
                return Err(ProtocolError::NonMinimalLength);
            }
            (u64::from(n), 2)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let n = u64::from_be_bytes(be);
            if n >> 63 != 0 {
                return Err(ProtocolError::InvalidLength);
            }
            if n <= 0xFFFF {
                return Err(ProtocolError::NonMinimalLength);
            }
            (n, 8)
        }
        n => (u64::from(n), 0),
    };
    if !opcode.is_control() {
        let payload_len = usize::try_from(payload_len).map_err(|_| ProtocolError::FrameTooBig)?;
        if payload_len > limits.max_frame {
            return Err(ProtocolError::FrameTooBig);
        }
        if message_len.unwrap_or(0).saturating_add(payload_len) > limits.max_message {
            return Err(ProtocolError::MessageTooBig);
        }
    }
    let len = 2 + ext + 4;
    let Some(key) = buf.get(2 + ext..len) else {
        return Ok(None);
    };
    let mut mask = [0u8; 4];
    mask.copy_from_slice(key);
    Ok(Some(Header {
        opcode,
        fin,
        mask,
        // Control payloads are <= 125; data payloads were converted and bounded above.
        payload_len: payload_len as usize,
        len,
    }))
}

/// Builds the event for a complete control frame payload (already unmasked).
fn control_event(opcode: OpCode, payload: &[u8]) -> Result<Event<'_>, ProtocolError> {
    match opcode {
        OpCode::Close => parse_close(payload).map(Event::Close),
        OpCode::Ping => Ok(Event::Ping(payload)),
        // Pong: the only other control opcode (callers pass control opcodes only).
        _ => Ok(Event::Pong(payload)),
    }
}

/// Parses a close payload: empty, or a valid status code followed by a UTF-8 reason.
pub fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, ProtocolError> {
    match *payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, ref reason @ ..] => {
            let code = u16::from_be_bytes([hi, lo]);
            if !is_valid_close_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

type EventSink<'s> = dyn FnMut(Event<'_>) -> ControlFlow<()> + 's;

impl Decoder {
    /// A decoder that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            max_frame: clamp(limits.max_frame),
            max_message: clamp(limits.max_message),
            partial: None,
            stash: None,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame: self.max_frame as usize,
            max_message: self.max_message as usize,
        }
    }

    /// Decodes as much of `input` as forms complete frames, unmasking in place, and calls
    /// `on_event` for every complete message and control frame, in order. Partial frames and
    /// partial fragmented messages are kept inside the decoder for the next call. Stops early
    /// and returns Ok when `on_event` returns `ControlFlow::Break(())` (e.g. after Close); the
    /// bytes of `input` after the frame that produced that event are then discarded.
    /// Any protocol violation returns Err; the caller then sends a close frame with
    /// `err.close_code()`. After an error the decoder drops its buffers; feeding it again is
    /// safe but meaningless (the stream is no longer in sync).
    ///
    /// Control frames between the fragments of a message are delivered immediately while the
    /// partial message is kept.
    pub fn feed(
        &mut self,
        input: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<(), ProtocolError> {
        let result = self.feed_inner(input, on_event);
        if result.is_err() {
            self.partial = None;
            self.stash = None;
        }
        result
    }

    /// True when no partial frame or message is held (the connection can be idle with zero heap).
    pub fn is_idle(&self) -> bool {
        self.stash.is_none() && self.partial.is_none()
    }

    /// Heap bytes currently held (capacity of internal buffers, plus their holder).
    pub fn heap_bytes(&self) -> usize {
        let stash = self
            .stash
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<Stash>());
        stash
            + self.partial.as_ref().map_or(0, |p| {
                std::mem::size_of::<Partial>()
                    + p.control.capacity()
                    + p.message.as_ref().map_or(0, Message::capacity)
            })
    }

    fn message_len(&self) -> Option<usize> {
        self.partial
            .as_ref()
            .and_then(|p| p.message.as_ref())
            .map(Message::len)
    }

    fn feed_inner(
        &mut self,
        input: &mut [u8],
        on_event: &mut EventSink<'_>,
    ) -> Result<(), ProtocolError> {
        let mut pos = 0;
        loop {
            // A frame whose payload is still arriving.
            if self.partial.as_ref().is_some_and(|p| p.frame.is_some()) {
                let (consumed, flow) = self.continue_frame(&mut input[pos..], on_event)?;
                pos += consumed;
                match flow {
                    None => return Ok(()), // input exhausted mid-payload
                    Some(ControlFlow::Break(())) => return Ok(()),
                    Some(ControlFlow::Continue(())) => continue,
                }
            }
            if pos == input.len() {
                return Ok(());
            }

            // The next frame header, possibly completing one stashed by an earlier call.
            let message_len = self.message_len();
            let limits = self.limits();
            let header = match self.stash.as_mut() {
                None => {
                    let rest = &input[pos..];
                    match parse_header(rest, message_len, &limits)? {
                        Some(h) => {
                            pos += h.len;
                            h
                        }
                        None => {
                            // A header is at most MAX_HEADER_LEN bytes, so `rest` is shorter.
                            let n = rest.len().min(MAX_HEADER_LEN);
                            if n > 0 {
                                let mut stash = Box::new(Stash {
                                    bytes: [0; MAX_HEADER_LEN],
                                    len: n as u8,
                                });
                                stash.bytes[..n].copy_from_slice(&rest[..n]);
                                self.stash = Some(stash);
                            }
                            pos += n;
                            continue;
                        }
                    }
                }
                Some(stash) => {
                    let have = usize::from(stash.len);
                    let take = (MAX_HEADER_LEN - have).min(input.len() - pos);
                    stash.bytes[have..have + take].copy_from_slice(&input[pos..pos + take]);
                    match parse_header(&stash.bytes[..have + take], message_len, &limits)? {
                        Some(h) => {
                            // The stashed `have` bytes did not form a header, so h.len > have.
                            pos += h.len - have;
                            self.stash = None;
                            h
                        }
                        None => {
                            stash.len = (have + take) as u8;
                            pos += take;
                            continue;
                        }
                    }
                }
            };

            if header.payload_len <= input.len() - pos {
                let payload = &mut input[pos..pos + header.payload_len];
                pos += header.payload_len;
                apply_mask(payload, header.mask, 0);
                if self.complete_frame(header, payload, on_event)?.is_break() {
                    return Ok(());
                }
            } else {
                self.begin_partial_frame(header);
            }
        }
    }

    /// Handles a frame whose whole (unmasked) payload is in the caller's buffer.
    fn complete_frame(
        &mut self,
        header: Header,
        payload: &[u8],
        on_event: &mut EventSink<'_>,
    ) -> Result<ControlFlow<()>, ProtocolError> {
        if header.opcode.is_control() {
            return Ok(on_event(control_event(header.opcode, payload)?));
        }
        if header.opcode != OpCode::Continuation {
            if header.fin {
                // A whole unfragmented message: zero copy.
                let event = match header.opcode {
                    OpCode::Text => Event::Text(
                        std::str::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?,
                    ),
                    _ => Event::Binary(payload),
                };
                return Ok(on_event(event));
            }
            let partial = self.partial.get_or_insert_with(Box::default);
            partial.message = Some(Message::new(header.opcode, payload.len()));
        }
        // parse_header guarantees a message is in progress for Continuation frames.
        if let Some(message) = self.partial.as_mut().and_then(|p| p.message.as_mut()) {
            message.reserve(payload.len());
            message.push(payload)?;
        }
        if header.fin {
            self.finish_message(on_event)
        } else {
            Ok(ControlFlow::Continue(()))
        }
    }

    /// Records a frame whose payload continues beyond the current input.
    fn begin_partial_frame(&mut self, header: Header) {
        // Data buffers grow with the bytes that actually arrive: a header alone must not make
        // the decoder allocate up to `max_frame`.
        let partial = self.partial.get_or_insert_with(Box::default);
        match header.opcode {
            OpCode::Text | OpCode::Binary => {
                partial.message = Some(Message::new(header.opcode, 0));
            }
            OpCode::Continuation => {}
            _ => partial.control = Vec::with_capacity(header.payload_len),
        }
        partial.frame = Some(FrameProgress {
            opcode: header.opcode,
            fin: header.fin,
            mask: header.mask,
            len: header.payload_len,
            received: 0,
        });
    }

    /// Feeds `input` to the frame in progress. Returns the bytes consumed and, if the frame
    /// completed, the flow decision of the event it produced (`Continue` if none).
    fn continue_frame(
        &mut self,
        input: &mut [u8],
        on_event: &mut EventSink<'_>,
    ) -> Result<(usize, Option<ControlFlow<()>>), ProtocolError> {
        let Some(partial) = self.partial.as_mut() else {
            return Ok((0, Some(ControlFlow::Continue(()))));
        };
        let Some(frame) = partial.frame.as_mut() else {
            return Ok((0, Some(ControlFlow::Continue(()))));
        };
        let take = (frame.len - frame.received).min(input.len());
        let chunk = &mut input[..take];
        apply_mask(chunk, frame.mask, frame.received);
        frame.received += take;
        let frame = *frame;
        if frame.opcode.is_control() {
            partial.control.extend_from_slice(chunk);
        } else if let Some(message) = partial.message.as_mut() {
            message.push(chunk)?;
        }
        if frame.received < frame.len {
            return Ok((take, None));
        }
        partial.frame = None;

        if frame.opcode.is_control() {
            let payload = std::mem::take(&mut partial.control);
            if partial.message.is_none() {
                self.partial = None;
            }
            let flow = on_event(control_event(frame.opcode, &payload)?);
            return Ok((take, Some(flow)));
        }
        if frame.fin {
            return Ok((take, Some(self.finish_message(on_event)?)));
        }
        Ok((take, Some(ControlFlow::Continue(()))))
    }

    /// Delivers the assembled message and frees every buffer.
    fn finish_message(
        &mut self,
        on_event: &mut EventSink<'_>,
    ) -> Result<ControlFlow<()>, ProtocolError> {
        // No frame is in progress here, so the whole partial state goes.
        let Some(message) = self.partial.take().and_then(|p| p.message) else {
            return Ok(ControlFlow::Continue(()));
        };
        match message {
            Message::Text(t) => {
                if t.pending_len > 0 {
                    return Err(ProtocolError::InvalidUtf8);
                }
                Ok(on_event(Event::Text(&t.text)))
            }
            Message::Binary(b) => Ok(on_event(Event::Binary(&b))),
        }
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("limits", &self.limits())
            .field("header_stashed", &self.stash.as_ref().map_or(0, |s| s.len))
            .field("message_len", &self.message_len())
            .field("heap_bytes", &self.heap_bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_buf() -> TextBuf {
        TextBuf {
            text: String::new(),
            pending: [0; 4],
            pending_len: 0,
        }
    }

    #[test]
    fn text_buf_accepts_every_split_of_valid_utf8() {
        let s = "aé€😀z\u{10FFFF}";
        let bytes = s.as_bytes();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut t = text_buf();
                t.push(&bytes[..a]).unwrap();
                t.push(&bytes[a..b]).unwrap();
                t.push(&bytes[b..]).unwrap();
                assert_eq!(t.pending_len, 0);
                assert_eq!(t.text, s);
            }
        }
    }

    #[test]
    fn text_buf_rejects_invalid_bytes_as_soon_as_seen() {
        // Lead byte of a 3-byte sequence followed by ASCII.
        let mut t = text_buf();
        t.push(&[0xE2]).unwrap();
        assert_eq!(t.push(b"A"), Err(ProtocolError::InvalidUtf8));
        // Overlong encodings and surrogates are invalid even as prefixes.
        for bad in [
            &[0xC0][..],
            &[0xE0, 0x80],
            &[0xED, 0xA0],
            &[0xF4, 0x90],
            &[0xFF],
        ] {
            let mut t = text_buf();
            assert_eq!(t.push(bad), Err(ProtocolError::InvalidUtf8), "{bad:x?}");
        }
        // A valid prefix stays pending.
        let mut t = text_buf();
        t.push(&[b'a', 0xF0, 0x9F]).unwrap();
        assert_eq!((t.text.as_str(), t.pending_len), ("a", 2));
    }

    #[test]
    fn incomplete_tail() {
        assert_eq!(incomplete_tail_start(b""), 0);
        assert_eq!(incomplete_tail_start(b"abc"), 3);
        assert_eq!(incomplete_tail_start("aé".as_bytes()), 3);
        assert_eq!(incomplete_tail_start(&[b'a', 0xC3]), 1);
        assert_eq!(incomplete_tail_start(&[b'a', 0xF0, 0x9F, 0x98]), 1);
        assert_eq!(incomplete_tail_start("😀".as_bytes()), 4);
    }

    #[test]
    fn header_checks_need_only_the_bytes_they_read() {
        let l = Limits::default();
        // RSV bit set: known from the first two bytes.
        assert_eq!(
            parse_header(&[0xC1, 0x80], None, &l),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(parse_header(&[0x81], None, &l), Ok(None));
        assert_eq!(parse_header(&[0x81, 0xFE, 0x00], None, &l), Ok(None));
        assert_eq!(
            parse_header(&[0x81, 0xFE, 0x00, 0x7D], None, &l),
            Err(ProtocolError::NonMinimalLength)
        );
        let h = parse_header(&[0x82, 0x85, 1, 2, 3, 4], None, &l)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.opcode, h.fin, h.mask, h.payload_len, h.len),
            (OpCode::Binary, true, [1, 2, 3, 4], 5, 6)
        );
    }
}
