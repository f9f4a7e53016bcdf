//! RFC 6455 framing, just what the stream needs. Server frames are unmasked, so a frame's bytes
//! are the same for every subscriber: they are encoded once and shared. Client frames are
//! masked, small, and decoded incrementally.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// A final, unmasked frame.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    encode_first(0x80 | opcode, payload)
}

/// A final, unmasked frame whose payload is permessage-deflate data (RSV1 set, RFC 7692 §6).
pub fn encode_compressed(opcode: u8, deflated: &[u8]) -> Bytes {
    encode_first(0x80 | 0x40 | opcode, deflated)
}

fn encode_first(first: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(first);
    match payload.len() {
        len @ 0..=125 => out.put_u8(len as u8),
        len @ 126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        len => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

pub fn text(payload: &[u8]) -> Bytes {
    encode(opcode::TEXT, payload)
}

pub fn close(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode(opcode::CLOSE, &payload)
}

/// A close frame with no body (RFC 6455 §5.5.1: the code is optional).
pub fn close_empty() -> Bytes {
    encode(opcode::CLOSE, b"")
}

/// Close codes a peer may send (RFC 6455 §7.4; 1004–1006 and 1015 are reserved, never sent).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a close frame's body (RFC 6455 §5.5.1): empty, or a valid code plus a UTF-8
/// reason. Returns the peer's code, to be echoed.
pub fn close_payload(payload: &[u8]) -> Result<Option<u16>, DecodeError> {
    match payload {
        [] => Ok(None),
        [_] => Err(DecodeError::Protocol("close frame with a 1-byte body")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_close_code(code) {
                return Err(DecodeError::Protocol("invalid close code"));
            }
            std::str::from_utf8(reason).map_err(|_| DecodeError::BadUtf8)?;
            Ok(Some(code))
        }
    }
}

/// A complete message from the client.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Text(String),
    Ping(Bytes),
    Pong,
    /// A valid close, with the peer's code (none for an empty body).
    Close(Option<u16>),
}

/// Why a client's bytes cannot be accepted, with the close code to answer.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message over the size limit")]
    TooBig,
    #[error("text is not UTF-8")]
    BadUtf8,
    #[error("binary frames are not supported")]
    Binary,
    /// A compressed message (RFC 7692) that does not inflate.
    #[error("compressed data is not valid deflate")]
    BadDeflate,
}

impl DecodeError {
    /// The close reason sent to the client.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Protocol(reason) => reason,
            Self::TooBig => "message over 4 KiB",
            Self::BadUtf8 => "text is not UTF-8",
            Self::Binary => "binary frames are not supported",
            Self::BadDeflate => "compressed data is not valid deflate",
        }
    }

    pub fn close_code(&self) -> u16 {
        match self {
            Self::Protocol(_) => 1002,
            Self::TooBig => 1009,
            Self::BadUtf8 => 1007,
            Self::Binary => 1003,
            // RFC 7692 names no code; 1007 is RFC 6455's for data inconsistent with its type.
            Self::BadDeflate => 1007,
        }
    }
}

