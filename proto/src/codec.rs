//! Big-endian binary encoding shared by the data-plane messages, and the encode/decode error
//! types shared by every message.
//!
//! Layout conventions (all integers big-endian, no padding):
//!
//! | type            | encoding                                            |
//! |-----------------|-----------------------------------------------------|
//! | `u8`..`i64`     | fixed width, two's complement for signed            |
//! | string          | `u16` byte length, then UTF-8 bytes                 |
//! | bytes           | `u32` byte length, then the bytes                   |
//! | array           | `u32` element count, then the elements              |
//! | optional offset | `i64`, `-1` for none                                |
//!
//! Invariants the [`Reader`] keeps for hostile input:
//! - it never reads past the end of its slice: every short read is [`DecodeError::Truncated`];
//! - a declared element count is checked against the bytes that remain (each element needs at
//!   least `element_bytes_min` bytes) before anything is allocated, so a count of `2^31` in a
//!   ten-byte body fails at once instead of reserving gigabytes;
//! - a message must consume its whole body ([`Reader::finish`]); trailing bytes are an error.

use std::ops::Range;

use crate::ids::ApiVersion;

/// Why a message body could not be decoded. Never retriable as is: the same bytes fail again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body ended before `field` was complete.
    #[error("truncated while reading {field}: need {needed} bytes, {remaining} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the body.
        remaining: usize,
    },
    /// A field holds a value outside its allowed set.
    #[error("invalid value {value} for {field}")]
    InvalidValue {
        /// The field being read.
        field: &'static str,
        /// The value found, as a number.
        value: i64,
    },
    /// A string field is not UTF-8, or a name fails validation.
    #[error("invalid string in {field}: {reason}")]
    InvalidString {
        /// The field being read.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is longer than its message.
    #[error("{count} trailing bytes after the message")]
    TrailingBytes {
        /// Bytes left over.
        count: usize,
    },
    /// This crate has no decoder for the version (the frame decoder normally rejects it first).
    #[error("unsupported version {version} for this message")]
    UnsupportedVersion {
        /// The version asked for.
        version: ApiVersion,
    },
    /// A postcard-encoded (control-plane) body failed to deserialize.
    #[error("control-plane body does not decode: {reason}")]
    Postcard {
        /// postcard's description of the failure.
        reason: String,
    },
}

impl DecodeError {
    /// The error code a server answers with: `UnsupportedVersion` or `InvalidRequest`.
    pub fn error_code(&self) -> crate::error_code::ErrorCode {
        match self {
            DecodeError::UnsupportedVersion { .. } => {
                crate::error_code::ErrorCode::UnsupportedVersion
            }
            _ => crate::error_code::ErrorCode::InvalidRequest,
        }
    }

    /// Always false: the same bytes fail the same way.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

/// Why a message could not be encoded. These are caller bugs or limits, never network faults.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field is longer than its length prefix can express.
    #[error("{field} is {len} long, above the maximum {max}")]
    TooLong {
        /// The field being written.
        field: &'static str,
        /// Its length (bytes or elements).
        len: usize,
        /// The largest length the encoding allows.
        max: usize,
    },
    /// This crate has no encoder for the version.
    #[error("unsupported version {version} for this message")]
    UnsupportedVersion {
        /// The version asked for.
        version: ApiVersion,
    },
    /// postcard refused to serialize a control-plane body.
    #[error("control-plane body does not encode: {reason}")]
    Postcard {
        /// postcard's description of the failure.
        reason: String,
    },
}

/// A cursor over a message body that never reads past its end.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    body: &'a [u8],
    position: usize,
}

