//! Step 2's tables read ahead, while step 1 still runs.
//!
//! A direct load reads its table under the xtables lock before it
//! replaces it ([`super::Loader::read`]): on a replace at 100,000 rules
//! that is ~0.6–0.7 s of GET_ENTRIES and decoding (~137 MB of entries),
//! and it used to start only once step 1 (the sets) was done. Step 2's
//! restores need the sets only for their indexes, written after step 1
//! (`pre.rs`), never to read the tables. So once step 2 is prepared
//! beside step 1, the apply takes the lock and reads every table step 2
//! will write ([`read_ahead`]), then waits for step 1 holding it. (When
//! step 1 is done by then, this is the read the restore would have made,
//! a moment earlier; doing it always keeps one path, the one the tests
//! run.)
//!
//! # Why this is still the tools' meaning
//! The lock is held from the read to the last replace, as one
//! `iptables-restore -w` run would hold it: no tool changes a table
//! between our read and our write. It is held longer by at most step 1's
//! remaining time, which the read itself used to take.
//!
//! # What may not happen while it is held
//! Nothing of this process may wait for the lock: not the tools (a block
//! that goes to `iptables-restore`, a rollback), and not a second `flock`
//! of ours. So [`Ahead`] is handed explicitly to step 2's restores,
//! whose other reads share its hold; it is dropped before any block goes
//! to the tool (then every later block reads again, after the tool), and
//! by the apply after step 2 or on any error, before a rollback. A failed
//! step 1 drops it before the apply sees the failure.

use std::collections::HashMap;
use std::sync::Arc;

use super::{sys, Blocks, Clock, Lines, Loader, Prepared, Read};
use crate::bundle::Family;

/// The tables read ahead, and this process's hold of the lock they
/// were read under.
pub(crate) struct Ahead {
    pub(super) lock: Arc<sys::XtLock>,
    tables: HashMap<(Family, String), Read>,
}

impl Ahead {
    /// The table read ahead for `family`'s `table`, once: a second block
    /// of the same table reads what the first one wrote.
    pub(super) fn take(&mut self, family: Family, table: &str) -> Option<Read> {
        self.tables.remove(&(family, table.to_string()))
    }

    /// How many tables are held (for the trace).
    pub(crate) fn len(&self) -> usize {
        self.tables.len()
    }
}

/// Takes the xtables lock and reads every table `prepared`'s blocks
/// write, when every block of every family is ready for the direct
/// loader (one that goes to the tool would drop the hold at once).
/// `None` when there is nothing to read or a read fails: the restores
/// then read as usual (and say what failed).
pub(crate) fn read_ahead(netns: Option<&str>, prepared: &[(Family, Prepared)]) -> Option<Ahead> {
    let mut wanted = Vec::new();
    for (family, p) in prepared {
        let Prepared::Blocks(Blocks {
            blocks: Some(blocks),
            ..
        }) = p
        else {
            return None;
        };
        for b in blocks {
            if !matches!(b.cmds, Lines::Done(Ok(_), _)) {
                return None;
            }
            if !wanted.contains(&(*family, b.table.clone())) {
                wanted.push((*family, b.table.clone()));
            }
        }
    }
    if wanted.is_empty() {
        return None;
    }
    let mut clock = Clock::default();
    let lock = Arc::new(sys::XtLock::take().ok()?);
    clock.lap("lock (ahead)");
    let mut loaders: Vec<(Family, Loader)> = Vec::new();
    let mut tables = HashMap::new();
    for (family, table) in wanted {
        if !loaders.iter().any(|(f, _)| *f == family) {
            loaders.push((family, Loader::open(netns, family).ok()?));
        }
        let (_, l) = loaders.iter().find(|(f, _)| *f == family)?;
        let t = l.read_table(&table).ok()?;
        let mut c = std::mem::take(&mut clock);
        c.lap("read ahead");
        tables.insert(
            (family, table),
            Read {
                _lock: Arc::clone(&lock),
                table: t,
                clock: c,
            },
        );
    }
    Some(Ahead { lock, tables })
}
