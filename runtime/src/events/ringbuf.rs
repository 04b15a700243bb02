//! The eBPF back end's event source: the pinned `weir_events` ring buffer
//! (`BPF_MAP_TYPE_RINGBUF`) of the applied generation, read as the
//! kernel's ring-buffer ABI defines it (`kernel/bpf/ringbuf.c`,
//! `Documentation/bpf/ringbuf.rst`; checked against libbpf's
//! `ringbuf.c` consumer):
//!
//! - `mmap(fd, offset 0)`, one page, read-write: the **consumer page**,
//!   whose first `unsigned long` is `consumer_pos` — the only thing user
//!   space writes;
//! - `mmap(fd, offset page)`, read-only: the **producer page** (its first
//!   `unsigned long` is `producer_pos`), then the data area of
//!   `max_entries` bytes mapped **twice** back to back, so a record that
//!   wraps the end is contiguous in the mapping;
//! - each record starts with an 8-byte header: a `u32` length whose bit
//!   31 (`BPF_RINGBUF_BUSY_BIT`) says "reserved, not yet committed" and
//!   bit 30 (`BPF_RINGBUF_DISCARD_BIT`) "discarded, skip it", then a
//!   `u32` page offset (kernel use); the record occupies its length plus
//!   the header, rounded up to 8 bytes;
//! - the consumer reads `producer_pos` with acquire ordering, each header
//!   with acquire ordering, stops at a busy record (records commit in
//!   order of reservation only from the consumer's point of view: the
//!   next one must be waited for), and publishes its new `consumer_pos`
//!   with release ordering (so the kernel may reuse the space only after
//!   the record was read);
//! - `epoll` on the map fd reports readable when records are committed
//!   (the kernel wakes the waiter when the consumer had caught up).
//!
//! The rate limit's drops are in the per-CPU `weir_ev_state` map
//! (`codegen/events.rs`: `state::DROPPED`), summed over CPUs; records
//! that do not decode are added to them.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray};
use weir_compiler::contract::event::{EventRecord, VerdictEvent, EVENTS_MAP};
use weir_compiler::ebpf::codegen::events::{state, STATE_MAP};

use super::EventSource;

/// `BPF_RINGBUF_BUSY_BIT`, `BPF_RINGBUF_DISCARD_BIT`, `BPF_RINGBUF_HDR_SZ`
/// (`include/uapi/linux/bpf.h`).
pub const BUSY_BIT: u32 = 1 << 31;
pub const DISCARD_BIT: u32 = 1 << 30;
pub const HDR_SZ: usize = 8;

/// One mapping, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(fd: i32, len: usize, prot: i32, offset: usize) -> std::io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of the map fd; the kernel checks
        // the length and protection against the ring buffer's layout.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping this value made.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

fn err(what: &str, e: aya::maps::MapError) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// A consumer of one `BPF_MAP_TYPE_RINGBUF` map.
pub struct RingBufReader {
    map: MapData,
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    mask: u64,
    epoll: OwnedFd,
    undecodable: u64,
    state: Option<PerCpuArray<MapData, [u64; 3]>>,
}

// The mappings are only touched through `&mut self` (or read-only).
unsafe impl Send for RingBufReader {}

impl RingBufReader {
    /// Opens the ring buffer pinned at `ring` and, if given, the per-CPU
    /// state map (drop counters) pinned at `state`.
    pub fn open(ring: &Path, state: Option<&Path>) -> std::io::Result<RingBufReader> {
        let map = MapData::from_pin(ring).map_err(|e| err("opening the ring buffer", e))?;
        let state = match state {
            Some(p) => Some(MapData::from_pin(p).map_err(|e| err("opening the event state", e))?),
            None => None,
        };
        RingBufReader::from_maps(map, state)
    }

