//! The direct x_tables loader: the runtime's IPv4 and IPv6 restores,
//! written to the legacy x_tables back end with one `IPT_SO_SET_REPLACE`
//! (`IP6T_SO_SET_REPLACE`) per COMMIT block instead of
//! `iptables-legacy-restore --noflush` (`ip6tables-legacy-restore`).
//!
//! # Why
//! At 100,000 rules a restore is ~134,000 `-m set` rules, and libxt_set
//! opens a socket and makes two getsockopts (a linear search of the
//! kernel's sets by name) for every one of them: a third of the tool's CPU
//! (issue 21). The loader asks for each set's index once per set, and
//! builds the table itself (what libiptc's commit does).
//!
//! # What it does
//! Every restore of the runtime goes through `Iptables::restore`, whose
//! text is COMMIT blocks of `:CHAIN - [0:0]`, `-A`, `-I CHAIN 1`, `-D`
//! and `-X` lines. Per block, in the text's order: if every line parses
//! into what the loader writes ([`spec`], [`ext`]), it takes
//! `/run/xtables.lock` (as the tools' `-w`), reads the table
//! ([`table`]: GET_INFO + GET_ENTRIES), applies the lines with the tools'
//! `--noflush` meaning, lays the table out and replaces it, then adds the
//! counters of every entry it carried over (as libiptc). Anything else —
//! an extension or option it does not write, a line the tool would
//! refuse (a missing chain or set, a `-D` of no rule), or any errno from
//! the kernel — sends that block to the tool (consecutive such blocks in
//! one run), which then also gives the real message. Each direct block is
//! a line in the exec log (program [`DIRECT`]) and, with
//! `WEIR_EXEC_TRACE`, on standard error; each fallback says why.
//!
//! # Encoded before the sets exist
//! A rule names a set by the kernel's index, but the parse and the
//! encoding need neither the index nor the table: [`pre`] encodes with
//! the indexes left out and writes them once the sets are looked up.
//! The lookups run on a second thread beside the lock and the table's
//! read, and so does the parse and encoding of a restore given as text;
//! an apply hands over its step 2 already parsed and encoded
//! ([`prepare`]), done while step 1's `ipset restore` kept the kernel
//! busy and the CPU idle, and with the tables it writes already read
//! ([`ahead`]: the lock taken then, held to the last replace).
//!
//! # Both families, one code path
//! The IPv4 (`ipt_entry`) and IPv6 (`ip6t_entry`) back ends differ in the
//! entry's layout, the socket and a few option numbers ([`abi`]), and in
//! what some extensions write (ICMP, REJECT codes, NAT addresses:
//! [`ext`]); the table, its layout, the apply of the lines and the
//! start's printer are shared and read the family's offsets. Each family
//! is its own restore text (its own tables), so a dual-stack apply makes
//! two direct loads. The sets a rule names must be of the table's family
//! (as libxt_set checks), through the IPv4 socket ipset answers on.
//!
//! Only when the tools in use are the legacy ones: on a node whose
//! iptables is nf_tables-based the x_tables tables are not the ones in
//! force. `WEIR_XTABLES=tools` (or [`super::Options::xtables`]) turns it
//! off for both families, and the sets' direct load ([`ipset_load`])
//! and read ([`ipset_save`]: one netlink dump printed as `ipset save`
//! prints it, for the apply's start and read-back and `weir status`).
//! The rules are read back directly where they are loaded directly
//! ([`saved`]).

pub(crate) mod abi;
mod ahead;
pub(crate) mod ext;
pub(crate) mod ext_target;
pub(crate) mod ipset_dump;
pub mod ipset_load;
pub(crate) mod ipset_proto;
pub mod ipset_save;
pub(crate) mod ipset_text;
pub(crate) mod pre;
pub(crate) mod save;
pub(crate) mod save_addr;
pub(crate) mod save_target;
pub mod saved;
pub(crate) mod spec;
pub(crate) mod sys;
pub(crate) mod table;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub(crate) use ahead::{read_ahead, Ahead};
use spec::Cmd;
use table::{Jump, Table};

