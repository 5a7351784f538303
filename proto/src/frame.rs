//! Length-prefixed frames: the envelope of every request and response.
//!
//! Layout (big-endian), [`FRAME_HEADER_LEN`] = 12 bytes of header, then the body:
//!
//! | bytes | field                                                        |
//! |-------|--------------------------------------------------------------|
//! | 0..4  | `u32` length of everything after this field (8 + body)       |
//! | 4..6  | `u16` API key ([`ApiKey`])                                   |
//! | 6..8  | `u16` API version                                            |
//! | 8..12 | `i32` correlation id                                         |
//! | 12..  | body, as the key and version define it                       |
//!
//! A response carries the same header as its request (key, version, correlation id echoed), so a
//! client demultiplexes by correlation id; a stream (stream fetch, metadata watch) sends many
//! responses with the one correlation id of the request that opened it.
//!
//! Invariants and failure modes:
//! - The declared length is checked against the configured maximum as soon as its four bytes
//!   are present, before any byte of the body is buffered: a frame claiming `u32::MAX` bytes is
//!   rejected after 4 bytes and nothing of that size is ever allocated ([`FrameError::TooLarge`],
//!   fatal: the stream cannot be resynchronized, close the connection).
//! - A declared length under 8 cannot hold the header ([`FrameError::TooShort`], fatal).
//! - An unknown API key or an unsupported version is reported only once the whole frame has
//!   arrived, and the frame is consumed, so the connection stays usable: the caller answers
//!   with an error response using the correlation id in the error.
//! - Decoding is independent of how the stream is split: feeding it byte by byte or all at once
//!   yields the same frames and errors.
//! - Buffers only grow with bytes actually fed; a declared length is never reserved up front.

use std::ops::Range;

use bytes::BytesMut;

use crate::api::{ApiKey, Encode, Request, VersionRange};
use crate::codec::EncodeError;
use crate::error_code::ErrorCode;
use crate::ids::{ApiVersion, CorrelationId};

/// Bytes of the frame header, length prefix included.
pub const FRAME_HEADER_LEN: usize = 12;
/// Bytes of the length prefix.
pub const FRAME_LENGTH_PREFIX_LEN: usize = 4;
/// Smallest valid declared length: key, version and correlation id with an empty body.
pub const FRAME_LENGTH_MIN: u32 = (FRAME_HEADER_LEN - FRAME_LENGTH_PREFIX_LEN) as u32;
/// Default maximum declared length: 64 MiB fits the largest produce request a client batches
/// (several 1 MiB batches per partition over many partitions) while bounding a bad peer.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 64 * 1024 * 1024;

/// The decoded header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Which API the body belongs to.
    pub api_key: ApiKey,
    /// Which version of that API's layout the body uses.
    pub api_version: ApiVersion,
    /// Chosen by the requester, echoed by every response to it.
    pub correlation_id: CorrelationId,
}

impl FrameHeader {
    /// The 12 header bytes for a body of `body_len` bytes.
    ///
    /// ```
    /// use sluice_proto::api::{ApiKey, ApiVersion};
    /// use sluice_proto::frame::FrameHeader;
    /// use sluice_proto::ids::CorrelationId;
    ///
    /// let header = FrameHeader {
    ///     api_key: ApiKey::Fetch,
    ///     api_version: ApiVersion(0),
    ///     correlation_id: CorrelationId(7),
    /// };
    /// assert_eq!(header.to_bytes(4).unwrap(), [0, 0, 0, 12, 0, 2, 0, 0, 0, 0, 0, 7]);
    /// ```
    pub fn to_bytes(&self, body_len: usize) -> Result<[u8; FRAME_HEADER_LEN], EncodeError> {
        let declared = body_len
            .checked_add(FRAME_LENGTH_MIN as usize)
            .and_then(|len| u32::try_from(len).ok())
            .ok_or(EncodeError::TooLong {
                field: "frame",
                len: body_len,
                max: u32::MAX as usize,
            })?;
        let mut bytes = [0u8; FRAME_HEADER_LEN];
        bytes[0..4].copy_from_slice(&declared.to_be_bytes());
        bytes[4..6].copy_from_slice(&self.api_key.number().to_be_bytes());
        bytes[6..8].copy_from_slice(&self.api_version.get().to_be_bytes());
        bytes[8..12].copy_from_slice(&self.correlation_id.get().to_be_bytes());
        Ok(bytes)
    }
}