/// Incremental decoder of masked client frames, assembling fragmented text messages.
pub struct Decoder {
    buf: BytesMut,
    /// Frames decoded so far (fragments and control frames included): the reader's budget
    /// counts frames, not messages, so a flood of tiny fragments costs the same as pings.
    frames: u64,
    /// Text message being assembled from fragments.
    partial: Option<Vec<u8>>,
    /// The message being assembled had RSV1 on its first frame: inflate it when complete.
    partial_compressed: bool,
    /// permessage-deflate was negotiated: RSV1 may start a data message.
    inflate: bool,
    max_message: usize,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            frames: 0,
            partial: None,
            partial_compressed: false,
            inflate: false,
            max_message,
        }
    }

    /// Accepts compressed messages (permessage-deflate negotiated); see [`super::deflate`].
    pub fn inflating(mut self, inflate: bool) -> Self {
        self.inflate = inflate;
        self
    }

    /// Room to read into; allocated only while a client is actually sending.
    pub fn buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(1024);
        }
        &mut self.buf
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Drops the read buffer's memory when it is empty (an idle connection keeps none).
    pub fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// The next complete message, `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, DecodeError> {
        loop {
            let Some((fin, rsv1, op, payload)) = self.next_frame()? else {
                return Ok(None);
            };
            if rsv1 && op != opcode::TEXT {
                // RFC 7692 §6: RSV1 only on the first frame of a data message.
                return Err(DecodeError::Protocol(
                    "RSV1 on a control or continuation frame",
                ));
            }
            match op {
                opcode::PING => return Ok(Some(Incoming::Ping(payload))),
                opcode::PONG => return Ok(Some(Incoming::Pong)),
                opcode::CLOSE => return close_payload(&payload).map(|c| Some(Incoming::Close(c))),
                opcode::TEXT if self.partial.is_some() => {
                    return Err(DecodeError::Protocol("new message inside a fragmented one"));
                }
                opcode::TEXT if fin => return self.finish(payload.to_vec(), rsv1).map(Some),
                opcode::TEXT => {
                    self.partial = Some(payload.to_vec());
                    self.partial_compressed = rsv1;
                }
                opcode::CONTINUATION => {
                    let partial = self
                        .partial
                        .as_mut()
                        .ok_or(DecodeError::Protocol("continuation without a message"))?;
                    if partial.len() + payload.len() > self.max_message {
                        return Err(DecodeError::TooBig);
                    }
                    partial.extend_from_slice(&payload);
                    if fin {
                        let message = self.partial.take().unwrap_or_default();
                        let compressed = std::mem::take(&mut self.partial_compressed);
                        return self.finish(message, compressed).map(Some);
                    }
                }
                _ => return Err(DecodeError::Protocol("reserved opcode")),
            }
        }
    }

    /// A complete text message: inflated (bounded by the message cap) if compressed.
    fn finish(&self, message: Vec<u8>, compressed: bool) -> Result<Incoming, DecodeError> {
        if compressed {
            Self::utf8(super::deflate::inflate(&message, self.max_message)?)
        } else {
            Self::utf8(message)
        }
    }

    fn utf8(bytes: Vec<u8>) -> Result<Incoming, DecodeError> {
        String::from_utf8(bytes)
            .map(Incoming::Text)
            .map_err(|_| DecodeError::BadUtf8)
    }

    /// The next frame: FIN, RSV1, opcode, unmasked payload.
    fn next_frame(&mut self) -> Result<Option<(bool, bool, u8, Bytes)>, DecodeError> {
        let buf = &self.buf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let (fin, rsv1, op) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0F);
        // RSV1 means compressed only when permessage-deflate was negotiated; RSV2/3 never.
        if b0 & 0x30 != 0 || (rsv1 && !self.inflate) {
            return Err(DecodeError::Protocol("reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(DecodeError::Protocol("client frames must be masked"));
        }
        let is_control = op & 0x8 != 0;
        let (len, header) = match b1 & 0x7F {
            126 if buf.len() < 4 => return Ok(None),
            126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() < 10 => return Ok(None),
            127 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap_or_default()),
                10,
            ),
            n => (u64::from(n), 2),
        };
        if is_control && (!fin || len > 125) {
            return Err(DecodeError::Protocol("bad control frame"));
        }
        // Refused before buffering: such payloads are never read.
        if op == opcode::BINARY {
            return Err(DecodeError::Binary);
        }
        if len > self.max_message as u64 {
            return Err(DecodeError::TooBig);
        }
        let total = header + 4 + len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        let mask = [
            buf[header],
            buf[header + 1],
            buf[header + 2],
            buf[header + 3],
        ];
        self.frames += 1;
        self.buf.advance(header + 4);
        let mut payload = self.buf.split_to(len as usize);
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        Ok(Some((fin, rsv1, op, payload.freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_all(bytes: &[u8]) -> Vec<Result<Incoming, DecodeError>> {
        let mut d = Decoder::new(4096);
        let mut out = Vec::new();
        // Byte by byte: the decoder must cope with any split.
        for b in bytes {
            d.buffer().put_u8(*b);
            loop {
                match d.next_message() {
                    Ok(Some(m)) => out.push(Ok(m)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn encodes_all_length_forms() {
        assert_eq!(&text(b"hi")[..], b"\x81\x02hi");
        let medium = text(&[b'a'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 0x01, 0x2C]);
        let large = text(&vec![b'a'; 70_000]);
        assert_eq!(&large[..2], &[0x81, 127]);
        assert_eq!(large.len(), 70_010);
        assert_eq!(&close(1001, "bye")[..], b"\x88\x05\x03\xe9bye");
    }

    #[test]
    fn decodes_masked_text_fragments_and_control_frames() {
        let mut bytes = masked(0x01, b"{\"op\":");
        bytes.extend(masked(0x89, b"p")); // a ping between fragments
        bytes.extend(masked(0x80, b"\"ping\"}"));
        bytes.extend(masked(0x8A, b""));
        bytes.extend(masked(0x88, &1000u16.to_be_bytes()));
        let got: Vec<_> = decode_all(&bytes).into_iter().map(Result::unwrap).collect();
        assert_eq!(
            got,
            [
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Text("{\"op\":\"ping\"}".into()),
                Incoming::Pong,
                Incoming::Close(Some(1000))
            ]
        );
    }

    #[test]
    fn rejects_what_the_protocol_or_our_limits_forbid() {
        let unmasked = b"\x81\x02hi".to_vec();
        assert_eq!(
            decode_all(&unmasked).pop(),
            Some(Err(DecodeError::Protocol("client frames must be masked")))
        );
        assert_eq!(
            decode_all(&masked(0x81, &[b'a'; 5000])).pop(),
            Some(Err(DecodeError::TooBig))
        );
        assert_eq!(
            decode_all(&masked(0x81, &[0xFF, 0xFE])).pop(),
            Some(Err(DecodeError::BadUtf8))
        );
        assert_eq!(
            decode_all(&masked(0x82, b"bin")).pop(),
            Some(Err(DecodeError::Binary))
        );
        assert_eq!(
            decode_all(&masked(0xC1, b"x")).pop(),
            Some(Err(DecodeError::Protocol("reserved bits set")))
        );
        assert_eq!(
            decode_all(&masked(0x80, b"x")).pop(),
            Some(Err(DecodeError::Protocol("continuation without a message")))
        );
        assert_eq!(
            decode_all(&masked(0x09, b"x")).pop(),
            Some(Err(DecodeError::Protocol("bad control frame")))
        );
        let mut two_big_fragments = masked(0x01, &[b'a'; 3000]);
        two_big_fragments.extend(masked(0x80, &[b'a'; 3000]));
        assert_eq!(
            decode_all(&two_big_fragments).pop(),
            Some(Err(DecodeError::TooBig))
        );
    }
}

/// Issue 12, point 7: the decoder over arbitrary bytes and chunkings.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A masked client frame with an explicit mask, in the shortest length form.
    fn masked_with(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Feeds `bytes` in chunks of the given sizes; collects messages up to the first error.
    fn decode_chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Result<Incoming, DecodeError>> {
        let mut d = Decoder::new(4096);
        let mut out = Vec::new();
        let mut at = 0;
        let mut cuts = cuts.iter().cycle();
        while at < bytes.len() {
            let n = (*cuts.next().unwrap_or(&1)).clamp(1, bytes.len() - at);
            d.buffer().extend_from_slice(&bytes[at..at + n]);
            at += n;
            loop {
                match d.next_message() {
                    Ok(Some(m)) => out.push(Ok(m)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
            d.shrink();
        }
        out
    }

    /// A client message: text (maybe fragmented), ping, pong or close.
    fn message() -> impl Strategy<Value = (Vec<u8>, Incoming)> {
        let mask = any::<[u8; 4]>();
        prop_oneof![
            ("[ -~]{0,300}", 1usize..4, mask).prop_map(|(text, parts, mask)| {
                let bytes = text.as_bytes();
                let size = bytes.len().div_ceil(parts).max(1);
                let chunks: Vec<&[u8]> = if bytes.is_empty() {
                    vec![&[][..]]
                } else {
                    bytes.chunks(size).collect()
                };
                let mut wire = Vec::new();
                for (i, chunk) in chunks.iter().enumerate() {
                    let op = if i == 0 {
                        opcode::TEXT
                    } else {
                        opcode::CONTINUATION
                    };
                    let fin = if i + 1 == chunks.len() { 0x80 } else { 0 };
                    wire.extend(masked_with(fin | op, chunk, mask));
                }
                (wire, Incoming::Text(text))
            }),
            (proptest::collection::vec(any::<u8>(), 0..=125), mask).prop_map(|(payload, mask)| (
                masked_with(0x80 | opcode::PING, &payload, mask),
                Incoming::Ping(Bytes::from(payload))
            )),
            mask.prop_map(|mask| (masked_with(0x8A, b"", mask), Incoming::Pong)),
            (1000u16..=1003, "[a-z]{0,20}", mask).prop_map(|(code, reason, mask)| {
                let mut body = code.to_be_bytes().to_vec();
                body.extend_from_slice(reason.as_bytes());
                (masked_with(0x88, &body, mask), Incoming::Close(Some(code)))
            }),
        ]
    }

    /// One change to a valid single-frame message that makes it invalid, and the error the
    /// decoder must answer it with.
    #[derive(Debug, Clone, Copy)]
    enum Breakage {
        /// RSV1, RSV2 or RSV3 set.
        Reserved(u8),
        /// The mask bit cleared (and the mask dropped): a client frame must be masked.
        Unmasked,
        /// A reserved data (0x3–0x7) or control (0xB–0xF) opcode.
        Opcode(u8),
        /// A control frame without FIN.
        FragmentedControl,
        /// A control frame with more than 125 bytes (the 16-bit length form).
        LongControl,
        /// Binary frames are refused.
        Binary,
        /// A text payload over the size limit (4096 here).
        TooBig,
        /// A continuation with no message to continue.
        LoneContinuation,
        /// Text that is not UTF-8.
        BadUtf8,
        /// A close code no peer may send.
        CloseCode(u16),
    }

    fn breakage() -> impl Strategy<Value = Breakage> {
        prop_oneof![
            (1u8..8).prop_map(|rsv| Breakage::Reserved(rsv << 4)),
            Just(Breakage::Unmasked),
            prop_oneof![3u8..=7, 0xBu8..=0xF].prop_map(Breakage::Opcode),
            Just(Breakage::FragmentedControl),
            Just(Breakage::LongControl),
            Just(Breakage::Binary),
            Just(Breakage::TooBig),
            Just(Breakage::LoneContinuation),
            Just(Breakage::BadUtf8),
            prop_oneof![
                0u16..1000,
                1004u16..=1006,
                1015u16..3000,
                5000u16..=u16::MAX
            ]
            .prop_map(Breakage::CloseCode),
        ]
    }

    /// The broken frame's bytes and the error it must decode to.
    fn broken(b: Breakage, mask: [u8; 4]) -> (Vec<u8>, DecodeError) {
        let protocol = DecodeError::Protocol;
        match b {
            Breakage::Reserved(bits) => (
                masked_with(0x81 | bits, b"{}", mask),
                protocol("reserved bits set"),
            ),
            Breakage::Unmasked => (
                b"\x81\x02{}".to_vec(),
                protocol("client frames must be masked"),
            ),
            Breakage::Opcode(op) => (
                masked_with(0x80 | op, b"", mask),
                protocol("reserved opcode"),
            ),
            Breakage::FragmentedControl => (
                masked_with(opcode::PING, b"p", mask),
                protocol("bad control frame"),
            ),
            Breakage::LongControl => (
                masked_with(0x80 | opcode::PING, &[b'p'; 126], mask),
                protocol("bad control frame"),
            ),
            Breakage::Binary => (masked_with(0x82, b"bin", mask), DecodeError::Binary),
            Breakage::TooBig => (masked_with(0x81, &[b'a'; 4097], mask), DecodeError::TooBig),
            Breakage::LoneContinuation => (
                masked_with(0x80, b"x", mask),
                protocol("continuation without a message"),
            ),
            Breakage::BadUtf8 => (masked_with(0x81, &[0xC3, 0x28], mask), DecodeError::BadUtf8),
            Breakage::CloseCode(code) => (
                masked_with(0x88, &code.to_be_bytes(), mask),
                protocol("invalid close code"),
            ),
        }
    }

    proptest! {
        /// Whatever the bytes, how they are split does not change what is decoded: the same
        /// messages, then the same error (or none), never a panic; every error carries one of
        /// the close codes docs/protocol.md lists.
        #[test]
        fn arbitrary_bytes_decode_the_same_however_they_are_split(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let whole = decode_chunked(&bytes, &[bytes.len().max(1)]);
            prop_assert_eq!(&decode_chunked(&bytes, &cuts), &whole);
            if let Some(Err(e)) = whole.last() {
                prop_assert!([1002, 1003, 1007, 1009].contains(&e.close_code()), "{:?}", e);
            }
        }

        /// Valid messages, then one frame broken in one way: the valid ones decode, then the
        /// decoder answers with exactly the error the breakage calls for.
        #[test]
        fn a_broken_frame_after_valid_ones_gets_the_right_error(
            messages in proptest::collection::vec(message(), 0..4),
            b in breakage(),
            mask in any::<[u8; 4]>(),
            cuts in proptest::collection::vec(1usize..40, 1..6),
        ) {
            let mut wire: Vec<u8> = messages.iter().flat_map(|(w, _)| w.clone()).collect();
            let (bad, error) = broken(b, mask);
            wire.extend(bad);
            let mut expected: Vec<_> = messages.into_iter().map(|(_, m)| Ok(m)).collect();
            expected.push(Err(error));
            prop_assert_eq!(&decode_chunked(&wire, &cuts), &expected, "{:?}", b);
        }

        #[test]
        fn valid_masked_frames_split_anywhere_decode_the_same(
            messages in proptest::collection::vec(message(), 1..6),
            cuts in proptest::collection::vec(1usize..40, 1..6),
        ) {
            let wire: Vec<u8> = messages.iter().flat_map(|(w, _)| w.clone()).collect();
            let expected: Vec<_> = messages.into_iter().map(|(_, m)| Ok(m)).collect();
            prop_assert_eq!(&decode_chunked(&wire, &[wire.len()]), &expected);
            prop_assert_eq!(&decode_chunked(&wire, &cuts), &expected);
        }

        #[test]
        fn close_payloads_are_judged_without_panicking(
            body in proptest::collection::vec(any::<u8>(), 0..125),
        ) {
            match close_payload(&body) {
                Ok(None) => prop_assert!(body.is_empty()),
                Ok(Some(code)) => {
                    prop_assert!(valid_close_code(code));
                    prop_assert!(std::str::from_utf8(&body[2..]).is_ok());
                }
                Err(DecodeError::Protocol(_)) => prop_assert!(
                    body.len() == 1 || !valid_close_code(u16::from_be_bytes([body[0], body[1]]))
                ),
                Err(DecodeError::BadUtf8) => prop_assert!(std::str::from_utf8(&body[2..]).is_err()),
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}