use super::exec::{Ran, NETNS_DIR, TRACE_VAR};
use super::Iptables;
use crate::bundle::Family;
use crate::error::Error;

/// The exec log's program name for a block loaded directly.
pub const DIRECT: &str = "x_tables (direct)";

/// The environment switch: `tools` makes every restore use the tools.
pub const MODE_VAR: &str = "WEIR_XTABLES";

/// How restores reach x_tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XtMode {
    /// Directly where the legacy tools are in use ([`self`]), else the
    /// tools.
    #[default]
    Direct,
    /// Always `iptables-restore` / `ip6tables-restore`.
    Tools,
}

impl XtMode {
    /// The default, unless `WEIR_XTABLES=tools`.
    pub fn from_env() -> XtMode {
        match std::env::var(MODE_VAR).as_deref() {
            Ok("tools") => XtMode::Tools,
            _ => XtMode::Direct,
        }
    }
}

/// Restore blocks the direct loader wrote, and those it sent to the tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub direct: usize,
    pub tool: usize,
}

impl Counts {
    /// The blocks counted after `before`.
    pub fn since(self, before: Counts) -> Counts {
        Counts {
            direct: self.direct - before.direct.min(self.direct),
            tool: self.tool - before.tool.min(self.tool),
        }
    }
}

/// One `*table … COMMIT` block of restore text.
struct Block<'t> {
    table: &'t str,
    lines: Vec<&'t str>,
    text: String,
}

/// Splits restore text into blocks; `None` if it is not only blocks.
fn blocks(text: &str) -> Option<Vec<Block<'_>>> {
    let mut out = Vec::new();
    let mut cur: Option<Block> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match (&mut cur, line.strip_prefix('*')) {
            (None, Some(t)) => {
                cur = Some(Block {
                    table: t.trim(),
                    lines: Vec::new(),
                    text: format!("{line}\n"),
                })
            }
            (None, None) | (Some(_), Some(_)) => return None,
            (Some(b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
                if line == "COMMIT" {
                    out.extend(cur.take());
                } else {
                    b.lines.push(line);
                }
            }
        }
    }
    cur.is_none().then_some(out)
}

impl Iptables {
    /// Whether `family`'s restores go to x_tables directly.
    pub(crate) fn direct_xtables(&self, family: Family) -> bool {
        self.opts.xtables == XtMode::Direct && !self.uses_nft(family)
    }

    /// [`Iptables::restore`] with the legacy tools: each block directly
    /// where it can be, else with the family's tool.
    pub(crate) fn restore_direct(
        &self,
        step: &str,
        family: Family,
        text: &str,
    ) -> Result<(), Error> {
        let t = Instant::now();
        let r = self.restore_blocks(step, family, text);
        if std::env::var_os(TRACE_VAR).is_some() {
            eprintln!(
                "weir: {} restore ({} bytes) in {:.3}s",
                abi::of(family).label,
                text.len(),
                t.elapsed().as_secs_f64()
            );
        }
        r
    }

    fn restore_blocks(&self, step: &str, family: Family, text: &str) -> Result<(), Error> {
        // Each block's lines are parsed and encoded beside its table's
        // read.
        let blocks = blocks(text).map(|bs| {
            bs.into_iter()
                .map(|b| ParsedBlock {
                    table: b.table.to_string(),
                    text: b.text,
                    cmds: Lines::Raw(b.lines),
                })
                .collect()
        });
        self.load_blocks(step, family, text, blocks, &mut None)
    }

    /// [`Iptables::restore`] of text [`prepare`]d earlier (beside step 1,
    /// `apply.rs`): with the tool when `family`'s restores do not go to
    /// x_tables directly, else as [`Iptables::restore_direct`].
    ///
    /// `ahead` holds the tables read ahead ([`read_ahead`]) and the
    /// lock they were read under; it is dropped before any tool runs.
    pub(crate) fn restore_prepared(
        &self,
        step: &str,
        family: Family,
        p: Prepared,
        ahead: &mut Option<Ahead>,
    ) -> Result<(), Error> {
        let (text, blocks) = match p {
            Prepared::Text(text) => {
                *ahead = None;
                return self.restore(step, family, &text);
            }
            Prepared::Blocks(Blocks { text, blocks }) => (text, blocks),
        };
        if !self.direct_xtables(family) {
            *ahead = None;
            return self.restore_tool(step, family, &text);
        }
        let t = Instant::now();
        let len = text.len();
        let r = self.load_blocks(step, family, &text, blocks, ahead);
        if std::env::var_os(TRACE_VAR).is_some() {
            eprintln!(
                "weir: {} restore ({len} bytes, parsed before) in {:.3}s",
                abi::of(family).label,
                t.elapsed().as_secs_f64()
            );
        }
        r
    }

