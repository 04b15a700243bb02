//! How many entries a hash map holds, read from the kernel in a few
//! system calls.
//!
//! Why: an endpoint update checks a host map's capacity before writing
//! ([`super::txn::PinnedMaps::check_capacity`]). Walking the keys with
//! `BPF_MAP_GET_NEXT_KEY` is one system call per entry: at 1,000 services
//! (5,000 endpoints) that was 5,001 of the update's 5,015 `bpf` calls and
//! most of its time. `BPF_MAP_LOOKUP_BATCH` copies the entries out
//! thousands at a time; only the number returned is kept. A kernel or map
//! that refuses batches is walked key by key as before.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::Map;

use super::load::{keys_raw, map_data, sys_bpf};

/// `BPF_MAP_LOOKUP_BATCH`.
const LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per call (a hash bucket larger than this makes the
/// kernel answer `ENOSPC`: the call is repeated with twice as many).
const CHUNK: usize = 4096;

/// The number of entries of the hash map `m` (not per-CPU; keys of
/// `key_size`, values of `value_size` bytes).
pub fn count_entries(m: &Map, key_size: usize, value_size: usize) -> std::io::Result<usize> {
    match count_batched(m, key_size, value_size) {
        Ok(n) => Ok(n),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) => {
            // 524: ENOTSUPP, the kernel's "no batch operations here".
            Ok(keys_raw(m, key_size)?.len())
        }
        Err(e) => Err(e),
    }
}

fn count_batched(m: &Map, key_size: usize, value_size: usize) -> std::io::Result<usize> {
    let fd = map_data(m).fd().as_fd().as_raw_fd();
    // The batch token: a bucket index for hash maps (4 bytes); sized for
    // a key as well, which is what other map kinds take.
    let token = key_size.max(8);
    let mut in_batch = vec![0u8; token];
    let mut out_batch = vec![0u8; token];
    let mut chunk = CHUNK;
    let mut total = 0usize;
    let mut first = true;
    loop {
        let mut keys = vec![0u8; chunk * key_size];
        let mut values = vec![0u8; chunk * value_size];
        let mut attr = [0u8; 56];
        let ib = if first { 0 } else { in_batch.as_ptr() as u64 };
        attr[0..8].copy_from_slice(&ib.to_ne_bytes());
        attr[8..16].copy_from_slice(&(out_batch.as_mut_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(keys.as_mut_ptr() as u64).to_ne_bytes());
        attr[24..32].copy_from_slice(&(values.as_mut_ptr() as u64).to_ne_bytes());
        attr[32..36].copy_from_slice(&(chunk as u32).to_ne_bytes());
        attr[36..40].copy_from_slice(&(fd as u32).to_ne_bytes());
        let r = sys_bpf(LOOKUP_BATCH, &mut attr);
        let got = u32::from_ne_bytes(attr[32..36].try_into().expect("4 bytes")) as usize;
        match r {
            Ok(_) => {
                total += got;
                in_batch.copy_from_slice(&out_batch);
                first = false;
            }
            // The last entries (or none) were copied: the walk is done.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(total + got),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && chunk < 1 << 20 => chunk *= 2,
            Err(e) => return Err(e),
        }
    }
}