    /// A reader of the ring buffer `map` (and the per-CPU state map
    /// `state`, for [`EventSource::dropped`]), e.g. of a generation just
    /// loaded.
    pub fn from_maps(map: MapData, state: Option<MapData>) -> std::io::Result<RingBufReader> {
        let info = map.info().map_err(|e| err("ring buffer info", e))?;
        let size = info.max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        if !size.is_power_of_two() || size < page {
            return Err(std::io::Error::other(format!(
                "not a ring buffer ({size} bytes)"
            )));
        }
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        // SAFETY: plain epoll syscalls on fds we own.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: epfd was just returned by epoll_create1.
        let epoll = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(epfd) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: valid fds and event.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let state = match state {
            Some(m) => {
                let m = aya::maps::Map::PerCpuArray(m);
                Some(PerCpuArray::try_from(m).map_err(|e| err("the event state", e))?)
            }
            None => None,
        };
        Ok(RingBufReader {
            map,
            consumer,
            producer,
            page,
            mask: size as u64 - 1,
            epoll,
            undecodable: 0,
            state,
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page is mapped, 8-aligned, and only the
        // kernel reads it concurrently.
        unsafe { &*(self.consumer.ptr as *const AtomicU64) }
    }

    fn producer_pos(&self) -> u64 {
        // SAFETY: as above, the producer page.
        unsafe { &*(self.producer.ptr as *const AtomicU64) }.load(Ordering::Acquire)
    }

    /// The next committed record's bytes (discarded ones skipped), or
    /// `None` when the consumer has caught up (or the next record is
    /// still busy).
    pub fn next_record(&mut self) -> Option<Vec<u8>> {
        loop {
            let cons = self.consumer_pos().load(Ordering::Relaxed);
            if cons >= self.producer_pos() {
                return None;
            }
            let off = self.page + (cons & self.mask) as usize;
            // SAFETY: `off` + header is inside the mapping (data area is
            // mapped twice: a record never runs past its end).
            let hdr = unsafe { &*((self.producer.ptr as *const u8).add(off) as *const AtomicU32) }
                .load(Ordering::Acquire);
            if hdr & BUSY_BIT != 0 {
                return None;
            }
            let len = (hdr & !(BUSY_BIT | DISCARD_BIT)) as usize;
            let rec = if hdr & DISCARD_BIT == 0 && off + HDR_SZ + len <= self.producer.len {
                // SAFETY: inside the mapping (checked above).
                let data = unsafe {
                    std::slice::from_raw_parts(
                        (self.producer.ptr as *const u8).add(off + HDR_SZ),
                        len,
                    )
                };
                Some(data.to_vec())
            } else {
                None
            };
            let total = (len + HDR_SZ + 7) & !7;
            self.consumer_pos()
                .store(cons + total as u64, Ordering::Release);
            if rec.is_some() {
                return rec;
            }
        }
    }

    fn wait(&self, timeout: Duration) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: valid epoll fd and one event slot.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut ev, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ring buffer size in bytes (the kernel's `max_entries`).
    pub fn size(&self) -> u64 {
        self.mask + 1
    }

    /// The map's fd (for callers that wait on several sources).
    pub fn fd(&self) -> i32 {
        self.map.fd().as_fd().as_raw_fd()
    }
}

impl EventSource for RingBufReader {
    fn next_event(&mut self, timeout: Duration) -> std::io::Result<Option<VerdictEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(r) = self.next_record() {
                match EventRecord::decode(&r) {
                    Some(e) => return Ok(Some(e)),
                    None => self.undecodable += 1,
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Wake at least every 100 ms: a record committed between the
            // check above and the wait may not wake us (the kernel wakes
            // only when the consumer had caught up).
            self.wait((deadline - now).min(Duration::from_millis(100)))?;
        }
    }

    fn dropped(&self) -> std::io::Result<u64> {
        let mut n = self.undecodable;
        if let Some(s) = &self.state {
            let per_cpu = s
                .get(&0, 0)
                .map_err(|e| std::io::Error::other(format!("reading the event drops: {e}")))?;
            n += per_cpu
                .iter()
                .map(|v| v[(state::DROPPED / 8) as usize])
                .sum::<u64>();
        }
        Ok(n)
    }
}

/// The event source of an applied eBPF instance: its generation's pinned
/// `weir_events` and `weir_ev_state`. `Ok(None)` when that generation
/// was compiled without events (`weir compile --events off`).
pub fn open_applied(
    inst: &crate::ebpf::attach::Instance,
) -> Result<Option<RingBufReader>, crate::ebpf::EbpfError> {
    let st = crate::ebpf::record::read_state(inst)?;
    let dir = inst.pin_dir().join(format!("gen-{}", st.generation));
    let ring = dir.join(EVENTS_MAP);
    if !ring.exists() {
        return Ok(None);
    }
    RingBufReader::open(&ring, Some(&dir.join(STATE_MAP)))
        .map(Some)
        .map_err(|source| crate::ebpf::EbpfError::Io {
            context: format!("opening {}", ring.display()),
            source,
        })
}
