//! How [`super::Sink::commit`] puts one staged file in place of the
//! bundle's file of the same name: atomically (a reader opening the name
//! sees the old file or the new one, whole), and without the cost ext4
//! adds to a `rename` over an existing file.
//!
//! Why not a plain `rename`: when a rename replaces a file, ext4
//! (`auto_da_alloc`, on by default) allocates the blocks of the file
//! renamed into place and starts writing it back, inside the `rename`
//! call, so that a crash soon after cannot leave it empty. For a 67 MB
//! bundle that was ~50 ms of `weir compile`'s wall time on its
//! critical path (the last thing it does; issue 21), ~0.7 ms per MB.
//! Exchanging the two names (`renameat2(RENAME_EXCHANGE)`, as atomic
//! for readers) does not start the write-back; the old file, now under
//! the staged name, goes with the staging directory. A crash soon after
//! the commit may leave a file of the bundle empty or short on ext4, as
//! any unsynced write may: the manifest binds every file by its SHA-256,
//! so the runtime refuses such a bundle rather than load part of it.
//!
//! Where the exchange is not available (no regular file at the
//! destination, another OS, a file system without it) this is a plain
//! `rename`.

use std::io;
use std::path::Path;

/// Replaces `to` by `from` (module docs). Afterwards `from` is gone or
/// holds the file `to` held.
pub(super) fn replace(from: &Path, to: &Path) -> io::Result<()> {
    // Only a regular file is exchanged: anything else at `to` (a
    // directory, a symbolic link) would end up in the staging directory,
    // which is removed with its contents; `rename` keeps its behaviour
    // for those (it refuses to replace a directory by a file).
    let regular = std::fs::symlink_metadata(to).is_ok_and(|m| m.file_type().is_file());
    if regular && exchange(from, to).is_ok() {
        return Ok(());
    }
    std::fs::rename(from, to)
}

#[cfg(target_os = "linux")]
fn exchange(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (from, to) = (cstr(from)?, cstr(to)?);
    // SAFETY: two NUL-terminated paths that outlive the call; renameat2
    // reads them and touches nothing else of this process.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
