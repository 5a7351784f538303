//! A small filesystem of a test's own, so that a test can fill it: an ext4 image (no blocks
//! reserved for root, so root sees it full when it is; 4 KiB blocks) on a loop device, mounted in a temporary
//! directory, unmounted and detached on drop. Needs root (or `CAP_SYS_ADMIN`), which the
//! project's test machines and CI have; [`is_root`] lets a test say so and skip elsewhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A mounted loop volume (see the module docs).
pub struct LoopVolume {
    mount_point: PathBuf,
    loop_device: String,
    _image_dir: tempfile::TempDir,
}

impl LoopVolume {
    /// Creates a sparse image of `size_mib` MiB, formats and mounts it; panics with what is
    /// missing (root, e2fsprogs, util-linux) when it cannot.
    pub fn new(size_mib: u64) -> LoopVolume {
        let image_dir = tempfile::tempdir().expect("a temporary directory");
        let image = image_dir.path().join("volume.img");
        let mount_point = image_dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("the mount point");
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(size_mib << 20))
            .expect("the image file");
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-b", "4096"])
            .arg(&image)
            .status();
        assert!(mkfs.is_ok_and(|status| status.success()), "mkfs.ext4 failed: install e2fsprogs");
        // Tests run in parallel: two `losetup --find` at once can pick the same free device.
        static ATTACH: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _attaching = ATTACH.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let attach = Command::new("losetup").args(["--find", "--show"]).arg(&image).output();
        let attach = attach.expect("losetup not runnable: install util-linux");
        assert!(
            attach.status.success(),
            "cannot attach a loop device (needs root/CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&attach.stderr)
        );
        let loop_device = String::from_utf8_lossy(&attach.stdout).trim().to_string();
        let mount = Command::new("mount").arg(&loop_device).arg(&mount_point).output();
        let mount = mount.expect("mount not runnable: install util-linux");
        if !mount.status.success() {
            let _ = Command::new("losetup").arg("-d").arg(&loop_device).status();
            panic!(
                "cannot mount a test filesystem (needs root/CAP_SYS_ADMIN): {}",
                String::from_utf8_lossy(&mount.stderr)
            );
        }
        LoopVolume { mount_point, loop_device, _image_dir: image_dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Writes `filler` until the kernel says ENOSPC (in 1 MiB, then 4 KiB, then 1 KiB writes)
    /// and syncs it: the volume is full to its last block (no file of one byte fits). Returns
    /// the bytes written.
    pub fn fill(&self, filler: &Path) -> u64 {
        let mut file = std::fs::File::create(filler).expect("the filler file");
        let mut written = 0u64;
        for chunk in [vec![0x5au8; 1 << 20], vec![0x5au8; 4096], vec![0x5au8; 1024]] {
            while file.write_all(&chunk).is_ok() {
                written += chunk.len() as u64;
            }
        }
        let _ = file.sync_all();
        written
    }

    /// Deletes `filler` and commits the deletion: ext4 counts the freed blocks as free only
    /// once the journal transaction holding the unlink commits (syncing the directory forces
    /// it).
    pub fn free(&self, filler: &Path) {
        std::fs::remove_file(filler).expect("remove the filler");
        if let Some(directory) = filler.parent() {
            let _ = std::fs::File::open(directory).and_then(|directory| directory.sync_all());
        }
    }
}

impl Drop for LoopVolume {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            eprintln!("{} busy; unmounting lazily", self.mount_point.display());
            let _ = Command::new("umount").arg("--lazy").arg(&self.mount_point).status();
        }
        // On a device still in use this only sets autoclear: it detaches on the last close.
        let _ = Command::new("losetup").arg("-d").arg(&self.loop_device).status();
    }
}
