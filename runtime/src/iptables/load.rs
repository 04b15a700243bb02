//! Getting a generation into the kernel and reading it back quickly at
//! 100,000 rules: where the tools' own costs grow faster than the text.
//!
//! Measured on this kernel (issue 21) for the 100,000-rule model (13,556
//! sets, 132,024 members, 250,498 rules per family):
//!
//! - **`ipset restore` is quadratic in the sets of one run**: libipset
//!   keeps the sets a run has created in a linked list and looks each
//!   `add` line's set up by name from its head (`ipset_type_get`:
//!   `strcmp` was 73 % of a 20 s run). So the sets are restored in
//!   batches of at most [`SETS_PER_RESTORE`] sets, each set whole in one
//!   batch (its `create` then its `add`s, in the bundle's order), the
//!   batches spread over a few concurrent `ipset restore` processes. The
//!   kernel's own name lookup (`find_set_and_id`, linear over the
//!   namespace's sets from the first one created) stays, and
//!   `iptables-restore` pays it once more for every `-m set` rule (libxt_set
//!   asks the kernel for the set's index by name: 36 % of a 25 s restore).
//!   So the sets are created most-referenced first ([`set_refs`]): the
//!   rules' references are very skewed (at 100,000 rules the average
//!   reference then lands on the 447th set instead of the 3,389th).
//!   Replacing a generation pays this scan past every set of the old one
//!   too: the kernel gives new sets the first free slots, after the old
//!   generation's, and the old sets stay until the switch is done.
//!   Measured (session 8, IPv4 `iptables-legacy-restore` of the
//!   100,000-rule model, 279,252 rules, 76,551 chains): 4.7 s CPU with
//!   only its own 6,778 IPv4 sets in the namespace, 7.4 s beside its
//!   empty IPv6 sets as well, 24.1 s (18.9 s of it system time) beside an
//!   old generation's 13,556 sets; at 10,000 rules 0.43 s against
//!   0.89 s (48 % kernel `strncmp`). So what cuts a replace is fewer
//!   live sets: no (empty) IPv6 sets for IPv4-only programs, and an
//!   unchanged set kept from the old generation instead of recreated.
//! - **creating sets waits for RCU** in a namespace that has not held
//!   so many before: the kernel's table of sets starts at 256 slots and
//!   grows by 64 (`IP_SET_INC`), each growth waiting for a grace period
//!   (`synchronize_net`, under the ipset mutex, so concurrent runs wait
//!   too). Measured with `strace -T` (session 12, load ~10): every 64th
//!   `create` blocked 15–20 ms, the others microseconds; the 6,778 sets
//!   of the 100,000-rule model take ~100 growths, so the ~1.5 s of step 1
//!   in a fresh namespace is mostly waiting, not CPU (0.7 s CPU by hand).
//!   Nothing in user space changes the step (the only knob is the
//!   module-wide `max_sets`), so the apply overlaps it with its own work
//!   that does not use the kernel (on a replace: the keep phase,
//!   `apply/start.rs`), but **not with `iptables-save`**: the ipset mutex
//!   is also what libxt_set's name lookup in the save takes for each
//!   `-m set` rule (`IP_SET_OP_GET_BYINDEX`), so a save beside a growing
//!   set restore waits out the grace periods too. Measured (session 15,
//!   a namespace of 6,800 sets and 134,000 `-m set` rules, 5,400 sets
//!   created in 256-set batches over two runs, three runs each): the save
//!   alone 0.59–0.81 s (1.49 s once in six), the restore alone 1.13–1.35 s, both started
//!   together 1.71–1.95 s (save) and 1.55–1.61 s (restore), no faster
//!   than one after the other; under `strace -T` 200 of the save's
//!   268,004 `getsockopt`s took over 1 ms (1.48 s in all, 48 over 10 ms)
//!   against 51 (0.22 s) alone, and sampled kernel stacks showed the save
//!   in `ip_set_sockfn_get` while `ipset` sat in `synchronize_rcu` under
//!   `ip_set_create`. Without the growth (slots freed before) the two
//!   still serialise, at a smaller cost: 0.92–0.99 s for both against
//!   0.60 + 0.37–0.52 s one after the other. The mutex is one for the
//!   whole machine, so another namespace's ipset work slows a save too.
//!   The table never shrinks, so only a namespace's first replace pays
//!   for the growth; later ones reuse the slots the generation before
//!   freed.
//! - **the tool's own CPU**: one `ipset restore` of the 100,000-rule
//!   model's 6,778 sets and 132,024 members in a fresh namespace took
//!   4.2 s wall, 2.33 s of it user time (session 17: text parsing,
//!   libipset's per-element work, one netlink message and one kernel
//!   lookup of the set by name per line). So each batch is written over
//!   netlink by the direct set loader ([`super::xt::ipset_load`]: a
//!   create and one many-member add per set), and only a batch it does
//!   not parse exactly or the kernel refuses goes to `ipset restore
//!   -exist` ([`Iptables::restore_set_batch`]).
//! - **`ipset save` beside the rules' read**: the sets are read three
//!   times (an apply's start and read-back, `weir status`); at 100,000
//!   rules `ipset save` took 0.19–0.30 s alone and 0.55 s beside the
//!   direct read of the IPv4 rules, which it slowed from 0.49 to 1.07 s
//!   at the start (session 18: the tool asks the kernel for the dump and
//!   formats every member through libipset, the two share the CPUs). So
//!   the sets are read with one `IPSET_CMD_LIST` dump printed here as the
//!   tool prints it ([`super::xt::ipset_save`], weir's sets only), and
//!   only a weir set it cannot print exactly sends the read to `ipset
//!   save` ([`Iptables::save_sets`]). Measured (session 18, the 6,778
//!   sets of the 100,000-rule model, a machine at load 5–7): 0.15–0.22 s
//!   wall against the tool's 0.17–0.25 s; ~0.1 s CPU (~75 ms of it the
//!   kernel's dump, which sends one set per datagram and walks each
//!   set's hash: `hash_net4_list`) against the tool's 0.13–0.15 s and a
//!   process. The kernel's part is the floor: beside the rules' read the
//!   two still share two cores.
//! - **every x_tables transaction costs the whole table**: legacy
//!   `iptables-restore` pulls the table from the kernel and writes it back
//!   whole at each `COMMIT`, and `iptables-save` prints it whole; the
//!   kernel re-checks every rule of the table. So an apply runs as few of
//!   them as it can (see `apply.rs`: one restore run per family for the
//!   load and the switch, with the legacy tools one COMMIT per table for
//!   both; one read-back, one save reused by the removal of the old
//!   generation; only the chains not kept from the generation in force,
//!   [`super::keep`]), and the saves of the two families and of the
//!   sets run concurrently (`iptables-save` takes no lock; restores do,
//!   the one `xtables.lock` of both families, so they stay sequential).
//!
//! - **deleting chains rebuilds libiptc's chain index** (legacy tools):
//!   libiptc keeps the chains sorted by name with an index of every 40th
//!   (`CHAIN_INDEX_BUCKET_LEN`), and deleting the last chain of an index
//!   bucket rebuilds the whole index (a walk over every chain). A
//!   generation's chains are contiguous in name order (`WEIR<g>-…`), so
//!   deleting them in that order (or any order that empties buckets one
//!   after another) rebuilt it about once per 40 chains: 78 % of the 11.3 s
//!   CPU of removing the old generation of the 100,000-rule model (76,551
//!   chains beside the new generation's). [`deletion_order`] deletes one
//!   chain of every 40 consecutive ones per round, so buckets only empty
//!   in the last round: 2.3 s. Any order is correct (every chain is
//!   flushed first); this one is only cheaper.
//!
//! [`Phases`] records where an apply's time went ([`super::ApplyReport`]),
//! for the benchmark's breakdown.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::bundle::Family;

