//! A new inventory's text compared with the recorded [`super::entries`]:
//! unchanged start and end taken as they are, unchanged objects neither
//! parsed nor decoded.

use std::collections::HashMap;
use std::net::IpAddr;

use super::entries;
use super::ns_tail::{changed_namespaces, may_name, tail_namespaces};
use super::record::{unique, EndpointRec, FastEndpoint, FxBuild};
use super::scan::{scan_from, scan_ranges};

#[derive(Debug, Clone)]
pub struct TextDiff {
    /// The entries of the new inventory: what to record once applied.
    pub entries: Vec<u8>,
    /// The new inventory has every name and address once.
    pub unique: bool,
    /// The endpoints that differ (by name, as [`changed_endpoints`]):
    /// the recorded versions and the new ones; the others are
    /// unchanged. `None` when a name or an address appears twice in
    /// either inventory: then `full` holds the new inventory, and only
    /// [`plan`] over both whole inventories is exact.
    pub changed: Option<(Vec<EndpointRec>, Vec<EndpointRec>)>,
    /// The whole new inventory, when it was parsed.
    pub full: Option<Vec<EndpointRec>>,
    /// How many endpoint objects of the new text were parsed (the others
    /// were recorded text, taken as they are).
    pub parsed: usize,
}

/// Why [`diff_text`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffError {
    /// The inventory has a problem: [`crate::inventory::parse_inventory`]
    /// reports it.
    Inventory,
    /// The record is unreadable.
    Record(String),
}