    fn load_blocks(
        &self,
        step: &str,
        family: Family,
        text: &str,
        blocks: Option<Vec<ParsedBlock<'_>>>,
        ahead: &mut Option<Ahead>,
    ) -> Result<(), Error> {
        let Some(blocks) = blocks else {
            *ahead = None;
            return self.restore_tool(step, family, text);
        };
        let mut pending = String::new();
        // No socket, no direct load: each block goes to the tool, which
        // says why.
        let loader = Loader::open(self.exec.netns(), family).map_err(|e| format!("socket: {e}"));
        for b in blocks {
            // The block's table was read ahead ([`Ahead`]), or its lines
            // are parsed and encoded (unless they were before,
            // [`prepare`]) and its sets looked up on a second thread
            // while this one takes the lock and reads the table (when no
            // block waits for the tool: the read must see what that
            // block does). A block that does not parse or encode, or
            // names a set the kernel does not have, drops the read, and
            // with it the lock, and goes to the tool.
            let held = ahead.as_ref().map(|a| a.lock.clone());
            let early = ahead.as_mut().and_then(|a| a.take(family, &b.table));
            let (ready, read) = match (&loader, b.cmds) {
                (_, Lines::Done(Err(why), _)) => (Err(why), None),
                (Err(why), _) => (Err(why.clone()), None),
                (Ok(l), cmds) if pending.is_empty() => match early {
                    Some(read) => (ready(cmds, family, &l.sock), Some(Ok(read))),
                    None => std::thread::scope(|s| {
                        let h = s.spawn(|| ready(cmds, family, &l.sock));
                        let read = l.read(&b.table, held.as_ref());
                        let ready = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                        (ready, Some(read))
                    }),
                },
                (Ok(l), cmds) => (ready(cmds, family, &l.sock), None),
            };
            let (cmds, enc, (parse, lookups)) = match ready {
                Ok(c) => c,
                Err(why) => {
                    // The tool takes the lock: nothing of ours may hold
                    // it, and every later block reads what the tool left.
                    drop(read);
                    *ahead = None;
                    self.trace_fallback(family, &b.table, &why);
                    pending.push_str(&b.text);
                    continue;
                }
            };
            if !pending.is_empty() {
                self.restore_tool(step, family, &std::mem::take(&mut pending))?;
            }
            let Ok(l) = &loader else {
                unreachable!("a block is ready only with a socket")
            };
            let t = Instant::now();
            let read = read.unwrap_or_else(|| l.read(&b.table, held.as_ref()));
            drop(held);
            match read.and_then(|r| l.write(&b.table, r, &cmds, enc)) {
                Ok((entries, laps)) => {
                    if std::env::var_os(TRACE_VAR).is_some() {
                        eprintln!(
                            "weir: loaded {} table {} directly ({} lines, {entries} entries) in {:.3}s after the read (parse and encode {parse}, set lookups {lookups:.3}s beside the read, {laps})",
                            abi::of(family).label,
                            b.table,
                            cmds.len(),
                            t.elapsed().as_secs_f64(),
                        );
                    }
                    self.exec.count_direct();
                    self.exec.record(Ran {
                        program: DIRECT.to_string(),
                        args: vec![
                            "--noflush".into(),
                            family.name().to_string(),
                            b.table.to_string(),
                        ],
                        netns: self.exec.netns().map(str::to_string),
                        stdin: Some(b.text.clone()),
                        status: Some(0),
                        stderr: String::new(),
                    });
                }
                Err(why) => {
                    *ahead = None;
                    self.trace_fallback(family, &b.table, &why);
                    self.restore_tool(step, family, &b.text)?;
                }
            }
        }
        if !pending.is_empty() {
            self.restore_tool(step, family, &pending)?;
        }
        Ok(())
    }