use super::{restore, Iptables, Saved, FAMILIES};
use crate::error::Error;

/// Sets per `ipset restore` run (see the module doc): large enough that
/// process start-up is small beside the run, small enough that libipset's
/// linear lookup is too.
pub const SETS_PER_RESTORE: usize = 256;

/// Concurrent step-1 workers (each a netlink socket of the direct set
/// loader, or `ipset restore` runs).
const IPSET_WORKERS: usize = 2;

/// Where an apply's wall time went, phase by phase, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Phases(pub Vec<(&'static str, Duration)>);

impl Phases {
    /// Runs `f`, adding its wall time to phase `name`.
    pub(crate) fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.add(name, t.elapsed());
        out
    }

    pub(crate) fn add(&mut self, name: &'static str, d: Duration) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += d,
            None => self.0.push((name, d)),
        }
    }

    /// The time of phase `name` (zero if it did not run).
    pub fn get(&self, name: &str) -> Duration {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Duration::ZERO, |(_, d)| *d)
    }

    /// Every phase's time added up.
    pub fn total(&self) -> Duration {
        self.0.iter().map(|(_, d)| *d).sum()
    }
}

/// libiptc's chain index bucket (`CHAIN_INDEX_BUCKET_LEN` in
/// libiptc.c): the index holds every 40th chain in name order.
const CHAIN_INDEX_BUCKET: usize = 40;