/// Why a frame was rejected. See [`FrameError::is_fatal`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared length is above the configured maximum. Fatal.
    #[error("frame declares {declared} bytes, above the maximum {max}")]
    TooLarge {
        /// The declared length.
        declared: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The declared length cannot hold a frame header. Fatal.
    #[error("frame declares {declared} bytes, below the minimum {FRAME_LENGTH_MIN}")]
    TooShort {
        /// The declared length.
        declared: u32,
    },
    /// The API key is not known to this build. The frame was consumed.
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey {
        /// The raw key number.
        api_key: u16,
        /// The requester's correlation id, for the error response.
        correlation_id: CorrelationId,
        /// Bytes of the whole frame, length prefix included.
        frame_len: usize,
    },
    /// The API is known but not at this version. The frame was consumed.
    #[error("{api_key} version {api_version} is not supported ({supported:?})")]
    UnsupportedVersion {
        /// The key.
        api_key: ApiKey,
        /// The version asked for.
        api_version: ApiVersion,
        /// What this build supports.
        supported: VersionRange,
        /// The requester's correlation id, for the error response.
        correlation_id: CorrelationId,
        /// Bytes of the whole frame, length prefix included.
        frame_len: usize,
    },
}

impl FrameError {
    /// Whether the byte stream is unusable after this error (close the connection). Non-fatal
    /// errors have consumed their frame; the next frame decodes normally.
    pub fn is_fatal(&self) -> bool {
        matches!(self, FrameError::TooLarge { .. } | FrameError::TooShort { .. })
    }

    /// The error code to answer with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::TooShort { .. } => ErrorCode::InvalidRequest,
            FrameError::UnknownApiKey { .. } => ErrorCode::UnknownApiKey,
            FrameError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        }
    }

    /// The correlation id to answer to, when the header was readable.
    pub fn correlation_id(&self) -> Option<CorrelationId> {
        match self {
            FrameError::UnknownApiKey { correlation_id, .. }
            | FrameError::UnsupportedVersion { correlation_id, .. } => Some(*correlation_id),
            FrameError::TooLarge { .. } | FrameError::TooShort { .. } => None,
        }
    }
}

/// A frame header located in a buffer, with the position of its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedFrame {
    /// The header.
    pub header: FrameHeader,
    /// The body's position within the buffer passed to [`decode_header`].
    pub body: Range<usize>,
}

impl LocatedFrame {
    /// Bytes of the whole frame (header and body): where the next frame starts.
    pub fn frame_len(&self) -> usize {
        self.body.end
    }
}

/// Reads the frame at the start of `buffer` without copying: `Ok(None)` until the whole frame
/// is present. For servers that read into their own reusable buffer.
///
/// ```
/// use sluice_proto::frame::{decode_header, FRAME_BYTES_MAX_DEFAULT};
/// let bytes = [0, 0, 0, 10, 0, 3, 0, 0, 0, 0, 0, 9, 0xAB, 0xCD];
/// let frame = decode_header(&bytes, FRAME_BYTES_MAX_DEFAULT).unwrap().unwrap();
/// assert_eq!(&bytes[frame.body.clone()], &[0xAB, 0xCD]);
/// assert!(decode_header(&bytes[..13], FRAME_BYTES_MAX_DEFAULT).unwrap().is_none());
/// ```
pub fn decode_header(
    buffer: &[u8],
    frame_bytes_max: u32,
) -> Result<Option<LocatedFrame>, FrameError> {
    let Some(declared) = declared_length(buffer, frame_bytes_max)? else {
        return Ok(None);
    };
    let frame_len = FRAME_LENGTH_PREFIX_LEN + declared as usize;
    if buffer.len() < frame_len {
        return Ok(None);
    }
    let key_number = u16::from_be_bytes([buffer[4], buffer[5]]);
    let api_version = ApiVersion(u16::from_be_bytes([buffer[6], buffer[7]]));
    let correlation_id =
        CorrelationId(i32::from_be_bytes([buffer[8], buffer[9], buffer[10], buffer[11]]));
    let Some(api_key) = ApiKey::from_number(key_number) else {
        return Err(FrameError::UnknownApiKey { api_key: key_number, correlation_id, frame_len });
    };
    let supported = api_key.versions();
    if !supported.contains(api_version) {
        return Err(FrameError::UnsupportedVersion {
            api_key,
            api_version,
            supported,
            correlation_id,
            frame_len,
        });
    }
    let header = FrameHeader { api_key, api_version, correlation_id };
    Ok(Some(LocatedFrame { header, body: FRAME_HEADER_LEN..frame_len }))
}