/// Compares an inventory file's text with the recorded entries `old`
/// (`old_unique`: every name and address appears once in them). The
/// start and the end of the file that equal the recorded text are taken
/// as they are; in between, objects are found by their brackets, and
/// those whose text equals a recorded entry's of the same name are
/// unchanged; the others are parsed and checked as
/// [`crate::inventory::parse_inventory`] checks them. A `"namespaces"`
/// section after the list is compared with the recorded one
/// ([`super::ns_tail`]): the endpoints of a namespace whose labels
/// changed are changed endpoints (decoded, not parsed again from the
/// file), the others are not looked at. Anything unusual (a file not
/// shaped `{"endpoints": [ {…}, … ]}` + namespaces, a name or address
/// twice) is parsed whole.
pub fn diff_text(old: &[u8], old_unique: bool, text: &str) -> Result<TextDiff, DiffError> {
    let (trailer, olds) = entries::split(old).map_err(DiffError::Record)?;
    if !old_unique {
        return diff_full(text);
    }
    // The recorded objects are decoded under the recorded namespaces.
    let old_ns = entries::namespaces(trailer).map_err(DiffError::Record)?;
    let b = text.as_bytes();
    // The unchanged start: whole recorded entries, gap and object.
    let (mut pos, mut prefix) = (0, 0);
    for o in &olds {
        let rest = &b[pos..];
        if rest.starts_with(o.gap.as_bytes()) && rest[o.gap.len()..].starts_with(o.text.as_bytes())
        {
            pos += o.gap.len() + o.text.len();
            prefix += 1;
        } else {
            break;
        }
    }
    // The unchanged end: the trailer, then whole entries (not when the
    // start changed: the first entry's gap holds the list's start).
    let trailer_kept =
        prefix > 0 && b.len() >= pos + trailer.len() && b.ends_with(trailer.as_bytes());
    let mut end = b.len() - if trailer_kept { trailer.len() } else { 0 };
    let mut suffix_from = olds.len();
    if trailer_kept {
        while suffix_from > prefix {
            let o = &olds[suffix_from - 1];
            let n = o.gap.len() + o.text.len();
            if end >= pos + n
                && b[..end].ends_with(o.text.as_bytes())
                && b[..end - o.text.len()].ends_with(o.gap.as_bytes())
            {
                end -= n;
                suffix_from -= 1;
            } else {
                break;
            }
        }
    }
    let ranges = if prefix == 0 {
        scan_ranges(b)
    } else {
        scan_from(b, pos, false, trailer_kept.then_some(end)).map(|(r, _)| r)
    };
    let Some(ranges) = ranges else {
        return diff_full(text);
    };
    // The new namespaces: the recorded ones when the end was kept, else
    // the new tail's (after the last object; the whole file when there
    // is none).
    let tail_at = ranges.last().map_or(pos, |r| r.1);
    let new_ns = if trailer_kept {
        old_ns.clone()
    } else {
        match tail_namespaces(&text[tail_at..]) {
            Some(ns) => ns,
            None => return diff_full(text),
        }
    };
    let parse = |t: &str| -> Result<EndpointRec, DiffError> {
        let e: FastEndpoint = serde_json::from_str(t).map_err(|_| DiffError::Inventory)?;
        if !crate::inventory::valid_name(&e.name) {
            return Err(DiffError::Inventory);
        }
        EndpointRec::resolve(e, &new_ns).ok_or(DiffError::Inventory)
    };
    let old_mid = prefix..suffix_from;
    // Namespaces whose labels changed: their endpoints' derived labels
    // did, whatever their objects' text (quoted, for [`may_name`]).
    let moved: Vec<String> = changed_namespaces(&old_ns, &new_ns)
        .iter()
        .map(|n| serde_json::to_string(n).expect("JSON"))
        .collect();
    // Recorded entries still in force unchanged.
    let mut kept = vec![false; olds.len()];
    kept[..prefix].fill(true);
    kept[suffix_from..].fill(true);
    let mut by_name: HashMap<&str, usize, FxBuild> =
        HashMap::with_capacity_and_hasher(old_mid.len(), FxBuild::default());
    for j in old_mid.clone() {
        by_name.insert(olds[j].name, j);
    }
    // The new middle: parsed; (gap, text, endpoint).
    let mut mid: Vec<(&str, &str, EndpointRec)> = Vec::with_capacity(ranges.len());
    let mut new_changed = Vec::new();
    let mut prev = pos;
    for &(s, e) in &ranges {
        let (gap, obj) = (&text[prev..s], &text[s..e]);
        prev = e;
        let ep = parse(obj)?;
        let same = match by_name.get(ep.name.as_str()) {
            Some(&j) if !kept[j] => {
                let same = (olds[j].text == obj && moved.is_empty())
                    || olds[j].decode(&old_ns).map_err(DiffError::Record)? == ep;
                kept[j] = same;
                same
            }
            _ => false,
        };
        if !same {
            new_changed.push(ep.clone());
        }
        mid.push((gap, obj, ep));
    }
    let mut old_changed = Vec::new();
    for j in old_mid {
        if !kept[j] {
            old_changed.push(olds[j].decode(&old_ns).map_err(DiffError::Record)?);
        }
    }
    // Unchanged objects in a namespace whose labels changed: changed
    // endpoints (both versions), their text kept.
    if !moved.is_empty() {
        for (j, o) in olds.iter().enumerate() {
            if !kept[j] || !may_name(o.text, &moved) {
                continue;
            }
            let before = o.decode(&old_ns).map_err(DiffError::Record)?;
            // Its namespace gone: the file is invalid.
            let after = o.decode(&new_ns).map_err(|_| DiffError::Inventory)?;
            if before != after {
                kept[j] = false;
                old_changed.push(before);
                new_changed.push(after);
            }
        }
    }
    // Every name and address once: the changed endpoints among
    // themselves, and against the unchanged ones.
    let mut unique = self::unique(&new_changed);
    if unique && !new_changed.is_empty() {
        let mut names: std::collections::HashSet<&str, FxBuild> = Default::default();
        let mut addrs: std::collections::HashSet<IpAddr, FxBuild> = Default::default();
        for e in &new_changed {
            names.insert(e.name.as_str());
            addrs.extend(e.addrs.iter().copied());
        }
        for (j, o) in olds.iter().enumerate() {
            if kept[j]
                && (names.contains(o.name)
                    || o.any_addr(|a| addrs.contains(&a))
                        .map_err(DiffError::Record)?)
            {
                unique = false;
                break;
            }
        }
    }
    if !unique {
        return diff_full(text);
    }
    let mut out = Vec::with_capacity(old.len() + 256);
    if trailer_kept {
        entries::start(&mut out, trailer);
    } else {
        entries::start(&mut out, &text[prev..]);
    }
    for o in &olds[..prefix] {
        out.extend_from_slice(o.raw);
    }
    for (gap, obj, e) in &mid {
        entries::push(&mut out, gap, obj, e);
    }
    for o in &olds[suffix_from..] {
        out.extend_from_slice(o.raw);
    }
    Ok(TextDiff {
        entries: out,
        unique: true,
        changed: Some((old_changed, new_changed)),
        full: None,
        parsed: ranges.len(),
    })
}

/// [`diff_text`] by parsing the whole inventory.
fn diff_full(text: &str) -> Result<TextDiff, DiffError> {
    let all = EndpointRec::parse_inventory(text).ok_or(DiffError::Inventory)?;
    // The objects as written, the `"namespaces"` section in the trailer;
    // a file shaped otherwise is recorded as the endpoints with their
    // derived labels (self-contained).
    let ranges = scan_ranges(text.as_bytes());
    let entries = match ranges.filter(|r| r.len() == all.len()) {
        Some(r) => entries::from_ranges(text, &r, &all),
        None => entries::encode_all(&all),
    };
    Ok(TextDiff {
        entries,
        unique: unique(&all),
        changed: None,
        parsed: all.len(),
        full: Some(all),
    })
}