/// `chains` in the order to delete them (see the module doc): by their
/// rank in name order (libiptc's `strcmp` order) modulo
/// [`CHAIN_INDEX_BUCKET`], then by rank, so each run of 40 chains
/// adjacent in name order loses one chain per round.
pub(crate) fn deletion_order(chains: &[String]) -> Vec<&String> {
    let mut sorted: Vec<&String> = chains.iter().collect();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut ranked: Vec<(usize, &String)> = sorted.into_iter().enumerate().collect();
    ranked.sort_by_key(|&(rank, _)| (rank % CHAIN_INDEX_BUCKET, rank));
    ranked.into_iter().map(|(_, c)| c).collect()
}

/// How many rule lines name each set (`--match-set NAME`).
pub(crate) fn set_refs<'a>(
    rules: impl Iterator<Item = &'a String>,
) -> std::collections::HashMap<String, usize> {
    let mut refs = std::collections::HashMap::new();
    for r in rules {
        for (at, _) in r.match_indices("--match-set ") {
            if let Some(name) = r[at + "--match-set ".len()..].split_whitespace().next() {
                *refs.entry(name.to_string()).or_insert(0) += 1;
            }
        }
    }
    refs
}

/// `ipset restore` text cut into batches of at most `per` sets, each set
/// whole (its lines in their order) in one batch, the sets most
/// referenced first (`refs`), else in order of first appearance. Lines
/// that name no set (none in a checked bundle) go with the first batch.
pub(crate) fn set_batches(
    text: &str,
    per: usize,
    refs: &std::collections::HashMap<String, usize>,
) -> Vec<String> {
    let mut order: Vec<&str> = Vec::new();
    let mut lines: std::collections::HashMap<&str, Vec<&str>> = std::collections::HashMap::new();
    let mut loose = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some(_), Some(name)) => {
                let entry = lines.entry(name).or_default();
                if entry.is_empty() {
                    order.push(name);
                }
                entry.push(line);
            }
            _ if line.trim().is_empty() => {}
            _ => loose.push(line),
        }
    }
    // Stable: equal counts keep the bundle's order.
    order.sort_by_key(|n| std::cmp::Reverse(refs.get(*n).copied().unwrap_or(0)));
    let mut out = Vec::new();
    for chunk in order.chunks(per.max(1)) {
        let mut s = String::new();
        if out.is_empty() {
            for l in &loose {
                s.push_str(l);
                s.push('\n');
            }
        }
        for name in chunk {
            for l in &lines[name] {
                s.push_str(l);
                s.push('\n');
            }
        }
        out.push(s);
    }
    if out.is_empty() && !loose.is_empty() {
        out.push(loose.iter().map(|l| format!("{l}\n")).collect());
    }
    out
}

