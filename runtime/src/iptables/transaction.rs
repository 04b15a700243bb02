//! Restore text as COMMIT blocks, and how large one transaction may be.
//!
//! With the legacy tools every COMMIT replaces a whole table, so the
//! apply puts as much as it can into one (load, switch and the old
//! generation's removal, [`super::fold`]); the nf_tables tools pay for a
//! transaction's size with its square, so they get blocks of
//! [`NFT_LINES_PER_COMMIT`] lines. Deleting chains goes through
//! [`delete_chains_lines`]: flushed first, then deleted in the order
//! libiptc's chain index pays least for ([`super::load::deletion_order`]).

use super::{Iptables, Variant};
use crate::bundle::Family;

/// `:CHAIN - [0:0]`: creates the chain, or flushes it.
pub(crate) fn declare(chain: &str) -> String {
    format!(":{chain} - [0:0]")
}

/// `lines` of one table as consecutive COMMIT blocks of at most `max`
/// lines each (`lines` must stay valid when cut anywhere).
pub(crate) fn blocks_text(table: &str, lines: &[String], max: usize) -> String {
    let mut s = String::new();
    for chunk in lines.chunks(max.max(1)) {
        s.push_str(&format!("*{table}\n"));
        for l in chunk {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
    }
    s
}

/// Deletes `chains` of one table after running `first` (removals of jumps
/// into them from chains that stay): every chain is flushed before any is
/// deleted, so the blocks may be cut anywhere.
pub(crate) fn delete_chains_text(
    table: &str,
    first: &[String],
    chains: &[String],
    max: usize,
) -> String {
    if first.is_empty() && chains.is_empty() {
        return String::new();
    }
    blocks_text(table, &delete_chains_lines(first, chains), max)
}

/// [`delete_chains_text`]'s lines: `first`, then every chain flushed,
/// then deleted ([`super::load::deletion_order`]).
pub(crate) fn delete_chains_lines(first: &[String], chains: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = first.to_vec();
    lines.extend(chains.iter().map(|c| declare(c)));
    lines.extend(
        super::load::deletion_order(chains)
            .into_iter()
            .map(|c| format!("-X {c}")),
    );
    lines
}

/// Lines per COMMIT block for the nf_tables-based tools. Their userspace
/// cost of one transaction grows with the square of its size
/// (`iptables-nft-restore` 1.8.9 took 90 s for the 88,000 lines of 10,000
/// services in one transaction, 1.7 s in blocks of 1,000).
const NFT_LINES_PER_COMMIT: usize = 1000;

impl Iptables {
    /// How many lines one COMMIT block of bulk restore text may have: the
    /// nf_tables tools need small transactions; the legacy ones rewrite the
    /// whole table on every COMMIT, so they get one.
    pub(crate) fn lines_per_commit(&self, family: Family) -> usize {
        if self.uses_nft(family) {
            NFT_LINES_PER_COMMIT
        } else {
            usize::MAX
        }
    }

    /// Whether the tools in use are the nf_tables-based ones (`System`:
    /// as `iptables-restore --version` says, asked once per family for
    /// this runtime's life: every read of the rules asks).
    pub(crate) fn uses_nft(&self, family: Family) -> bool {
        match self.opts.variant {
            Variant::Nft => true,
            Variant::Legacy => false,
            Variant::System => *self.nft[usize::from(family == Family::Ipv6)].get_or_init(|| {
                self.exec
                    .run(&self.opts.variant.restore(family), &["--version"], None)
                    .is_ok_and(|o| o.stdout.contains("nf_tables") || o.stderr.contains("nf_tables"))
            }),
        }
    }

    /// Destroys sets over netlink (`IPSET_CMD_DESTROY` per set, many per
    /// `send`, every ACK checked: [`super::xt::ipset_load::SetSock::destroy`])
    /// unless `WEIR_XTABLES=tools`, or with one `ipset restore` batch;
    /// the sets the kernel refused (a set still referenced by rules the
    /// kernel is releasing, say), or all of them if the netlink path
    /// failed, go to the tool one by one with retries. Returns the
    /// failures.
    pub(crate) fn destroy_sets_batch(&self, sets: &[String]) -> Vec<String> {
        if sets.is_empty() {
            return Vec::new();
        }
        if self.opts.xtables == super::xt::XtMode::Direct {
            let trace = std::env::var_os(super::exec::TRACE_VAR).is_some();
            let t = std::time::Instant::now();
            let done = self.open_set_sock().and_then(|mut sock| sock.destroy(sets));
            match done {
                Ok(left) => {
                    if trace {
                        eprintln!(
                            "weir: destroyed {} sets directly in {:.3}s ({} refused)",
                            sets.len() - left.len(),
                            t.elapsed().as_secs_f64(),
                            left.len()
                        );
                    }
                    self.exec.record(super::exec::Ran {
                        program: super::xt::ipset_load::IPSET_DIRECT.to_string(),
                        args: vec!["destroy".into()],
                        netns: self.exec.netns().map(str::to_string),
                        stdin: Some(sets.iter().map(|s| format!("destroy {s}\n")).collect()),
                        status: Some(0),
                        stderr: String::new(),
                    });
                    let left: Vec<String> = left.into_iter().map(|(s, _)| s).collect();
                    return self.destroy_sets(&left);
                }
                Err(why) => {
                    if trace {
                        eprintln!("weir: sets to destroy go to ipset: {why}");
                    }
                }
            }
        }
        let text: String = sets.iter().map(|s| format!("destroy {s}\n")).collect();
        match self.exec.run("ipset", &["restore"], Some(&text)) {
            Ok(out) if out.success => Vec::new(),
            // The batch stops at the first failure: what it destroyed is
            // gone, and the loop takes "does not exist" as done.
            _ => self.destroy_sets(sets),
        }
    }
}
