//! The selector-backed services of a bundle in a form the runtime reads
//! fast: each service's selector in a compact binary form
//! ([`selcode`], decoded without JSON), and the service itself as JSON,
//! decoded only for the services an update affects.
//!
//! Layout: `u32` count, then per service a `u32` length and the encoded
//! selector, a `u32` length and the JSON of the [`SelectorService`].

use super::{selcode, EndpointRec, SelectorService};

const BAD: &str = "malformed service table";

fn put(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

pub fn encode(services: &[SelectorService]) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(&(services.len() as u32).to_le_bytes());
    let mut sel = Vec::new();
    for s in services {
        sel.clear();
        selcode::encode(&mut sel, &s.selector);
        put(&mut buf, &sel);
        put(&mut buf, &serde_json::to_vec(s).expect("JSON"));
    }
    buf
}

fn take<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let (n, rest) = b.split_at_checked(4).ok_or(BAD)?;
    let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
    let (x, rest) = rest.split_at_checked(n).ok_or(BAD)?;
    *b = rest;
    Ok(x)
}

/// The services for which `keep(selector)` holds, decoded.
fn select(
    mut b: &[u8],
    keep: impl Fn(&[u8]) -> Result<bool, String>,
) -> Result<Vec<SelectorService>, String> {
    let n = u32::from_le_bytes(b.get(..4).ok_or(BAD)?.try_into().expect("4 bytes"));
    b = &b[4..];
    let mut out = Vec::new();
    for _ in 0..n {
        let sel = take(&mut b)?;
        let json = take(&mut b)?;
        if keep(sel)? {
            out.push(serde_json::from_slice(json).map_err(|e| format!("{BAD}: {e}"))?);
        }
    }
    Ok(out)
}

/// Every service.
pub fn decode_all(b: &[u8]) -> Result<Vec<SelectorService>, String> {
    select(b, |_| Ok(true))
}

/// The services whose selector matches one of `eps`: those whose
/// backends may change when `eps` (both versions of the changed
/// endpoints) change. Each selector is decoded and evaluated by
/// [`crate::model::Sel::matches`], the one evaluator.
pub fn affected(b: &[u8], eps: &[EndpointRec]) -> Result<Vec<SelectorService>, String> {
    select(b, |sel| {
        let sel = selcode::decode(sel)?;
        Ok(eps.iter().any(|e| sel.matches(&e.labels)))
    })
}