    fn trace_fallback(&self, family: Family, table: &str, why: &str) {
        if std::env::var_os(TRACE_VAR).is_some() {
            eprintln!(
                "weir: {} table {table} goes to the tool: {why}",
                abi::of(family).label
            );
        }
        self.exec.count_fallback();
    }
}

/// The family's sockets in the target namespace.
struct Loader {
    sock: sys::Sock,
}

impl Loader {
    fn open(netns: Option<&str>, family: Family) -> std::io::Result<Loader> {
        let file = netns
            .map(|n| File::open(Path::new(NETNS_DIR).join(n)))
            .transpose()?;
        Ok(Loader {
            sock: sys::Sock::open(file.as_ref(), abi::of(family))?,
        })
    }

    /// Applies one block's commands to `table`; the number of entries
    /// written.
    fn load(&self, name: &str, cmds: &[Cmd]) -> Result<u32, String> {
        let mut ctx = ext::Ctx::new(&self.sock);
        let mut enc = pre::encode(cmds, &mut ctx)?;
        pre::resolve(&mut enc, &mut ctx)?;
        self.write(name, self.read(name, None)?, cmds, enc)
            .map(|(n, _)| n)
    }

    /// Takes the lock (or shares `held`, this process's hold of it: a
    /// second `flock` would wait for ourselves) and reads table `name`.
    fn read(&self, name: &str, held: Option<&Arc<sys::XtLock>>) -> Result<Read, String> {
        let mut clock = Clock::default();
        let lock = match held {
            Some(l) => Arc::clone(l),
            None => Arc::new(sys::XtLock::take().map_err(|e| format!("xtables lock: {e}"))?),
        };
        clock.lap("lock");
        let table = self.read_table(name)?;
        clock.lap("read");
        Ok(Read {
            _lock: lock,
            table,
            clock,
        })
    }

    /// Reads table `name` (GET_INFO + GET_ENTRIES); the caller holds the
    /// lock.
    fn read_table(&self, name: &str) -> Result<Table, String> {
        let info = self.sock.info(name).map_err(|e| format!("GET_INFO: {e}"))?;
        let blob = self
            .sock
            .entries(name, info.size)
            .map_err(|e| format!("GET_ENTRIES: {e}"))?;
        let t = Table::decode(
            self.sock.abi(),
            &blob,
            info.valid_hooks,
            info.hook_entry,
            info.underflow,
        )?;
        if t.num_entries != info.num_entries {
            return Err("GET_ENTRIES disagrees with GET_INFO".into());
        }
        Ok(t)
    }

    /// Applies `cmds` to the table `read` holds and replaces it (then
    /// releases the lock); the number of entries written and where the
    /// time went (for the trace).
    fn write(
        &self,
        name: &str,
        read: Read,
        cmds: &[Cmd],
        enc: pre::Encoded,
    ) -> Result<(u32, String), String> {
        let Read {
            _lock,
            table: mut t,
            mut clock,
        } = read;
        clock.lap("wait");
        pre::apply_all(&mut t, cmds, enc)?;
        clock.lap("lines");
        let l = t.layout()?;
        clock.lap("layout");
        let old = self
            .sock
            .replace(
                name,
                t.valid_hooks,
                l.num_entries(),
                l.hook_entry,
                l.underflow,
                t.num_entries,
                &l.blob,
            )
            .map_err(|e| format!("SET_REPLACE: {e}"))?;
        clock.lap("replace");
        let counters: Vec<(u64, u64)> = l
            .old
            .iter()
            .map(|o| {
                o.and_then(|i| old.get(i as usize).copied())
                    .unwrap_or((0, 0))
            })
            .collect();
        if counters.iter().any(|c| *c != (0, 0)) {
            // The table is in force; counters lost here are only counters.
            if let Err(e) = self.sock.add_counters(name, &counters) {
                if std::env::var_os(TRACE_VAR).is_some() {
                    eprintln!("weir: table {name}: carrying the counters over failed: {e}");
                }
            }
        }
        clock.lap("counters");
        Ok((l.num_entries(), clock.laps))
    }
}

