//! Chain and set names, and the generation rewrite.
//!
//! The compiler names every chain `WEIR-…` (≤ 24 characters) and every set
//! `weir-…` (≤ 26). The runtime applies generation `g` (1 ..= 999) by
//! rewriting the prefix: `WEIR-X` → `WEIR<g>-X` (≤ 27 ≤ 28, iptables' limit)
//! and `weir-x` → `weir<g>-x` (≤ 29 ≤ 31, ipset's limit). The chains that
//! hang off the built-in chains are stable: `WEIR-HOOK-<BUILTIN>` in each
//! table, never generation-renamed, so switching generations is one
//! redefinition of those chains.

/// Prefix of the compiler's chain names.
pub const CHAIN_PREFIX: &str = "WEIR-";
/// Prefix of the compiler's set names.
pub const SET_PREFIX: &str = "weir-";
/// Prefix of the runtime's stable hook chains.
pub const HOOK_PREFIX: &str = "WEIR-HOOK-";
/// iptables' longest chain name.
pub const MAX_CHAIN_LEN: usize = 28;
/// ipset's longest set name.
pub const MAX_SET_LEN: usize = 31;
/// Generations count 1 ..= `MAX_GENERATION` and wrap.
pub const MAX_GENERATION: u32 = 999;

/// The generation after `g` (wrapping, never 0).
pub fn next_generation(g: u32) -> u32 {
    g % MAX_GENERATION + 1
}

/// The stable hook chain for a built-in chain, e.g. `WEIR-HOOK-FORWARD`.
pub fn hook_chain(builtin: &str) -> String {
    format!("{HOOK_PREFIX}{builtin}")
}

/// Is this one of our hook chains?
pub fn is_hook_chain(name: &str) -> bool {
    name.starts_with(HOOK_PREFIX)
}

/// `WEIR-X` → `WEIR<g>-X`. Names without the prefix are returned unchanged.
pub fn generation_chain(name: &str, g: u32) -> String {
    match name.strip_prefix(CHAIN_PREFIX) {
        Some(rest) => format!("WEIR{g}-{rest}"),
        None => name.to_string(),
    }
}

/// `weir-x` → `weir<g>-x`. Names without the prefix are returned unchanged.
pub fn generation_set(name: &str, g: u32) -> String {
    match name.strip_prefix(SET_PREFIX) {
        Some(rest) => format!("weir{g}-{rest}"),
        None => name.to_string(),
    }
}

fn digits_then_dash(rest: &str) -> Option<u32> {
    let end = rest.find('-')?;
    let digits = &rest[..end];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The generation of a chain named `WEIR<g>-…`, if it is one.
pub fn chain_generation(name: &str) -> Option<u32> {
    digits_then_dash(name.strip_prefix("WEIR")?)
}

/// The generation of a set named `weir<g>-…`, if it is one.
pub fn set_generation(name: &str) -> Option<u32> {
    digits_then_dash(name.strip_prefix("weir")?)
}

/// `weir<g>-x` → `weir-x`: the bundle's name of a generation set.
pub fn bundle_set_name(kernel_name: &str) -> Option<String> {
    set_generation(kernel_name)?;
    let rest = &kernel_name[kernel_name.find('-')? + 1..];
    Some(format!("{SET_PREFIX}{rest}"))
}

/// Is this a chain the runtime made (a hook chain or a generation chain)?
pub fn is_our_chain(name: &str) -> bool {
    is_hook_chain(name) || chain_generation(name).is_some()
}

/// Rewrites one line of restore text for generation `g`: every unquoted
/// token (or a `:`-declaration) starting with `WEIR-` or `weir-` gets the
/// generation number. Quoted text (comments) is left alone.
pub fn rewrite_line(line: &str, g: u32) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut at_token_start = true;
    let mut skip = 0usize;
    for (i, c) in line.char_indices() {
        if skip > 0 {
            // The rest of "WEIR"/"weir", already written.
            skip -= 1;
            continue;
        }
        if let Some(q) = quote {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if at_token_start {
            let rest = &line[i..];
            if rest.starts_with(CHAIN_PREFIX) {
                out.push_str(&format!("WEIR{g}"));
                skip = 3;
                at_token_start = false;
                continue;
            }
            if rest.starts_with(SET_PREFIX) {
                out.push_str(&format!("weir{g}"));
                skip = 3;
                at_token_start = false;
                continue;
            }
        }
        out.push(c);
        match c {
            '"' | '\'' => {
                quote = Some(c);
                at_token_start = false;
            }
            c if c.is_whitespace() => at_token_start = true,
            ':' if i == 0 => at_token_start = true,
            _ => at_token_start = false,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_chain_and_set_tokens() {
        assert_eq!(
            rewrite_line(":WEIR-FORWARD - [0:0]", 7),
            ":WEIR7-FORWARD - [0:0]"
        );
        assert_eq!(
            rewrite_line(
                "-A WEIR-FORWARD -m set --match-set weir-c3 src -m comment --comment \"weir-p1 WEIR-x\" -j WEIR-P1",
                12
            ),
            "-A WEIR12-FORWARD -m set --match-set weir12-c3 src -m comment --comment \"weir-p1 WEIR-x\" -j WEIR12-P1"
        );
        assert_eq!(
            rewrite_line("add weir-a 10.0.0.1,tcp:80", 3),
            "add weir3-a 10.0.0.1,tcp:80"
        );
        assert_eq!(
            rewrite_line("-A XWEIR-FOO -j ACCEPT", 3),
            "-A XWEIR-FOO -j ACCEPT"
        );
    }

    #[test]
    fn generation_names() {
        assert_eq!(generation_chain("WEIR-FORWARD", 999), "WEIR999-FORWARD");
        assert_eq!(chain_generation("WEIR999-FORWARD"), Some(999));
        assert_eq!(chain_generation("WEIR-HOOK-FORWARD"), None);
        assert_eq!(chain_generation("WEIRD-1"), None);
        assert_eq!(set_generation("weir4-c3"), Some(4));
        assert_eq!(bundle_set_name("weir4-c3").as_deref(), Some("weir-c3"));
        assert_eq!(next_generation(999), 1);
        assert_eq!(next_generation(1), 2);
        assert!(is_our_chain("WEIR-HOOK-INPUT"));
        assert!(!is_our_chain("WEIRDO"));
    }
}
