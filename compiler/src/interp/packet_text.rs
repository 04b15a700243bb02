//! The packet notation of `weir trace --packet`:
//!
//! ```text
//! tcp 10.1.0.5:40000 -> 10.2.0.7:5432
//! udp [fd00::1]:5353 -> [fd00::2]:53 at ingress
//! icmp 10.1.0.5 -> 10.2.0.7 type 8 code 0
//! icmp6 [fd00::1] -> [fd00::2] type 128
//! tcp 10.2.0.7:5432 -> 10.1.0.5:40000 established
//! udp 10.1.0.5 -> 10.2.0.7 fragment
//! tcp [fd00::1] -> [fd00::2] unparsed
//! ```
//!
//! Source port defaults to 40000, destination port to 0. `fragment` (a
//! non-first fragment) and `unparsed` (headers not parsed to the transport
//! header) carry no ports or ICMP type: they are denied (§4, "Headers").

use super::{Headers, Packet};
use crate::model::{ConnState, Direction, Proto};
use std::net::IpAddr;

fn parse_socket(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    let bad_port = |p: &str| format!("bad port `{p}` in `{s}`");
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing `]` in `{s}`"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("bad address `{addr}`"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad_port(p))?),
            None if tail.is_empty() => None,
            None => return Err(format!("unexpected `{tail}` after `]`")),
        };
        return Ok((addr, port));
    }
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok((addr, None));
    }
    let (addr, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("bad address `{s}`"))?;
    let addr: IpAddr = addr.parse().map_err(|_| format!("bad address `{addr}`"))?;
    Ok((addr, Some(port.parse().map_err(|_| bad_port(port))?)))
}

fn number<T: std::str::FromStr>(word: Option<&str>, what: &str) -> Result<T, String> {
    let w = word.ok_or_else(|| format!("`{what}` needs a number"))?;
    w.parse().map_err(|_| format!("bad {what} `{w}`"))
}

/// Parse the packet notation above.
pub fn parse_packet(text: &str) -> Result<Packet, String> {
    let mut words = text.split_whitespace();
    let proto = match words.next() {
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        Some("sctp") => Proto::Sctp,
        Some("icmp") => Proto::Icmp,
        Some("icmp6") => Proto::Icmp6,
        Some(w) => {
            return Err(format!(
                "unknown protocol `{w}` (tcp, udp, sctp, icmp or icmp6)"
            ))
        }
        None => return Err("empty packet".into()),
    };
    let (src, sport) = parse_socket(words.next().ok_or("missing source address")?)?;
    if words.next() != Some("->") {
        return Err("expected `->` between source and destination".into());
    }
    let (dst, dport) = parse_socket(words.next().ok_or("missing destination address")?)?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err("source and destination must be the same address family".into());
    }
    let mut p = Packet::new(proto, src, sport.unwrap_or(40000), dst, dport.unwrap_or(0));
    if proto.is_icmp() {
        if sport.is_some() || dport.is_some() {
            return Err(format!(
                "{} packets have no ports; use `type N code N`",
                proto.keyword()
            ));
        }
        p.sport = 0;
    }
    while let Some(w) = words.next() {
        match w {
            "established" => p.state = ConnState::Established,
            "new" => p.state = ConnState::New,
            "fragment" => p.headers = Headers::Fragment,
            "unparsed" => p.headers = Headers::Unparsed,
            "type" if proto.is_icmp() => p.icmp_type = number(words.next(), "type")?,
            "code" if proto.is_icmp() => p.icmp_code = number(words.next(), "code")?,
            "at" => {
                p.at = Some(match words.next() {
                    Some("ingress") => Direction::Ingress,
                    Some("egress") => Direction::Egress,
                    _ => return Err("`at` takes `ingress` or `egress`".into()),
                })
            }
            other => return Err(format!("unexpected `{other}`")),
        }
    }
    if p.headers != Headers::Whole
        && (sport.is_some() || dport.is_some() || p.icmp_type != 0 || p.icmp_code != 0)
    {
        return Err("a fragment or unparsed packet has no ports, type or code".into());
    }
    if p.headers != Headers::Whole {
        p.sport = 0;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        let p = parse_packet("tcp 10.1.0.5:40001 -> 10.2.0.7:5432").unwrap();
        assert_eq!((p.sport, p.dport, p.proto), (40001, 5432, Proto::Tcp));
        let p = parse_packet("udp [fd00::1]:5353 -> [fd00::2]:53 at ingress").unwrap();
        assert_eq!(p.at, Some(Direction::Ingress));
        assert!(p.dst.is_ipv6());
        let p = parse_packet("icmp 10.1.0.5 -> 10.2.0.7 type 8 code 0").unwrap();
        assert_eq!(p.icmp_type, 8);
        let p = parse_packet("icmp6 [fd00::1] -> [fd00::2] type 128").unwrap();
        assert_eq!((p.proto, p.icmp_type, p.sport), (Proto::Icmp6, 128, 0));
        assert!(parse_packet("icmp6 [fd00::1]:1 -> [fd00::2]").is_err());
        let p = parse_packet("tcp 10.2.0.7:5432 -> 10.1.0.5 established").unwrap();
        assert_eq!((p.state, p.dport), (ConnState::Established, 0));
        let p = parse_packet("tcp [fd00::1] -> [fd00::2] fragment").unwrap();
        assert_eq!((p.headers, p.sport, p.dport), (Headers::Fragment, 0, 0));
        let p = parse_packet("udp 10.1.0.5 -> 10.2.0.7 unparsed").unwrap();
        assert_eq!(p.headers, Headers::Unparsed);
        // `weir trace` prints them back in the same notation.
        for text in [
            "tcp [fd00::1] -> [fd00::2] fragment",
            "icmp 10.1.0.5 -> 10.2.0.7 unparsed",
        ] {
            let p = parse_packet(text).unwrap();
            assert_eq!(super::super::explain::packet_text(&p), text);
        }
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "gre 1.2.3.4 -> 1.2.3.5",
            "tcp 1.2.3.4 1.2.3.5",
            "tcp 1.2.3.4:99999 -> 1.2.3.5:1",
            "tcp 1.2.3.4 -> fd00::1",
            "icmp 1.2.3.4:1 -> 1.2.3.5",
            "tcp 1.2.3.4 -> 1.2.3.5 at sideways",
            "tcp 1.2.3.4:1 -> 1.2.3.5:22 fragment",
            "icmp 1.2.3.4 -> 1.2.3.5 type 8 unparsed",
        ] {
            assert!(parse_packet(bad).is_err(), "{bad}");
        }
    }
}