macro_rules! read_int {
    ($(#[$meta:meta])* $name:ident, $ty:ty) => {
        $(#[$meta])*
        #[inline]
        pub fn $name(&mut self, field: &'static str) -> Result<$ty, DecodeError> {
            const WIDTH: usize = std::mem::size_of::<$ty>();
            let bytes = self.bytes(WIDTH, field)?;
            let mut array = [0u8; WIDTH];
            array.copy_from_slice(bytes);
            Ok(<$ty>::from_be_bytes(array))
        }
    };
}

impl<'a> Reader<'a> {
    /// A reader at the start of `body`.
    pub fn new(body: &'a [u8]) -> Self {
        Self { body, position: 0 }
    }

    /// Bytes consumed so far; also the position of the next field within the body.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.body.len() - self.position
    }

    /// The next `len` bytes, borrowed from the body.
    pub fn bytes(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let range = self.range(len, field)?;
        Ok(&self.body[range])
    }

    /// Skips the next `len` bytes and returns their position within the body.
    pub fn range(&mut self, len: usize, field: &'static str) -> Result<Range<usize>, DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated { field, needed: len, remaining: self.remaining() });
        }
        let start = self.position;
        self.position += len;
        Ok(start..self.position)
    }

    read_int!(
        /// A `u8`.
        u8, u8
    );
    read_int!(
        /// A big-endian `u16`.
        u16, u16
    );
    read_int!(
        /// A big-endian `i16`.
        i16, i16
    );
    read_int!(
        /// A big-endian `u32`.
        u32, u32
    );
    read_int!(
        /// A big-endian `i32`.
        i32, i32
    );
    read_int!(
        /// A big-endian `u64`.
        u64, u64
    );
    read_int!(
        /// A big-endian `i64`.
        i64, i64
    );

    /// A `u16`-length-prefixed UTF-8 string, borrowed.
    pub fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u16(field)? as usize;
        let bytes = self.bytes(len, field)?;
        std::str::from_utf8(bytes)
            .map_err(|error| DecodeError::InvalidString { field, reason: error.to_string() })
    }

    /// A `u32` byte length followed by that many bytes; returns their position in the body.
    pub fn length_prefixed_range(
        &mut self,
        field: &'static str,
    ) -> Result<Range<usize>, DecodeError> {
        let len = self.u32(field)? as usize;
        self.range(len, field)
    }

    /// A `u32` element count, checked so that `count * element_bytes_min` bytes remain. The
    /// result is therefore a safe capacity to preallocate.
    pub fn count(
        &mut self,
        element_bytes_min: usize,
        field: &'static str,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(field)? as usize;
        let needed = count.saturating_mul(element_bytes_min.max(1));
        if needed > self.remaining() {
            return Err(DecodeError::Truncated { field, needed, remaining: self.remaining() });
        }
        Ok(count)
    }

    /// Ends decoding: every byte of the body must have been consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

/// Appends a `u16`-length-prefixed string.
pub fn put_str(out: &mut Vec<u8>, value: &str, field: &'static str) -> Result<(), EncodeError> {
    let len = u16::try_from(value.len()).map_err(|_| EncodeError::TooLong {
        field,
        len: value.len(),
        max: u16::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// Converts a length or count to its `u32` prefix.
pub fn u32_len(len: usize, field: &'static str) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::TooLong { field, len, max: u32::MAX as usize })
}

/// Appends a `u32` element count.
pub fn put_count(out: &mut Vec<u8>, count: usize, field: &'static str) -> Result<(), EncodeError> {
    out.extend_from_slice(&u32_len(count, field)?.to_be_bytes());
    Ok(())
}

/// Appends a `u32`-length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, value: &[u8], field: &'static str) -> Result<(), EncodeError> {
    put_count(out, value.len(), field)?;
    out.extend_from_slice(value);
    Ok(())
}

/// Serializes a control-plane body with postcard, appending to `out`.
pub fn put_postcard<T: serde::Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), EncodeError> {
    let taken = std::mem::take(out);
    match postcard::to_extend(value, taken) {
        Ok(extended) => {
            *out = extended;
            Ok(())
        }
        Err(error) => Err(EncodeError::Postcard { reason: error.to_string() }),
    }
}

/// Deserializes a whole control-plane body with postcard; trailing bytes are an error.
pub fn take_postcard<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(body)
        .map_err(|error| DecodeError::Postcard { reason: error.to_string() })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_count_fails_before_allocation() {
        let mut body = Vec::new();
        body.extend_from_slice(&(1u32 << 31).to_be_bytes());
        body.extend_from_slice(&[0; 10]);
        let mut reader = Reader::new(&body);
        assert!(matches!(reader.count(8, "items"), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn reads_big_endian_and_rejects_trailing_bytes() {
        let body = [0x01, 0x02, 0xff, 0xff, 0xff, 0xfe, 9];
        let mut reader = Reader::new(&body);
        assert_eq!(reader.u16("a").unwrap(), 0x0102);
        assert_eq!(reader.i32("b").unwrap(), -2);
        assert_eq!(reader.clone().finish(), Err(DecodeError::TrailingBytes { count: 1 }));
        assert_eq!(reader.u8("c").unwrap(), 9);
        assert!(reader.u8("d").is_err());
        reader.finish().unwrap();
    }

    #[test]
    fn postcard_rejects_trailing_bytes() {
        let mut out = Vec::new();
        put_postcard(&mut out, &(7u32, String::from("x"))).unwrap();
        out.push(0);
        assert!(take_postcard::<(u32, String)>(&out).is_err());
    }
}
