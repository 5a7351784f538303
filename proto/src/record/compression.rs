//! Record compression codecs, as Kafka clients write them in a v2 batch.
//!
//! In a compressed batch the 61-byte header stays in the clear and everything after it (the
//! concatenated records) is one compressed stream. The CRC covers the *compressed* bytes. The
//! codec is attribute bits 0-2: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
//!
//! Wire details that interoperability depends on (checked against kafka-python's
//! `kafka/codec.py` and Kafka's Java client):
//!
//! - **gzip**: an RFC 1952 stream; readers accept several concatenated members.
//! - **snappy**: the *xerial* block framing, also for magic 2: a 16-byte header
//!   (`0x82 "SNAPPY" 0x00`, version 1, compatible version 1, both big-endian i32), then blocks
//!   of a big-endian i32 length and a raw snappy block, each holding at most 32 KiB of input.
//!   Readers also accept a bare raw snappy block (kafka-python does too).
//! - **lz4**: the standard LZ4 frame format with independent 64 KiB blocks and no checksums
//!   besides the header checksum (what Kafka's Java client writes; block-linked frames are read
//!   too).
//! - **zstd**: a standard zstd frame; readers accept concatenated frames.
//!
//! Only the [`Compression`] enum is always compiled; the codecs themselves need the
//! `compression` feature (the SPU stores batches as produced and never needs them).
//!
//! Decompression is always bounded: the caller names the most output bytes it accepts and a
//! batch that would inflate past it fails with [`BatchError::DecompressedTooLarge`] before
//! more than that bound (plus one read buffer) is held.

use super::header::BatchError;

/// Mask of the compression bits in the batch attributes.
pub const COMPRESSION_MASK: i16 = 0x07;

/// A batch's compression codec (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Records stored as is.
    #[default]
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// snappy with xerial framing.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// zstd frame format.
    Zstd,
}

