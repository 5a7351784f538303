//! A replica log as the replication model needs it: one record per batch, each with the epoch
//! it was appended in and a value naming it; appended / written / durable ends; the
//! leader-epoch history; the HW and its checkpoint. Mirrors the contract of
//! `sluice_spu::storage::ReplicaLog` (see `spu/src/storage/mod.rs`) for what replication uses.

use rand::rngs::StdRng;
use rand::Rng;
use sluice_proto::ids::{LeaderEpoch, Offset};
use sluice_spu::storage::checkpoint::EpochEntry;

/// One batch (of one record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The epoch of the leader that appended it.
    pub epoch: LeaderEpoch,
    /// Unique over the whole run: which client append it is.
    pub value: u64,
}

/// Why a replicated append was refused (as the storage refuses it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendRefusal {
    /// The batch does not start at the log end.
    NotAtLogEnd,
    /// The batch's epoch is older than the log's newest.
    EpochRegression,
}

#[derive(Clone, Debug, Default)]
pub struct ModelLog {
    /// Every appended batch; the batch at index `i` has offset `i` (the log starts at 0).
    pub batches: Vec<Batch>,
    written: usize,
    durable: usize,
    pub epochs: Vec<EpochEntry>,
    high_watermark: Offset,
    high_watermark_checkpointed: Offset,
}

fn offset(index: usize) -> Offset {
    Offset(index as i64)
}

impl ModelLog {
    pub fn appended_end(&self) -> Offset {
        offset(self.batches.len())
    }

    /// What readers (and fetching followers) see: the written end.
    pub fn log_end(&self) -> Offset {
        offset(self.written)
    }

    pub fn durable_end(&self) -> Offset {
        offset(self.durable)
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    fn check(&self) {
        assert!(self.durable <= self.written && self.written <= self.batches.len());
        assert!(self.high_watermark <= self.log_end(), "HW past the log end: {self:?}");
        for pair in self.epochs.windows(2) {
            assert!(pair[0].epoch < pair[1].epoch, "epochs grow: {:?}", self.epochs);
            assert!(pair[0].start_offset <= pair[1].start_offset, "{:?}", self.epochs);
        }
        for (index, batch) in self.batches.iter().enumerate() {
            let entry = self.epochs.iter().rev().find(|entry| entry.start_offset <= offset(index));
            assert!(
                entry.is_some_and(|entry| entry.epoch == batch.epoch),
                "batch {index} of epoch {} outside its history {:?}",
                batch.epoch,
                self.epochs
            );
        }
    }

    fn stage(&mut self, batch: Batch) {
        if self.epochs.last().is_none_or(|last| batch.epoch > last.epoch) {
            self.epochs.push(EpochEntry { epoch: batch.epoch, start_offset: self.appended_end() });
        }
        self.batches.push(batch);
    }

    /// An append as leader in `epoch`.
    pub fn append(&mut self, batch: Batch) {
        assert!(self.epochs.last().is_none_or(|last| batch.epoch >= last.epoch));
        self.stage(batch);
        self.check();
    }

    /// An append as follower at `base`.
    pub fn append_replicated(&mut self, base: Offset, batch: Batch) -> Result<(), AppendRefusal> {
        if base != self.appended_end() {
            return Err(AppendRefusal::NotAtLogEnd);
        }
        if self.epochs.last().is_some_and(|last| batch.epoch < last.epoch) {
            return Err(AppendRefusal::EpochRegression);
        }
        self.stage(batch);
        self.check();
        Ok(())
    }

    /// Records a new epoch's start at the appended end (promotion).
    pub fn assign_epoch(&mut self, epoch: LeaderEpoch) {
        if self.epochs.last().is_some_and(|last| last.epoch >= epoch) {
            return;
        }
        self.epochs.push(EpochEntry { epoch, start_offset: self.appended_end() });
        self.check();
    }

    /// A write round: everything appended is written.
    pub fn write(&mut self) {
        self.written = self.batches.len();
    }

    /// A sync: everything appended is durable.
    pub fn sync(&mut self) {
        self.written = self.batches.len();
        self.durable = self.written;
    }

    pub fn set_high_watermark(&mut self, high_watermark: Offset) {
        self.high_watermark = high_watermark.clamp(Offset(0), self.log_end());
    }

    pub fn checkpoint_high_watermark(&mut self) {
        self.high_watermark_checkpointed = self.high_watermark;
    }

    /// `truncate_to` of the storage: writes and syncs first, then removes every batch at or
    /// after `cut`, and every epoch entry starting there.
    pub fn truncate_to(&mut self, cut: Offset) {
        self.sync();
        let cut_index = usize::try_from(cut.get()).expect("offsets are not negative");
        if cut_index < self.batches.len() {
            self.batches.truncate(cut_index);
        }
        self.epochs.retain(|entry| entry.start_offset < cut);
        self.written = self.written.min(self.batches.len());
        self.durable = self.durable.min(self.batches.len());
        self.high_watermark = self.high_watermark.min(self.log_end());
        self.check();
    }

    /// A crash and reopen: what was durable survives, what was written may survive in part
    /// (a torn tail), nothing appended but unwritten does. The HW comes back from its
    /// checkpoint, the epoch history loses entries past the recovered end.
    pub fn crash(&mut self, rng: &mut StdRng) {
        let kept = rng.gen_range(self.durable..=self.written);
        self.batches.truncate(kept);
        self.written = kept;
        self.durable = kept;
        self.epochs.retain(|entry| entry.start_offset < offset(kept));
        self.high_watermark = self.high_watermark_checkpointed.clamp(Offset(0), self.log_end());
        self.check();
    }

    pub fn batch(&self, at: Offset) -> Option<Batch> {
        usize::try_from(at.get()).ok().and_then(|index| self.batches.get(index)).copied()
    }
}
