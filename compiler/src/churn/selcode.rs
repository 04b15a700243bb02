//! Label selectors ([`Sel`]) in a compact binary form, as the endpoints
//! record stores them: a tag byte, then strings as a `u32` length and
//! UTF-8, sets as a `u32` count and strings, operands in order. A codec
//! only: a decoded selector is evaluated by [`Sel::matches`], the one
//! evaluator.

use crate::model::Sel;
use std::collections::BTreeSet;

const BAD: &str = "malformed selector";

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

pub fn encode(buf: &mut Vec<u8>, s: &Sel) {
    match s {
        Sel::All => buf.push(0),
        Sel::Eq(k, v) | Sel::Ne(k, v) => {
            buf.push(if matches!(s, Sel::Eq(..)) { 1 } else { 2 });
            put_str(buf, k);
            put_str(buf, v);
        }
        Sel::In(k, vs) | Sel::NotIn(k, vs) => {
            buf.push(if matches!(s, Sel::In(..)) { 3 } else { 4 });
            put_str(buf, k);
            buf.extend_from_slice(&(vs.len() as u32).to_le_bytes());
            for v in vs {
                put_str(buf, v);
            }
        }
        Sel::Has(k) => {
            buf.push(5);
            put_str(buf, k);
        }
        Sel::Not(e) => {
            buf.push(6);
            encode(buf, e);
        }
        Sel::And(a, b) | Sel::Or(a, b) => {
            buf.push(if matches!(s, Sel::And(..)) { 7 } else { 8 });
            encode(buf, a);
            encode(buf, b);
        }
    }
}

fn u32(b: &mut &[u8]) -> Result<usize, String> {
    let (n, rest) = b.split_at_checked(4).ok_or(BAD)?;
    *b = rest;
    Ok(u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize)
}

fn str<'a>(b: &mut &'a [u8]) -> Result<&'a str, String> {
    let n = u32(b)?;
    let (s, rest) = b.split_at_checked(n).ok_or(BAD)?;
    *b = rest;
    std::str::from_utf8(s).map_err(|_| BAD.to_string())
}

/// Decodes the selector at the start of `b`, consuming it.
fn take(b: &mut &[u8]) -> Result<Sel, String> {
    let (&tag, rest) = b.split_first().ok_or(BAD)?;
    *b = rest;
    let s = |b: &mut &[u8]| str(b).map(str::to_string);
    Ok(match tag {
        0 => Sel::All,
        1 => Sel::Eq(s(b)?, s(b)?),
        2 => Sel::Ne(s(b)?, s(b)?),
        3 | 4 => {
            let k = s(b)?;
            let mut vs = BTreeSet::new();
            for _ in 0..u32(b)? {
                vs.insert(s(b)?);
            }
            if tag == 3 {
                Sel::In(k, vs)
            } else {
                Sel::NotIn(k, vs)
            }
        }
        5 => Sel::Has(s(b)?),
        6 => Sel::Not(Box::new(take(b)?)),
        7 => Sel::And(Box::new(take(b)?), Box::new(take(b)?)),
        8 => Sel::Or(Box::new(take(b)?), Box::new(take(b)?)),
        _ => return Err(BAD.into()),
    })
}

/// The selector [`encode`] wrote (the whole of `b`).
pub fn decode(mut b: &[u8]) -> Result<Sel, String> {
    let sel = take(&mut b)?;
    if b.is_empty() {
        Ok(sel)
    } else {
        Err(BAD.into())
    }
}