/// A table read under the lock, and the laps so far.
struct Read {
    _lock: Arc<sys::XtLock>,
    table: Table,
    clock: Clock,
}

/// A block's commands, encoded with their sets' indexes written
/// ([`pre`]), and the times it took for the trace: the parse and encode
/// (as printed), the set lookups.
type Ready = (Vec<Cmd>, pre::Encoded, (String, f64));

/// Parses and encodes a block's lines (unless [`prepare`] did), then
/// looks up the sets they name and writes their indexes — the sets are
/// not under the xtables lock, so this needs no table state and runs
/// beside the read.
fn ready(lines: Lines<'_>, family: Family, sock: &sys::Sock) -> Result<Ready, String> {
    let t = Instant::now();
    let (cmds, mut enc, parse) = match lines {
        Lines::Raw(lines) => {
            let (cmds, enc) = parse_encode(&lines, family, sock)?;
            let secs = t.elapsed().as_secs_f64();
            (cmds, enc, format!("{secs:.3}s beside the read"))
        }
        Lines::Done(done, secs) => {
            let (cmds, enc) = done?;
            (cmds, enc, format!("{secs:.3}s before"))
        }
    };
    let t = Instant::now();
    pre::resolve(&mut enc, &mut ext::Ctx::new(sock))?;
    Ok((cmds, enc, (parse, t.elapsed().as_secs_f64())))
}

/// The part of [`ready`] that needs no set: the parse and the encoding.
fn parse_encode(
    lines: &[&str],
    family: Family,
    sock: &sys::Sock,
) -> Result<(Vec<Cmd>, pre::Encoded), String> {
    let cmds = parse(lines, family)?;
    let enc = pre::encode(&cmds, &mut ext::Ctx::new(sock))?;
    Ok((cmds, enc))
}

fn parse(lines: &[&str], family: Family) -> Result<Vec<Cmd>, String> {
    lines.iter().map(|l| spec::command(l, family)).collect()
}

/// A restore text of one family split into its COMMIT blocks, each
/// block's lines parsed and its rules encoded but for the sets' indexes
/// ([`pre`]): the part of a direct restore that needs neither the
/// kernel's sets nor its tables, so an apply does it beside step 1
/// (`ipset restore`), whose time is mostly the kernel waiting.
pub(crate) enum Prepared {
    /// Not prepared: restored as any text ([`Iptables::restore`]).
    Text(String),
    Blocks(Blocks),
}

/// A text [`prepare`]d.
pub(crate) struct Blocks {
    text: String,
    /// `None`: the text is not only COMMIT blocks (the tool gets it).
    blocks: Option<Vec<ParsedBlock<'static>>>,
}

/// One block of a restore, its lines parsed and encoded or not yet.
struct ParsedBlock<'t> {
    table: String,
    /// The block's text, for the tool and the exec log.
    text: String,
    cmds: Lines<'t>,
}

/// A block's lines: as written, or parsed and encoded (or why not: the
/// block goes to the tool) with the time it took in seconds.
enum Lines<'t> {
    Raw(Vec<&'t str>),
    Done(Result<(Vec<Cmd>, pre::Encoded), String>, f64),
}

/// Splits `text` into blocks, parses each block's lines and encodes its
/// rules (no lock, no table, no set: see [`Prepared`]; the socket of
/// `netns` answers the extensions' revisions).
pub(crate) fn prepare(netns: Option<&str>, family: Family, text: &str) -> Prepared {
    let loader = Loader::open(netns, family).map_err(|e| format!("socket: {e}"));
    let blocks = blocks(text).map(|bs| {
        bs.into_iter()
            .map(|b| {
                let t = Instant::now();
                let done = match &loader {
                    Ok(l) => parse_encode(&b.lines, family, &l.sock),
                    Err(why) => Err(why.clone()),
                };
                ParsedBlock {
                    table: b.table.to_string(),
                    text: b.text,
                    cmds: Lines::Done(done, t.elapsed().as_secs_f64()),
                }
            })
            .collect()
    });
    Prepared::Blocks(Blocks {
        text: text.to_string(),
        blocks,
    })
}

