//! The back end's record files beside the state file (`intent.json`,
//! `applied.json`, `baseline.json`): written and removed through the
//! runtime's one rule for its own files ([`crate::statefs`]: 0600, a fresh
//! `O_EXCL|O_NOFOLLOW` name, fsync, rename), with the back end's error.

use std::path::Path;

use crate::error::Error;
use crate::statefs;

/// Writes `path` whole, readable by root only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    statefs::write_file(path, bytes)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Removes `path` (absent is fine).
pub(crate) fn remove(path: &Path) -> Result<(), Error> {
    statefs::remove_file(path).map_err(|e| Error::io(format!("removing {}", path.display()), e))
}
