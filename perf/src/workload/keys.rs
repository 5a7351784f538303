//! Record keys by [`KeyDistribution`]: seeded and reproducible (SplitMix64), written into a
//! reused buffer so generating a key never allocates.

use crate::args::KeyDistribution;

/// Produces the key of each record in turn.
#[derive(Clone, Debug)]
pub struct KeyGenerator {
    distribution: KeyDistribution,
    state: u64,
    buffer: [u8; 20],
}

impl KeyGenerator {
    /// A generator for `distribution`, seeded with `seed` (give each producer its own seed).
    pub fn new(distribution: KeyDistribution, seed: u64) -> KeyGenerator {
        KeyGenerator { distribution, state: seed, buffer: [0; 20] }
    }

    /// The key of record `sequence`, or `None` for keyless records.
    pub fn key(&mut self, sequence: u64) -> Option<&[u8]> {
        let number = match self.distribution {
            KeyDistribution::None => return None,
            KeyDistribution::Sequential => sequence,
            KeyDistribution::Uniform { keys } => self.next_random() % keys.max(1),
        };
        Some(write_decimal(&mut self.buffer, number))
    }

    fn next_random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }
}

/// Writes `number` in decimal at the end of `buffer` and returns those bytes.
fn write_decimal(buffer: &mut [u8; 20], mut number: u64) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    &buffer[start..]
}
