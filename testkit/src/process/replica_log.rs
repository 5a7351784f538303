//! A replica's log read straight from an SPU's files, to compare replicas byte for byte.

use std::path::{Path, PathBuf};

use sluice_proto::ids::Offset;

/// Longest batch accepted when reading segment files back.
const BATCH_BYTES_MAX: usize = 64 << 20;

/// The record batches of a replica directory's segment files, as (base offset, bytes), sorted
/// by base offset, each segment read until the first position that does not hold a whole
/// valid batch (the preallocated zeros past the log end). A missing directory has none.
pub fn log_batches(directory: &Path) -> Vec<(Offset, Vec<u8>)> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(directory)
        .map(|entries| entries.filter_map(|entry| Some(entry.ok()?.path())).collect())
        .unwrap_or_default();
    segments.retain(|path| path.extension().is_some_and(|extension| extension == "log"));
    segments.sort();
    let mut batches = Vec::new();
    for segment in segments {
        let Ok(bytes) = std::fs::read(&segment) else { continue };
        let mut position = 0;
        while let Some(header) = bytes.get(position..position + 12) {
            let base = i64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
            let length = i32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
            if length <= 0 {
                break;
            }
            let end = position + 12 + length as usize;
            let Some(batch) = bytes.get(position..end) else { break };
            if sluice_proto::record::validate_batch(batch, BATCH_BYTES_MAX).is_err() {
                break;
            }
            batches.push((Offset(base), batch.to_vec()));
            position = end;
        }
    }
    batches
}
