//! Which frontends of a service share one backend set: the one rule,
//! used where the eBPF service maps are filled ([`crate::ebpf::service`])
//! and where a run-time endpoint change recomputes backends
//! ([`crate::churn`], `weir_runtime::endpoints`).
//!
//! A service's backends are the same for every frontend of one address
//! family (docs/language.md §4, "Services": explicit backends and a
//! numeric target port do not depend on the frontend's protocol), except
//! that a **named target port** (`backends select … port "dns"`) is
//! resolved with each frontend's protocol: a service with frontends
//! `53/udp` and `53/tcp` takes each endpoint's `dns` UDP port for the
//! first and its `dns` TCP port for the second, so those frontends have
//! different backends. A group is therefore the family, and for a
//! service with a named target port also the frontend's protocol.
//!
//! In JSON a group is a string (it keys maps): `"4"`, `"6"`, or
//! `"4/udp"` with a protocol.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The frontends of one service that share one backend set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendGroup {
    /// 4 or 6.
    pub family: u8,
    /// The frontends' IP protocol number, for a named target port only.
    pub proto: Option<u8>,
}

impl BackendGroup {
    /// The group of a frontend at `addr` of IP protocol `proto`, for a
    /// service whose target port is named (`per_protocol`) or not.
    pub fn of(addr: IpAddr, proto: u8, per_protocol: bool) -> BackendGroup {
        BackendGroup {
            family: if addr.is_ipv4() { 4 } else { 6 },
            proto: per_protocol.then_some(proto),
        }
    }

    /// The protocol's name (`udp`), when the group has one.
    pub fn proto_name(&self) -> Option<String> {
        self.proto.map(proto_name)
    }

    /// For people: `IPv4`, `IPv6 udp`.
    pub fn describe(&self) -> String {
        match self.proto {
            None => format!("IPv{}", self.family),
            Some(p) => format!("IPv{} {}", self.family, proto_name(p)),
        }
    }
}

/// A group of a whole family (no named target port).
impl From<u8> for BackendGroup {
    fn from(family: u8) -> BackendGroup {
        BackendGroup {
            family,
            proto: None,
        }
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// The IP protocol number of a frontend's protocol as the manifest
/// writes it (`tcp`, `udp`, `sctp` or a number).
pub fn proto_number(s: &str) -> Option<u8> {
    match s {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        n => n.parse().ok(),
    }
}

impl fmt::Display for BackendGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            None => write!(f, "{}", self.family),
            Some(p) => write!(f, "{}/{}", self.family, proto_name(p)),
        }
    }
}

impl std::str::FromStr for BackendGroup {
    type Err = String;
    fn from_str(s: &str) -> Result<BackendGroup, String> {
        let bad = || format!("`{s}` is not a backend group (`4`, `6`, `4/udp`)");
        let (fam, proto) = match s.split_once('/') {
            Some((f, p)) => (f, Some(proto_number(p).ok_or_else(bad)?)),
            None => (s, None),
        };
        let family = match fam {
            "4" => 4,
            "6" => 6,
            _ => return Err(bad()),
        };
        Ok(BackendGroup { family, proto })
    }
}

impl Serialize for BackendGroup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BackendGroup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BackendGroup, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_print_and_parse() {
        for (g, text) in [
            (BackendGroup::from(4), "4"),
            (BackendGroup::from(6), "6"),
            (
                BackendGroup {
                    family: 4,
                    proto: Some(17),
                },
                "4/udp",
            ),
            (
                BackendGroup {
                    family: 6,
                    proto: Some(6),
                },
                "6/tcp",
            ),
        ] {
            assert_eq!(g.to_string(), text);
            assert_eq!(text.parse::<BackendGroup>(), Ok(g));
            let json = serde_json::to_string(&std::collections::BTreeMap::from([(g, 1)])).unwrap();
            assert_eq!(json, format!("{{\"{text}\":1}}"));
        }
        assert!("5".parse::<BackendGroup>().is_err());
        assert!("4/quic".parse::<BackendGroup>().is_err());
    }

    #[test]
    fn only_a_named_target_splits_by_protocol() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(BackendGroup::of(a, 17, false), BackendGroup::from(4));
        assert_eq!(
            BackendGroup::of(a, 17, true),
            BackendGroup {
                family: 4,
                proto: Some(17)
            }
        );
    }
}