/// The declared length, validated, once its four bytes are present.
fn declared_length(buffer: &[u8], frame_bytes_max: u32) -> Result<Option<u32>, FrameError> {
    let Some(prefix) = buffer.get(..FRAME_LENGTH_PREFIX_LEN) else {
        return Ok(None);
    };
    let declared = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if declared > frame_bytes_max {
        return Err(FrameError::TooLarge { declared, max: frame_bytes_max });
    }
    if declared < FRAME_LENGTH_MIN {
        return Err(FrameError::TooShort { declared });
    }
    Ok(Some(declared))
}

/// A whole frame taken out of a [`FrameDecoder`]. The body is owned and mutable, so a server can
/// rewrite produced batches in place before appending them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: FrameHeader,
    /// The body bytes (the header is not included).
    pub body: BytesMut,
}

/// Incremental frame decoder: feed it bytes as they arrive, take whole frames out.
///
/// ```
/// use sluice_proto::frame::{FrameDecoder, FRAME_BYTES_MAX_DEFAULT};
/// let stream = [0, 0, 0, 9, 0, 2, 0, 0, 0, 0, 0, 1, 0x55];
/// let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT);
/// decoder.feed(&stream[..5]);
/// assert!(decoder.next_frame().unwrap().is_none());
/// decoder.feed(&stream[5..]);
/// let frame = decoder.next_frame().unwrap().unwrap();
/// assert_eq!(frame.header.correlation_id.get(), 1);
/// assert_eq!(&frame.body[..], &[0x55]);
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    frame_bytes_max: u32,
    fatal: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder rejecting frames that declare more than `frame_bytes_max` bytes.
    pub fn new(frame_bytes_max: u32) -> Self {
        Self { buffer: BytesMut::new(), frame_bytes_max, fatal: None }
    }

    /// Appends received bytes. After a fatal error the bytes are dropped.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.fatal.is_none() {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// The receive buffer, for reading from a socket straight into it (e.g. with
    /// `bytes::BufMut`) instead of [`Self::feed`]. Append only; consumed bytes are gone.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buffer
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed. A fatal error repeats on
    /// every later call; a non-fatal one has consumed its frame.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(error) = &self.fatal {
            return Err(error.clone());
        }
        match decode_header(&self.buffer, self.frame_bytes_max) {
            Ok(None) => Ok(None),
            Ok(Some(located)) => {
                let mut frame = self.buffer.split_to(located.frame_len());
                let body = frame.split_off(FRAME_HEADER_LEN);
                Ok(Some(Frame { header: located.header, body }))
            }
            Err(error) => {
                match &error {
                    FrameError::UnknownApiKey { frame_len, .. }
                    | FrameError::UnsupportedVersion { frame_len, .. } => {
                        let _consumed = self.buffer.split_to(*frame_len);
                    }
                    FrameError::TooLarge { .. } | FrameError::TooShort { .. } => {
                        self.buffer = BytesMut::new();
                        self.fatal = Some(error.clone());
                    }
                }
                Err(error)
            }
        }
    }
}

/// Position of a frame being written into a `Vec`, returned by [`begin_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a begun frame must be finished to fill its length"]
pub struct FrameStart {
    position: usize,
}

/// Writes a frame header with a placeholder length at the end of `out`; write the body after
/// it, then call [`finish_frame`].
pub fn begin_frame(out: &mut Vec<u8>, header: &FrameHeader) -> FrameStart {
    let position = out.len();
    out.extend_from_slice(&[0; FRAME_LENGTH_PREFIX_LEN]);
    out.extend_from_slice(&header.api_key.number().to_be_bytes());
    out.extend_from_slice(&header.api_version.get().to_be_bytes());
    out.extend_from_slice(&header.correlation_id.get().to_be_bytes());
    FrameStart { position }
}

