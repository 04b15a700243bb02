//! The endpoints in force as the runtime records them: per endpoint its
//! JSON text as the inventory gave it (with the text between it and the
//! previous one), its name and its addresses, then what followed the
//! last one. A new inventory is compared with them text to text
//! ([`diff_text`]): endpoints whose text did not change are neither
//! parsed nor decoded, and the unchanged start and end of the file are
//! not even scanned.
//!
//! The trailer holds the inventory's `"namespaces"` section when it has
//! one ([`super::ns_tail`]): objects are decoded under it.
//!
//! Layout: the trailer (a `u32` length and UTF-8), then the entries, each
//! a little-endian `u32` length, then: the gap before the object, the
//! object's text, the name (each a `u32` length + UTF-8), the addresses
//! (`u32` count, then `4` + 4 bytes or `6` + 16 bytes each).

use super::ns_tail::{tail_namespaces, Namespaces};
use super::record::{EndpointRec, FastEndpoint};
use std::net::IpAddr;

const BAD: &str = "malformed endpoint record";

fn put_u32(buf: &mut Vec<u8>, v: usize) {
    buf.extend_from_slice(&(v as u32).to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_u32(buf, s.len());
    buf.extend_from_slice(s.as_bytes());
}

/// Starts a section with the text after the last object.
pub fn start(buf: &mut Vec<u8>, trailer: &str) {
    put_str(buf, trailer);
}

/// Appends the entry of `e`: its object's text `text`, preceded in the
/// file by `gap`.
pub fn push(buf: &mut Vec<u8>, gap: &str, text: &str, e: &EndpointRec) {
    let start = buf.len();
    put_u32(buf, 0);
    put_str(buf, gap);
    put_str(buf, text);
    put_str(buf, &e.name);
    put_u32(buf, e.addrs.len());
    for a in &e.addrs {
        match a {
            IpAddr::V4(a) => {
                buf.push(4);
                buf.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                buf.push(6);
                buf.extend_from_slice(&a.octets());
            }
        }
    }
    let len = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// The section of `eps` in the inventory file text of
/// [`super::record::inventory_text`].
pub fn encode_all(eps: &[EndpointRec]) -> Vec<u8> {
    let text = super::record::inventory_text(eps);
    let ranges = super::scan::scan_ranges(text.as_bytes()).expect("own JSON");
    from_ranges(&text, &ranges, eps)
}

/// The section of `eps`, whose objects are at `ranges` of `text`.
pub fn from_ranges(text: &str, ranges: &[(usize, usize)], eps: &[EndpointRec]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(text.len() + eps.len() * 40);
    let last = ranges.last().map_or(0, |r| r.1);
    start(&mut buf, &text[last..]);
    let mut prev = 0;
    for (&(s, e), ep) in ranges.iter().zip(eps) {
        push(&mut buf, &text[prev..s], &text[s..e], ep);
        prev = e;
    }
    buf
}

/// One entry, borrowed from the record.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The whole entry (length prefix included): copied as it is.
    pub raw: &'a [u8],
    pub gap: &'a str,
    pub text: &'a str,
    pub name: &'a str,
    addrs: &'a [u8],
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    let (x, rest) = b.split_at_checked(n).ok_or(BAD)?;
    *b = rest;
    Ok(x)
}

fn u32(b: &mut &[u8]) -> Result<usize, String> {
    Ok(u32::from_le_bytes(take(b, 4)?.try_into().expect("4 bytes")) as usize)
}

fn str<'a>(b: &mut &'a [u8]) -> Result<&'a str, String> {
    let n = u32(b)?;
    std::str::from_utf8(take(b, n)?).map_err(|_| BAD.to_string())
}

/// The namespaces a section's trailer declares (see [`super::ns_tail`]).
pub fn namespaces(trailer: &str) -> Result<Namespaces, String> {
    tail_namespaces(trailer).ok_or_else(|| format!("{BAD}: its trailer"))
}

/// Every endpoint of a section.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<EndpointRec>, String> {
    let (trailer, es) = split(bytes)?;
    let ns = namespaces(trailer)?;
    es.iter().map(|e| e.decode(&ns)).collect()
}

/// The trailer and the entries of a section, in order.
pub fn split(mut bytes: &[u8]) -> Result<(&str, Vec<Entry<'_>>), String> {
    let trailer = str(&mut bytes)?;
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let all = bytes;
        let n = u32(&mut bytes)?;
        let mut body = take(&mut bytes, n)?;
        let gap = str(&mut body)?;
        let text = str(&mut body)?;
        let name = str(&mut body)?;
        out.push(Entry {
            raw: &all[..4 + n],
            gap,
            text,
            name,
            addrs: body,
        });
    }
    Ok((trailer, out))
}

impl Entry<'_> {
    /// Is one of the addresses `pred`?
    pub fn any_addr(&self, mut pred: impl FnMut(IpAddr) -> bool) -> Result<bool, String> {
        let mut b = self.addrs;
        let n = u32(&mut b)?;
        let mut hit = false;
        for _ in 0..n {
            let a = match take(&mut b, 1)?[0] {
                4 => IpAddr::from(<[u8; 4]>::try_from(take(&mut b, 4)?).expect("4 bytes")),
                6 => IpAddr::from(<[u8; 16]>::try_from(take(&mut b, 16)?).expect("16")),
                _ => return Err(BAD.into()),
            };
            hit |= pred(a);
        }
        Ok(hit)
    }

    /// The endpoint (its text parsed), in the namespaces `ns` the
    /// record's trailer declares ([`super::ns_tail`]).
    pub fn decode(&self, ns: &Namespaces) -> Result<EndpointRec, String> {
        let e: FastEndpoint = serde_json::from_str(self.text).map_err(|e| format!("{BAD}: {e}"))?;
        EndpointRec::resolve(e, ns).ok_or_else(|| format!("{BAD}: an unknown namespace"))
    }
}