/// Laps of a load, for the trace.
struct Clock {
    at: Instant,
    laps: String,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            at: Instant::now(),
            laps: String::new(),
        }
    }
}

impl Clock {
    fn lap(&mut self, what: &str) {
        let now = Instant::now();
        if !self.laps.is_empty() {
            self.laps.push_str(", ");
        }
        self.laps.push_str(&format!(
            "{what} {:.3}s",
            now.duration_since(self.at).as_secs_f64()
        ));
        self.at = now;
    }
}

/// Loads restore `text` of `family` into the namespace `netns` with the
/// direct loader only — no tool and no fallback: `Err` names the first
/// block it would have sent to the tool. For the oracle tests.
pub fn load_direct(netns: Option<&str>, family: Family, text: &str) -> Result<u32, String> {
    let blocks = blocks(text).ok_or("not COMMIT blocks")?;
    let l = Loader::open(netns, family).map_err(|e| e.to_string())?;
    let mut n = 0;
    for b in blocks {
        let cmds = parse(&b.lines, family).map_err(|e| format!("table {}: {e}", b.table))?;
        n += l
            .load(b.table, &cmds)
            .map_err(|e| format!("table {}: {e}", b.table))?;
    }
    Ok(n)
}

/// One chain of a table as the kernel holds it: each entry's bytes with
/// counters, `comefrom` and offset verdicts zeroed, and where it jumps
/// (a chain name, `"(next)"`, or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDump {
    pub name: String,
    pub policy: Option<Vec<u8>>,
    pub rules: Vec<(Vec<u8>, String)>,
}

/// Reads `family`'s table `table` of `netns` (GET_INFO + GET_ENTRIES) as
/// chains.
pub fn dump(netns: Option<&str>, family: Family, table: &str) -> Result<Vec<ChainDump>, String> {
    let l = Loader::open(netns, family).map_err(|e| e.to_string())?;
    let info = l.sock.info(table).map_err(|e| format!("GET_INFO: {e}"))?;
    let blob = l
        .sock
        .entries(table, info.size)
        .map_err(|e| format!("GET_ENTRIES: {e}"))?;
    let abi = l.sock.abi();
    let t = Table::decode(
        abi,
        &blob,
        info.valid_hooks,
        info.hook_entry,
        info.underflow,
    )?;
    let show = |r: &table::Rule| {
        let jump = match &r.jump {
            Jump::None => String::new(),
            Jump::Next => "(next)".into(),
            Jump::Chain(c) => c.clone(),
        };
        (r.masked(abi), jump)
    };
    Ok(t.chains
        .iter()
        .filter(|c| !c.gone)
        .map(|c| ChainDump {
            name: c.name.clone(),
            policy: c.policy.as_ref().map(|p| show(p).0),
            rules: c.rules.iter().map(show).collect(),
        })
        .collect())
}

/// Per set name asked, its set index (`None`: no such set of the
/// family).
pub type SetIndexes = Vec<Option<u16>>;

/// The index of each of `names` as a set of `family` in `netns` two ways:
/// from the one ipset dump the loader uses past a few dozen sets, and
/// from one `IP_SET_OP_GET_FNAME` each (what the tools ask). `None`: no
/// such set of that family. For the test that the two agree.
pub fn set_indexes_both_ways(
    netns: Option<&str>,
    family: Family,
    names: &[&str],
) -> Result<(SetIndexes, SetIndexes), String> {
    let l = Loader::open(netns, family).map_err(|e| e.to_string())?;
    let headers = l.sock.ipset_headers().map_err(|e| format!("dump: {e}"))?;
    let nfproto = l.sock.abi().nfproto;
    let dumped = names
        .iter()
        .map(|n| {
            headers
                .get(*n)
                .and_then(|h| (h.family == nfproto).then_some(h.index))
        })
        .collect();
    let asked = names
        .iter()
        .map(|n| l.sock.set_index(n).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dumped, asked))
}
