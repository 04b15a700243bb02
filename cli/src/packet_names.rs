//! Endpoint names in `weir trace --packet`, as `expect` lines take them
//! (docs/language.md §3 "Tests"): `tcp web-1 -> db-1:5432`. A name stands
//! for the endpoint's first address of the packet's family, IPv4 first
//! (the family the other side fixes when it is an address). The words are
//! replaced by addresses and the packet text parsed as usual.

use std::net::IpAddr;
use weir_compiler::model::Model;

/// `text` with the source and destination names replaced by addresses.
pub fn resolve(text: &str, model: &Model) -> Result<String, String> {
    let mut words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    // proto SRC -> DST ...
    if words.len() < 4 || words[2] != "->" {
        return Ok(text.to_string());
    }
    let (src, dst) = (split(&words[1]), split(&words[3]));
    let fixed = |p: &(String, Option<String>)| p.0.parse::<IpAddr>().ok();
    let family_v4 = match (fixed(&src), fixed(&dst)) {
        (Some(a), _) | (None, Some(a)) => a.is_ipv4(),
        // Both names: IPv4 when both have an IPv4 address.
        (None, None) => has(&src.0, model, IpAddr::is_ipv4) && has(&dst.0, model, IpAddr::is_ipv4),
    };
    for (i, part) in [(1, src), (3, dst)] {
        if part.0.parse::<IpAddr>().is_ok() || part.0.starts_with('[') {
            continue;
        }
        let Some(list) = addrs(&part.0, model) else {
            let names = model.endpoints.iter().map(|e| e.name.as_str());
            let hint = weir_compiler::check::suggest(&part.0, names)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "`{}` is neither an address nor an endpoint of the program{hint}",
                part.0
            ));
        };
        let Some(addr) = list.iter().find(|a| a.is_ipv4() == family_v4) else {
            return Err(format!(
                "endpoint `{}` has no IPv{} address",
                part.0,
                if family_v4 { 4 } else { 6 }
            ));
        };
        words[i] = match (addr, &part.1) {
            (IpAddr::V6(a), Some(port)) => format!("[{a}]:{port}"),
            (a, Some(port)) => format!("{a}:{port}"),
            (a, None) => a.to_string(),
        };
    }
    Ok(words.join(" "))
}

/// `NAME:PORT` → (NAME, PORT); an IPv6 literal stays whole.
fn split(word: &str) -> (String, Option<String>) {
    if word.parse::<IpAddr>().is_ok() || word.starts_with('[') {
        return (word.to_string(), None);
    }
    match word.rsplit_once(':') {
        Some((name, port)) => (name.to_string(), Some(port.to_string())),
        None => (word.to_string(), None),
    }
}

fn addrs<'m>(name: &str, model: &'m Model) -> Option<&'m [IpAddr]> {
    model
        .endpoints
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.addrs.as_slice())
}

fn has(name: &str, model: &Model, family: fn(&IpAddr) -> bool) -> bool {
    addrs(name, model).is_some_and(|a| a.iter().any(family))
}
