//! Zigzag variable-length integers as Kafka writes them inside records (the protobuf encoding:
//! zigzag, then 7 bits per byte, least significant group first, high bit set on every byte but
//! the last).
//!
//! Readers are strict: a 32-bit varint may take at most 5 bytes and a 64-bit varlong at most
//! 10, as in Kafka's `ByteUtils`; anything longer, or running past the input, is an error and
//! never a panic. Writers append to a `Vec<u8>` and never allocate beyond its growth.

/// Longest encoding of a 32-bit varint.
pub const VARINT_BYTES_MAX: usize = 5;
/// Longest encoding of a 64-bit varlong.
pub const VARLONG_BYTES_MAX: usize = 10;

#[inline]
fn zigzag_encode_i64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[inline]
fn zigzag_decode_u64(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

/// Bytes that `value` takes as a zigzag varint (i32 values) or varlong (i64 values).
#[inline]
pub fn varlong_len(value: i64) -> usize {
    let raw = zigzag_encode_i64(value);
    // 1 byte per started group of 7 bits; zero still takes one byte.
    let bits = 64 - (raw | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Bytes that a 32-bit `value` takes as a zigzag varint.
#[inline]
pub fn varint_len(value: i32) -> usize {
    varlong_len(i64::from(value))
}

/// Appends `value` as a zigzag varlong (also correct for i32 values: same bytes as a varint).
#[inline]
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = zigzag_encode_i64(value);
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Appends a 32-bit `value` as a zigzag varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_varlong(out, i64::from(value));
}

/// Errors are static reasons; the record reader wraps them with the record's index.
///
/// Reads an unsigned LEB128 group sequence of at most `bytes_max` bytes from the start of
/// `input`. Returns the raw value and the bytes consumed.
#[inline]
fn read_raw(input: &[u8], bytes_max: usize) -> Result<(u64, usize), &'static str> {
    let mut raw: u64 = 0;
    for (index, &byte) in input.iter().take(bytes_max).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok((raw, index + 1));
        }
    }
    if input.len() < bytes_max {
        Err("varint runs past the end of the record data")
    } else {
        Err("varint longer than allowed")
    }
}

/// Reads a zigzag varint (at most 5 bytes, value within i32) from the start of `input`.
/// Returns the value and the bytes consumed.
#[inline]
pub fn read_varint(input: &[u8]) -> Result<(i32, usize), &'static str> {
    // Fast path: one byte, the common case for lengths, deltas and counts under 64.
    if let Some(&byte) = input.first() {
        if byte & 0x80 == 0 {
            return Ok((zigzag_decode_u64(u64::from(byte)) as i32, 1));
        }
    }
    let (raw, used) = read_raw(input, VARINT_BYTES_MAX)?;
    if raw > u64::from(u32::MAX) {
        return Err("varint out of 32-bit range");
    }
    Ok((zigzag_decode_u64(raw) as i32, used))
}

/// Reads a zigzag varlong (at most 10 bytes) from the start of `input`.
/// Returns the value and the bytes consumed.
#[inline]
pub fn read_varlong(input: &[u8]) -> Result<(i64, usize), &'static str> {
    if let Some(&byte) = input.first() {
        if byte & 0x80 == 0 {
            return Ok((zigzag_decode_u64(u64::from(byte)), 1));
        }
    }
    let (raw, used) = read_raw(input, VARLONG_BYTES_MAX)?;
    // The tenth byte may carry only the top bit of a 64-bit value.
    if used == VARLONG_BYTES_MAX && input[VARLONG_BYTES_MAX - 1] > 1 {
        return Err("varlong out of 64-bit range");
    }
    Ok((zigzag_decode_u64(raw), used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // From the Kafka protocol guide / protobuf zigzag table.
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-2, &[0x03]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (300, &[0xd8, 0x04]),
            (i64::from(i32::MAX), &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i64::from(i32::MIN), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(varlong_len(value), bytes.len());
            assert_eq!(read_varlong(bytes).unwrap(), (value, bytes.len()));
            if let Ok(small) = i32::try_from(value) {
                assert_eq!(read_varint(bytes).unwrap(), (small, bytes.len()));
                assert_eq!(varint_len(small), bytes.len());
            }
        }
    }

    #[test]
    fn extremes_round_trip() {
        for value in [i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1, 1 << 40, -(1 << 40)] {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(out.len(), varlong_len(value));
            assert!(out.len() <= VARLONG_BYTES_MAX);
            assert_eq!(read_varlong(&out).unwrap(), (value, out.len()));
        }
    }

    #[test]
    fn rejects_truncated_overlong_and_out_of_range() {
        assert!(read_varint(&[]).is_err());
        assert!(read_varint(&[0x80]).is_err());
        assert!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).is_err());
        // 5 bytes but above u32::MAX.
        assert!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]).is_err());
        assert!(read_varlong(&[0xff; 10]).is_err());
        let mut eleven = [0x80u8; 11];
        eleven[10] = 0;
        assert!(read_varlong(&eleven).is_err());
        // Tenth byte with more than the top bit.
        let mut ten = [0xffu8; 10];
        ten[9] = 0x02;
        assert!(read_varlong(&ten).is_err());
    }
}