/// Fills the length of a frame begun with [`begin_frame`]. `spliced_len` counts body bytes the
/// caller sends after the buffer's bytes without putting them in `out` (records spliced from a
/// file). Returns the whole frame's length on the wire.
pub fn finish_frame(
    out: &mut [u8],
    start: FrameStart,
    spliced_len: usize,
) -> Result<usize, EncodeError> {
    let written = out.len() - start.position;
    let declared_len = (written - FRAME_LENGTH_PREFIX_LEN).saturating_add(spliced_len);
    let declared = u32::try_from(declared_len).map_err(|_| EncodeError::TooLong {
        field: "frame",
        len: declared_len,
        max: u32::MAX as usize,
    })?;
    out[start.position..start.position + FRAME_LENGTH_PREFIX_LEN]
        .copy_from_slice(&declared.to_be_bytes());
    Ok(FRAME_LENGTH_PREFIX_LEN + declared_len)
}

/// Appends a whole frame: header, then `message` encoded at the header's version.
pub fn encode_frame<M: Encode + ?Sized>(
    out: &mut Vec<u8>,
    header: &FrameHeader,
    message: &M,
) -> Result<(), EncodeError> {
    let rollback = out.len();
    let start = begin_frame(out, header);
    let result = message.encode(header.api_version, out).and_then(|()| finish_frame(out, start, 0));
    if let Err(error) = result {
        out.truncate(rollback);
        return Err(error);
    }
    Ok(())
}

/// Appends a request frame, taking the API key from the request type.
///
/// ```
/// use sluice_proto::api::{ApiVersion, api_versions::ApiVersionsRequest};
/// use sluice_proto::frame::{encode_request, FrameDecoder, FRAME_BYTES_MAX_DEFAULT};
/// use sluice_proto::ids::CorrelationId;
///
/// let mut out = Vec::new();
/// encode_request(&mut out, ApiVersion(0), CorrelationId(5), &ApiVersionsRequest).unwrap();
/// let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT);
/// decoder.feed(&out);
/// let frame = decoder.next_frame().unwrap().unwrap();
/// assert_eq!(frame.header.correlation_id, CorrelationId(5));
/// ```
pub fn encode_request<R: Request + ?Sized>(
    out: &mut Vec<u8>,
    api_version: ApiVersion,
    correlation_id: CorrelationId,
    request: &R,
) -> Result<(), EncodeError> {
    let header = FrameHeader { api_key: R::API_KEY, api_version, correlation_id };
    encode_frame(out, &header, request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(key: ApiKey) -> FrameHeader {
        FrameHeader { api_key: key, api_version: ApiVersion(0), correlation_id: CorrelationId(3) }
    }

    #[test]
    fn oversize_is_rejected_after_four_bytes() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.feed(&[0xff, 0xff, 0xff]);
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.feed(&[0xff]);
        let error = decoder.next_frame().unwrap_err();
        assert_eq!(error, FrameError::TooLarge { declared: u32::MAX, max: 1024 });
        assert!(error.is_fatal());
        assert!(decoder.buffer.capacity() < 1024);
        decoder.feed(&[0; 100]);
        assert_eq!(decoder.next_frame().unwrap_err(), error);
    }

    #[test]
    fn unknown_key_consumes_frame() {
        let mut out = Vec::new();
        out.extend_from_slice(&[0, 0, 0, 9, 0x7f, 0x7f, 0, 0, 0, 0, 0, 4, 1]);
        encode_frame(&mut out, &header(ApiKey::Fetch), &crate::api::NoResponse).unwrap();
        let mut decoder = FrameDecoder::new(1024);
        decoder.feed(&out);
        let error = decoder.next_frame().unwrap_err();
        assert_eq!(error.correlation_id(), Some(CorrelationId(4)));
        assert_eq!(error.error_code(), ErrorCode::UnknownApiKey);
        assert!(!error.is_fatal());
        assert_eq!(decoder.next_frame().unwrap().unwrap().header, header(ApiKey::Fetch));
        assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn spliced_bytes_count_in_length() {
        let mut out = vec![0xee];
        let start = begin_frame(&mut out, &header(ApiKey::Fetch));
        out.push(1);
        assert_eq!(finish_frame(&mut out, start, 100).unwrap(), 12 + 1 + 100);
        assert_eq!(&out[1..5], &(8u32 + 1 + 100).to_be_bytes());
    }
}