impl Iptables {
    /// The kernel's rules of every family, concurrently, parsed: each
    /// family read directly where its restores go to x_tables directly,
    /// else with its save tool ([`Iptables::save_family`]).
    pub(crate) fn save_families(&self) -> Result<Saved, Error> {
        let runs: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = FAMILIES
                .into_iter()
                .map(|family| s.spawn(move || Ok::<_, Error>((family, self.save_family(family)?))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("save thread"))
                .collect()
        });
        runs.into_iter().collect()
    }

    /// The kernel's rules of one family, parsed: read directly
    /// ([`super::xt::saved`]) when the family's restores go to x_tables
    /// directly ([`Iptables::direct_xtables`]; off with
    /// `WEIR_XTABLES=tools` and with the nf_tables tools), else
    /// `iptables-save`. Every read of the kernel's rules goes through
    /// here: an apply's start and its read-back, `weir status`, the
    /// rollback and `weir detach`.
    pub(crate) fn save_family(
        &self,
        family: Family,
    ) -> Result<BTreeMap<String, restore::SavedTable>, Error> {
        if self.direct_xtables(family) {
            return self.read_family(family);
        }
        self.save_family_tool(family)
    }

    /// What reads `family`'s rules ([`Iptables::save_family`]), for
    /// messages.
    pub(crate) fn rules_reader(&self, family: Family) -> String {
        if self.direct_xtables(family) {
            super::xt::saved::SAVE_DIRECT.to_string()
        } else {
            self.opts.variant.save(family)
        }
    }

    /// `iptables-save` of one family, parsed.
    pub(crate) fn save_family_tool(
        &self,
        family: Family,
    ) -> Result<BTreeMap<String, restore::SavedTable>, Error> {
        let program = self.opts.variant.save(family);
        let out = self
            .exec
            .run_ok(&format!("reading rules ({program})"), &program, &[], None)?;
        Ok(restore::parse_save(&out.stdout))
    }

    /// [`Iptables::save_families`] and the sets' read (when `sets`:
    /// [`Iptables::save_sets`], one netlink dump unless
    /// `WEIR_XTABLES=tools`) concurrently.
    pub(crate) fn save_with_sets(&self, sets: bool) -> Result<(Saved, Option<String>), Error> {
        std::thread::scope(|s| {
            let ipset = sets.then(|| s.spawn(|| self.save_sets(true)));
            let saved = self.save_families();
            let ipset = ipset
                .map(|h| h.join().expect("sets read thread"))
                .transpose();
            Ok((saved?, ipset?))
        })
    }

    /// Creates and fills the sets of `text` (`ipset restore -exist`), in
    /// batches ([`set_batches`], most referenced by `refs` first) over
    /// concurrent workers, each batch written directly where it can be
    /// ([`Iptables::restore_set_batch`]). The first failure is returned (the caller removes
    /// whatever the generation created).
    pub(crate) fn restore_sets(
        &self,
        step: &str,
        text: &str,
        refs: &std::collections::HashMap<String, usize>,
    ) -> Result<(), Error> {
        let batches = set_batches(text, SETS_PER_RESTORE, refs);
        let workers = IPSET_WORKERS.min(batches.len()).max(1);
        let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let batches = &batches;
                    s.spawn(move || {
                        let mut sock = None;
                        for b in batches.iter().skip(w).step_by(workers) {
                            self.restore_set_batch(step, b, &mut sock)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("ipset restore thread"))
                .collect()
        });
        results.into_iter().collect()
    }

    /// One batch of [`Iptables::restore_sets`]: written by the direct set
    /// loader ([`super::xt::ipset_load`], on the worker's socket `sock`,
    /// opened at its first batch) unless `WEIR_XTABLES=tools`; anything
    /// it does not parse or the kernel refuses goes, whole, to `ipset
    /// restore -exist` (which redoes what was done, harmless under
    /// `-exist`, and gives the real message).
    fn restore_set_batch(
        &self,
        step: &str,
        b: &str,
        sock: &mut Option<Result<super::xt::ipset_load::SetSock, String>>,
    ) -> Result<(), Error> {
        if self.opts.xtables == super::xt::XtMode::Direct {
            let t = Instant::now();
            let sock = sock.get_or_insert_with(|| self.open_set_sock());
            let done = match sock {
                Ok(sock) => super::xt::ipset_text::parse(b).and_then(|sets| sock.load(&sets)),
                Err(why) => Err(why.clone()),
            };
            let trace = std::env::var_os(super::exec::TRACE_VAR).is_some();
            match done {
                Ok(()) => {
                    if trace {
                        eprintln!(
                            "weir: loaded a batch of sets directly ({} lines) in {:.3}s",
                            b.lines().count(),
                            t.elapsed().as_secs_f64()
                        );
                    }
                    self.exec.count_ipset(true);
                    self.exec.record(super::exec::Ran {
                        program: super::xt::ipset_load::IPSET_DIRECT.to_string(),
                        args: vec!["restore".into(), "-exist".into()],
                        netns: self.exec.netns().map(str::to_string),
                        stdin: Some(b.to_string()),
                        status: Some(0),
                        stderr: String::new(),
                    });
                    return Ok(());
                }
                Err(why) => {
                    if trace {
                        eprintln!("weir: a batch of sets goes to ipset restore: {why}");
                    }
                    self.exec.count_ipset(false);
                }
            }
        }
        self.exec
            .run_ok(step, "ipset", &["restore", "-exist"], Some(b))
            .map_err(|e| super::annotate(e, b))
            .map(drop)
    }

    /// The direct set loader's socket in the runtime's namespace.
    pub(crate) fn open_set_sock(&self) -> Result<super::xt::ipset_load::SetSock, String> {
        let file = self
            .exec
            .netns()
            .map(|n| std::fs::File::open(std::path::Path::new(super::exec::NETNS_DIR).join(n)))
            .transpose()
            .map_err(|e| format!("namespace: {e}"))?;
        super::xt::ipset_load::SetSock::open(file.as_ref()).map_err(|e| format!("socket: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_each_set_whole_and_in_order() {
        let text = "create a hash:net\nadd a 1.0.0.0/8\ncreate b hash:net\ncreate c hash:net\nadd b 2.0.0.0/8\nadd a 3.0.0.0/8\nadd c 4.0.0.0/8\n";
        let none = Default::default();
        let b = set_batches(text, 2, &none);
        assert_eq!(
            b,
            vec![
                "create a hash:net\nadd a 1.0.0.0/8\nadd a 3.0.0.0/8\ncreate b hash:net\nadd b 2.0.0.0/8\n",
                "create c hash:net\nadd c 4.0.0.0/8\n",
            ]
        );
        let all: usize = b.iter().map(|s| s.lines().count()).sum();
        assert_eq!(all, text.lines().count());
        assert_eq!(set_batches("", 2, &none), Vec::<String>::new());
        assert_eq!(set_batches(text, 100, &none).len(), 1);
        // Most referenced first.
        let rules = [
            "-A X -m set --match-set c src -j A".to_string(),
            "-A X -m set --match-set c dst -m set ! --match-set b src -j A".to_string(),
        ];
        let refs = set_refs(rules.iter());
        assert_eq!((refs["c"], refs["b"]), (2, 1));
        let b = set_batches(text, 2, &refs);
        assert_eq!(
            b,
            vec![
                "create c hash:net\nadd c 4.0.0.0/8\ncreate b hash:net\nadd b 2.0.0.0/8\n",
                "create a hash:net\nadd a 1.0.0.0/8\nadd a 3.0.0.0/8\n",
            ]
        );
    }

    #[test]
    fn deletion_spreads_over_index_buckets() {
        let chains: Vec<String> = (0..100).rev().map(|i| format!("WEIR1-C{i:03}")).collect();
        let order = deletion_order(&chains);
        assert_eq!(order.len(), 100);
        let all: std::collections::BTreeSet<&String> = order.iter().copied().collect();
        assert_eq!(all.len(), 100);
        // Ranks 0, 40, 80, then 1, 41, 81, …
        let firsts: Vec<&str> = order[..6].iter().map(|c| c.as_str()).collect();
        assert_eq!(
            firsts,
            [
                "WEIR1-C000",
                "WEIR1-C040",
                "WEIR1-C080",
                "WEIR1-C001",
                "WEIR1-C041",
                "WEIR1-C081"
            ]
        );
        // Any 40 chains adjacent in name order (an index bucket, however
        // aligned) hold one chain of each round, so they are all gone
        // only in the last round (ranks 39 and 79, the last two).
        let rank = |c: &String| chains.len() - 1 - chains.iter().position(|x| x == c).unwrap();
        for start in 0..=60 {
            let window = start..start + 40;
            let last = order
                .iter()
                .rposition(|c| window.contains(&rank(c)))
                .unwrap();
            assert!(last >= 100 - 2, "window {start} emptied at {last}");
        }
    }

    #[test]
    fn phases_add_up() {
        let mut p = Phases::default();
        p.add("a", Duration::from_millis(2));
        p.add("b", Duration::from_millis(3));
        p.add("a", Duration::from_millis(5));
        assert_eq!(p.get("a"), Duration::from_millis(7));
        assert_eq!(p.total(), Duration::from_millis(10));
        assert_eq!(p.0.len(), 2);
    }
}