impl Compression {
    /// Every codec, in code order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec named by a batch's attributes.
    pub fn from_attributes(attributes: i16) -> Result<Compression, BatchError> {
        match attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnknownCompression(other as u8)),
        }
    }

    /// The attribute bits of this codec.
    pub const fn code(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Lower-case name as Kafka configuration spells it (`none`, `gzip`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[cfg(feature = "compression")]
pub(crate) use codecs::{compress, decompress};

#[cfg(feature = "compression")]
mod codecs {
    use super::{BatchError, Compression};
    use std::io::{Read, Write};

    /// xerial snappy stream header: marker, "SNAPPY", NUL, version 1, compatible version 1.
    const XERIAL_HEADER: [u8; 16] =
        [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1];
    /// Bytes of the xerial header compared when detecting the framing (version fields are
    /// ignored, as kafka-python does, because some writers get their byte order wrong).
    const XERIAL_MAGIC_LEN: usize = 8;
    /// Uncompressed bytes per xerial block, the xerial library's default that Kafka uses.
    const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
    /// zstd level used by Kafka's Java client by default.
    const ZSTD_LEVEL: i32 = 3;

    fn codec_error(codec: Compression, error: impl std::fmt::Display) -> BatchError {
        BatchError::Compression(format!("{}: {error}", codec.name()))
    }

    /// Appends `input` compressed with `codec` to `out`.
    pub(crate) fn compress(
        codec: Compression,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), BatchError> {
        let result = match codec {
            Compression::None => {
                out.extend_from_slice(input);
                Ok(())
            }
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(out, flate2::Compression::default());
                encoder.write_all(input).and_then(|()| encoder.finish().map(drop))
            }
            Compression::Snappy => return snappy_xerial_compress(input, out),
            Compression::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent)
                    .block_checksums(false)
                    .content_checksum(false);
                let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
                encoder
                    .write_all(input)
                    .map_err(|error| codec_error(codec, error))
                    .and_then(|()| encoder.finish().map(drop).map_err(|e| codec_error(codec, e)))?;
                Ok(())
            }
            Compression::Zstd => zstd::stream::Encoder::new(out, ZSTD_LEVEL)
                .and_then(|mut encoder| encoder.write_all(input).and_then(|()| encoder.finish()))
                .map(drop),
        };
        result.map_err(|error| codec_error(codec, error))
    }

    fn snappy_xerial_compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
        let mut encoder = snap::raw::Encoder::new();
        out.extend_from_slice(&XERIAL_HEADER);
        // An empty input still gets one (empty) block: a bare 16-byte header is read as a raw
        // snappy block, and fails, by kafka-python.
        let chunks = input.chunks(XERIAL_BLOCK_BYTES);
        let empty: &[&[u8]] = if input.is_empty() { &[&[]] } else { &[] };
        for chunk in chunks.chain(empty.iter().copied()) {
            let length_at = out.len();
            let block_at = length_at + 4;
            out.resize(block_at + snap::raw::max_compress_len(chunk.len()), 0);
            let written = encoder
                .compress(chunk, &mut out[block_at..])
                .map_err(|error| codec_error(Compression::Snappy, error))?;
            out.truncate(block_at + written);
            // A block is at most max_compress_len(32 KiB) bytes: fits an i32.
            out[length_at..block_at].copy_from_slice(&(written as i32).to_be_bytes());
        }
        Ok(())
    }

    /// Replaces the contents of `out` with `input` decompressed by `codec`, failing once the
    /// output would pass `output_bytes_max`.
    pub(crate) fn decompress(
        codec: Compression,
        input: &[u8],
        out: &mut Vec<u8>,
        output_bytes_max: usize,
    ) -> Result<(), BatchError> {
        out.clear();
        match codec {
            Compression::None => {
                check_bound(input.len(), output_bytes_max)?;
                out.extend_from_slice(input);
                Ok(())
            }
            Compression::Gzip => {
                read_bounded(codec, flate2::read::MultiGzDecoder::new(input), out, output_bytes_max)
            }
            Compression::Snappy => snappy_decompress(input, out, output_bytes_max),
            Compression::Lz4 => read_bounded(
                codec,
                lz4_flex::frame::FrameDecoder::new(input),
                out,
                output_bytes_max,
            ),
            Compression::Zstd => {
                let decoder = zstd::stream::read::Decoder::with_buffer(input)
                    .map_err(|error| codec_error(codec, error))?;
                read_bounded(codec, decoder, out, output_bytes_max)
            }
        }
    }

    fn check_bound(length: usize, output_bytes_max: usize) -> Result<(), BatchError> {
        if length > output_bytes_max {
            return Err(BatchError::DecompressedTooLarge { limit: output_bytes_max });
        }
        Ok(())
    }

    fn read_bounded(
        codec: Compression,
        reader: impl Read,
        out: &mut Vec<u8>,
        output_bytes_max: usize,
    ) -> Result<(), BatchError> {
        // One byte past the bound tells "exactly at the bound" from "over it".
        let limit = (output_bytes_max as u64).saturating_add(1);
        reader.take(limit).read_to_end(out).map_err(|error| codec_error(codec, error))?;
        check_bound(out.len(), output_bytes_max)
    }

    fn snappy_decompress(
        input: &[u8],
        out: &mut Vec<u8>,
        output_bytes_max: usize,
    ) -> Result<(), BatchError> {
        let mut decoder = snap::raw::Decoder::new();
        let is_xerial = input.len() >= XERIAL_HEADER.len()
            && input[..XERIAL_MAGIC_LEN] == XERIAL_HEADER[..XERIAL_MAGIC_LEN];
        if !is_xerial {
            return snappy_block_append(&mut decoder, input, out, output_bytes_max);
        }
        let mut rest = &input[XERIAL_HEADER.len()..];
        while !rest.is_empty() {
            let Some((length_bytes, after)) = rest.split_first_chunk::<4>() else {
                return Err(codec_error(Compression::Snappy, "truncated xerial block length"));
            };
            let length = i32::from_be_bytes(*length_bytes);
            let length = usize::try_from(length)
                .ok()
                .filter(|&length| length <= after.len())
                .ok_or_else(|| codec_error(Compression::Snappy, "invalid xerial block length"))?;
            let (block, next) = after.split_at(length);
            snappy_block_append(&mut decoder, block, out, output_bytes_max)?;
            rest = next;
        }
        Ok(())
    }

    fn snappy_block_append(
        decoder: &mut snap::raw::Decoder,
        block: &[u8],
        out: &mut Vec<u8>,
        output_bytes_max: usize,
    ) -> Result<(), BatchError> {
        let codec = Compression::Snappy;
        let length = snap::raw::decompress_len(block).map_err(|error| codec_error(codec, error))?;
        let start = out.len();
        check_bound(start.saturating_add(length), output_bytes_max)?;
        out.resize(start + length, 0);
        let written = decoder
            .decompress(block, &mut out[start..])
            .map_err(|error| codec_error(codec, error))?;
        out.truncate(start + written);
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn sample() -> Vec<u8> {
            (0..200_000u32).map(|i| (i % 251) as u8 ^ (i / 1000) as u8).collect()
        }

        #[test]
        fn every_codec_round_trips_and_respects_the_bound() {
            let input = sample();
            for codec in Compression::ALL {
                let mut compressed = vec![0xAA]; // compress appends
                compress(codec, &input, &mut compressed).unwrap();
                let mut out = vec![1, 2, 3]; // decompress replaces
                decompress(codec, &compressed[1..], &mut out, input.len()).unwrap();
                assert_eq!(out, input, "{codec:?}");
                let error = decompress(codec, &compressed[1..], &mut out, input.len() - 1);
                assert_eq!(
                    error,
                    Err(BatchError::DecompressedTooLarge { limit: input.len() - 1 }),
                    "{codec:?}"
                );
            }
        }

        #[test]
        fn snappy_uses_xerial_framing_and_reads_raw_blocks() {
            let input = sample();
            let mut compressed = Vec::new();
            compress(Compression::Snappy, &input, &mut compressed).unwrap();
            assert_eq!(compressed[..16], XERIAL_HEADER);
            let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
            let mut out = Vec::new();
            decompress(Compression::Snappy, &raw, &mut out, usize::MAX).unwrap();
            assert_eq!(out, input);
        }

        #[test]
        fn empty_input_round_trips_for_every_codec() {
            for codec in Compression::ALL {
                let mut compressed = Vec::new();
                compress(codec, &[], &mut compressed).unwrap();
                let mut out = vec![1];
                decompress(codec, &compressed, &mut out, 0).unwrap();
                assert!(out.is_empty(), "{codec:?}");
            }
            // A bare xerial header (no blocks) is an empty stream too.
            let mut out = Vec::new();
            decompress(Compression::Snappy, &XERIAL_HEADER, &mut out, 0).unwrap();
            assert!(out.is_empty());
        }

        #[test]
        fn garbage_is_an_error_for_every_codec() {
            let garbage: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37)).collect();
            for codec in &Compression::ALL[1..] {
                let mut out = Vec::new();
                assert!(decompress(*codec, &garbage, &mut out, 1 << 20).is_err(), "{codec:?}");
            }
        }
    }
}
