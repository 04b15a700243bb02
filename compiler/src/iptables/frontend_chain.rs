//! One frontend's nat chains: the weighted random choice among its
//! backends (`-m statistic`), client-IP affinity (`-m recent`) and the
//! DNAT. The one statement of that layout, called by the generator
//! ([`super::services::nat`]) and by the runtime when `weir endpoints`
//! rewrites a service's backends in place
//! (`runtime/src/iptables/service_chains.rs`), so a chain rewritten at
//! run time is exactly what a recompile would have emitted for the same
//! backends in the same slots.
//!
//! ```text
//! WEIR-FE<k>: [-m recent --rcheck per backend slot → WEIR-BE<k>-<s>]
//!             -m statistic --mode random --probability w_i/(w_i+…+w_n) -p P -j DNAT --to-destination ADDR:PORT …
//!   with affinity or a check before the DNAT, the choice goes to a chain:
//!             -m statistic … -g WEIR-BE<k>-<s>
//! WEIR-BE<k>-<s>: [-m recent --set] [-j <check>] -p P -j DNAT --to-destination ADDR:PORT
//! ```
//!
//! **Slots.** A backend's chain `WEIR-BE<k>-<s>` and its affinity list
//! `weir-af<k>-<s>` are named by its slot `s`, not by its position in
//! the list: the compiler gives backend `i` slot `i`; an in-place update
//! keeps each remaining backend in its slot (so its affinity list, and
//! the clients it remembers, stay with it) and puts a new backend in a
//! free slot.

use std::net::IpAddr;

use super::text::{comment, Family, FastMap};
use crate::model::Proto;

/// A backend of a frontend and the slot naming its chain and affinity
/// list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub slot: usize,
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
}

/// What the chains of one frontend depend on.
#[derive(Debug, Clone, Copy)]
pub struct FrontendSpec {
    /// The frontend's position in the service table (`WEIR-FE<k>`).
    pub k: usize,
    /// The service's index (the rules' `weir:svc<S>` comment).
    pub service: usize,
    pub fam: Family,
    pub proto: Proto,
    /// Client-IP affinity timeout (seconds).
    pub affinity: Option<u32>,
}

/// The frontend's chain name.
pub fn frontend_chain(k: usize) -> String {
    format!("WEIR-FE{k}")
}

/// A backend slot's chain name.
pub fn backend_chain(k: usize, slot: usize) -> String {
    format!("WEIR-BE{k}-{slot}")
}

/// A backend slot's affinity list (`-m recent --name`).
pub fn affinity_list(k: usize, slot: usize) -> String {
    format!("weir-af{k}-{slot}")
}

/// `-m statistic` matches by (weight, remaining weight): formatting a
/// float exactly is slow and most services repeat the same few.
pub type StatisticCache = FastMap<(u64, u64), String>;

/// The chains of one frontend, in declaration order: the frontend chain
/// first, then the chain of each backend that needs one (affinity or a
/// check), each with its rules as parts after `-A CHAIN` (the generator's
/// [`super::text::Tables::rule`] form, empty parts left out). `extras[i]`
/// is a call to put before backend `i`'s DNAT.
pub fn chains(
    spec: &FrontendSpec,
    backends: &[Slot],
    extras: &[Option<String>],
    statistic: &mut StatisticCache,
) -> Vec<(String, Vec<String>)> {
    let FrontendSpec {
        k,
        service,
        fam,
        proto,
        affinity,
    } = *spec;
    let c = comment(&format!("svc{service}"));
    let p = fam.proto(proto);
    let n = backends.len();
    let own = |i: usize| affinity.is_some() || extras.get(i).is_some_and(Option::is_some);
    let dnat = |i: usize| {
        let b = &backends[i];
        format!("-j DNAT --to-destination {}", fam.socket(b.addr, b.port))
    };
    let mut fe = Vec::new();
    if let Some(secs) = affinity {
        for b in backends {
            fe.push(join(&[
                &format!(
                    "-m recent --name {} --rcheck --seconds {secs} --reap --rsource",
                    affinity_list(k, b.slot)
                ),
                &c,
                &format!("-g {}", backend_chain(k, b.slot)),
            ]));
        }
    }
    // A backend needs a chain of its own for affinity (`--set`) or a
    // check before its DNAT; otherwise the choice DNATs directly (the
    // frontend chain is only entered by packets of protocol `p`).
    let go = |i: usize| {
        if own(i) {
            format!("-g {}", backend_chain(k, backends[i].slot))
        } else {
            dnat(i)
        }
    };
    let weights: Vec<u64> = backends.iter().map(|b| u64::from(b.weight)).collect();
    for i in 0..n {
        let rest: u64 = weights[i..].iter().sum();
        let pm = if own(i) {
            String::new()
        } else {
            format!("-p {p}")
        };
        if i + 1 < n {
            let m = statistic.entry((weights[i], rest)).or_insert_with(|| {
                let prob = weights[i] as f64 / rest as f64;
                format!("-m statistic --mode random --probability {prob:.10}")
            });
            fe.push(join(&[m, &pm, &c, &go(i)]));
        } else {
            fe.push(join(&[&pm, &c, &go(i)]));
        }
    }
    let mut out = vec![(frontend_chain(k), fe)];
    for (i, b) in backends.iter().enumerate() {
        if !own(i) {
            continue;
        }
        let mut rules = Vec::new();
        if affinity.is_some() {
            rules.push(join(&[
                &format!(
                    "-m recent --name {} --set --rsource",
                    affinity_list(k, b.slot)
                ),
                &c,
            ]));
        }
        if let Some(Some(x)) = extras.get(i) {
            rules.push(join(&[&c, x]));
        }
        rules.push(join(&[&format!("-p {p}"), &c, &dnat(i)]));
        out.push((backend_chain(k, b.slot), rules));
    }
    out
}

/// The parts joined as [`super::text::Tables::rule`] joins them.
fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`chains`] as `-A CHAIN …` lines (no checks before a DNAT): what the
/// runtime writes for a frontend whose chains it rewrites.
pub fn rule_lines(spec: &FrontendSpec, backends: &[Slot]) -> Vec<(String, Vec<String>)> {
    chains(spec, backends, &[], &mut StatisticCache::default())
        .into_iter()
        .map(|(chain, rules)| {
            let lines = rules.iter().map(|r| format!("-A {chain} {r}")).collect();
            (chain, lines)
        })
        .collect()
}
