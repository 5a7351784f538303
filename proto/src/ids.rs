//! Newtypes for every identifier, offset and epoch that crosses a boundary.
//!
//! None of them deref to their integer: arithmetic that makes sense is spelled out as methods
//! (`Offset::next`, `Offset::checked_add_delta`), so an offset can never be passed where an SPU id
//! is expected. All are `Copy`, ordered, hashable and serialize as their bare integer.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident($inner:ty)) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw integer, for encoding and display.
            #[inline]
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$inner> for $name {
            #[inline]
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }
    };
}

id_newtype!(
    /// Position of a record in a partition's log. The first record of a new log has offset 0;
    /// offsets are dense and never reused.
    Offset(i64)
);
id_newtype!(
    /// Epoch of a partition's leadership; bumped by the SC every time a new leader is elected.
    /// Written into every batch the leader appends (the batch's `partition_leader_epoch`).
    LeaderEpoch(i32)
);
id_newtype!(
    /// Version of a partition's leadership and in-sync set, as the SC stores them; the SC bumps
    /// it at every change of either (an election, an in-sync set grown or shrunk). A leader's
    /// proposal to change the in-sync set names the version it was based on, so a proposal
    /// computed from an older state is refused (as Kafka's partition epoch in AlterPartition).
    PartitionEpoch(u64)
);
id_newtype!(
    /// Globally unique id of an SPU.
    SpuId(i32)
);
id_newtype!(
    /// Index of a partition inside its topic, from 0.
    PartitionId(u32)
);
id_newtype!(
    /// A CPU core (shard) of an SPU, from 0 to the SPU's core count minus one.
    CoreId(u16)
);
id_newtype!(
    /// Version of the SC's view sent to an SPU; SC -> SPU updates carry it so that an SPU can
    /// detect a gap and ask for a full snapshot.
    UpdateEpoch(u64)
);
id_newtype!(
    /// Milliseconds since the Unix epoch, as in Kafka record timestamps.
    TimestampMs(i64)
);
id_newtype!(
    /// Correlation id of a request, echoed by its response.
    CorrelationId(i32)
);
id_newtype!(
    /// Producer id for idempotent produce.
    ProducerId(i64)
);
id_newtype!(
    /// Version of one API's message layout, carried in every frame header.
    ApiVersion(u16)
);

impl Offset {
    /// The offset after this one.
    #[inline]
    pub const fn next(self) -> Offset {
        Offset(self.0 + 1)
    }

    /// This offset plus a record's offset delta; `None` on overflow.
    #[inline]
    pub fn checked_add_delta(self, delta: i64) -> Option<Offset> {
        self.0.checked_add(delta).map(Offset)
    }
}

impl LeaderEpoch {
    /// The epoch after this one.
    #[inline]
    pub const fn next(self) -> LeaderEpoch {
        LeaderEpoch(self.0 + 1)
    }
}

impl PartitionEpoch {
    /// The version after this one.
    #[inline]
    pub const fn next(self) -> PartitionEpoch {
        PartitionEpoch(self.0 + 1)
    }
}

impl UpdateEpoch {
    /// The epoch after this one.
    #[inline]
    pub const fn next(self) -> UpdateEpoch {
        UpdateEpoch(self.0 + 1)
    }
}

impl CoreId {
    /// The core as an index into per-core tables.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_bare_integer() {
        assert_eq!(serde_json::to_string(&Offset(42)).unwrap(), "42");
        assert_eq!(serde_json::from_str::<SpuId>("7").unwrap(), SpuId(7));
        assert_eq!(postcard::to_allocvec(&CoreId(3)).unwrap(), vec![3]);
    }

    #[test]
    fn arithmetic() {
        assert_eq!(Offset(9).next(), Offset(10));
        assert_eq!(Offset(i64::MAX).checked_add_delta(1), None);
        assert_eq!(LeaderEpoch(1).next(), LeaderEpoch(2));
    }
}
