//! A small tmpfs mounted on a temp dir (the tests run as root), unmounted on drop, even when the test panics.

use std::path::Path;
use std::process::Command;

/// A mounted tmpfs of a fixed size.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (rounded up to whole pages by the kernel).
    pub fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed (the tests need root): {status}"
        );
        Tmpfs { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills it with the file `name` until about `free` bytes are left.
    pub fn fill_leaving(&self, name: &str, free: u64) {
        let left = free_bytes(self.path());
        let n = left.saturating_sub(free) as usize;
        std::fs::write(self.path().join(name), vec![0u8; n]).unwrap();
    }
}

/// Free bytes of the filesystem at `path` (`df --output=avail -B1`).
pub fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
