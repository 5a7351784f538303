//! Test support shared by Sluice's process tests and fault campaigns.
//!
//! - [`process`]: the harness of every process test: `sluice-sc`, `sluice-spu` and Consul as
//!   children of the test on OS-chosen ports, waits with deadlines, a whole [`TestCluster`]
//!   in one call. Start there.
//! - [`netns`]: the multi-host cluster of `deploy/netns/up` (every host a network namespace on
//!   one bridge): its layout, the processes it recorded, and the controls a fault needs (signal,
//!   restart from the recorded command line, nftables, `tc`, the SPU's own small volume).
//! - [`schedule`] (pure): the faults a campaign injects, drawn from a seed, so a failing campaign
//!   is replayed from its seed.
//! - [`recovery`] (pure): how long each fault kept partitions from accepting acks `all`, from the
//!   acknowledgement timeline `sluice-perf check --timeline` writes.
//! - [`inject`]: applies and heals one fault on the namespace cluster.
//! - [`volume`]: a small loop-mounted filesystem a test can fill (full disks).
//! - [`campaign`]: `sluice-faults`: `sluice-perf check` under a schedule of faults, the cluster
//!   healed at the end, then the verdict and the report.

pub mod campaign;
pub mod error;
pub mod inject;
pub mod netns;
pub mod process;
pub mod recovery;
pub mod schedule;
pub mod volume;

pub use error::TestkitError;
pub use process::TestCluster;
