//! The machine's own limits, measured by standard tools on the same machine in the same run so
//! Sluice's figures can be read as fractions of them: `fio` sequential direct writes (the disk,
//! with and without an fdatasync per write) and `iperf3` single-stream loopback (the network
//! stack and memory bandwidth a TCP byte stream can reach).
//!
//! Both tools must be installed (`deploy/dev/setup` installs them); a missing tool is a
//! [`crate::error::PerfError::Tool`] that says so. Child processes are owned by a guard and
//! killed by their handle.

pub mod fio;
pub mod iperf;

use std::process::Child;

/// Kills and reaps a child process when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(Some(child))
    }

    /// The guarded child.
    pub fn child(&mut self) -> Option<&mut Child> {
        self.0.as_mut()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
