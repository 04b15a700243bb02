//! A structural scanner for inventory files shaped plainly
//! (`{"endpoints": [ {…}, … ]}`, optionally followed by the
//! `"namespaces"` section, [`super::ns_tail`]): it finds the endpoint objects by their
//! brackets without parsing them, so a text diff can skip unchanged
//! ones. It checks structure only; objects are parsed by the inventory
//! schema ([`crate::inventory`]).

fn ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
        *i += 1;
    }
}

fn lit(b: &[u8], i: &mut usize, s: &[u8]) -> Option<()> {
    b.get(*i..*i + s.len()).filter(|x| *x == s)?;
    *i += s.len();
    Some(())
}

/// The end of the JSON object (or array) at `i`: brackets balanced
/// outside strings. The object itself is not checked.
fn object_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    loop {
        let c = *b.get(i)?;
        i += 1;
        if in_str {
            match c {
                b'\\' => i += 1,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
}

/// Scans the endpoint objects from `i`, just after an object (or after
/// the list's `[` when `first`), to the end of the document, or until
/// `stop` (a position just after an object, where the rest is known).
/// The objects' ranges, and whether it stopped at `stop`.
pub(super) fn scan_from(
    b: &[u8],
    mut i: usize,
    mut first: bool,
    stop: Option<usize>,
) -> Option<(Vec<(usize, usize)>, bool)> {
    let mut out = Vec::new();
    loop {
        if stop == Some(i) {
            return Some((out, true));
        }
        ws(b, &mut i);
        if b.get(i) == Some(&b']') {
            if stop.is_some() {
                return None;
            }
            // The rest: `}`, or the `"namespaces"` section and `}`.
            let tail = std::str::from_utf8(&b[i..]).ok()?;
            return super::ns_tail::tail_namespaces(tail).map(|_| (out, false));
        }
        if !first {
            lit(b, &mut i, b",")?;
            ws(b, &mut i);
        }
        if b.get(i) != Some(&b'{') {
            return None;
        }
        let end = object_end(b, i)?;
        out.push((i, end));
        i = end;
        first = false;
        if stop.is_some_and(|s| i > s) {
            return None;
        }
    }
}

/// The ranges of the endpoint objects of an inventory file shaped
/// plainly (`{"endpoints": [ {…}, … ]}`, whitespace anywhere, the key
/// without escapes, then optionally `"namespaces": {…}`); `None` for anything else. Only the structure is
/// checked: the objects are not parsed.
pub(super) fn scan_ranges(b: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut i = 0;
    ws(b, &mut i);
    lit(b, &mut i, b"{")?;
    ws(b, &mut i);
    lit(b, &mut i, b"\"endpoints\"")?;
    ws(b, &mut i);
    lit(b, &mut i, b":")?;
    ws(b, &mut i);
    lit(b, &mut i, b"[")?;
    scan_from(b, i, true, None).map(|(r, _)| r)
}

/// The texts of the endpoint objects of an inventory file shaped plainly
/// (see [`diff_text`]), in order; `None` for anything else.
pub fn scan_inventory(text: &str) -> Option<Vec<&str>> {
    Some(
        scan_ranges(text.as_bytes())?
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect(),
    )
}
