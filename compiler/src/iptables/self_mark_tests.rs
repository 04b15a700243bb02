//! `self` with a configured packet-mark mask ([`SelfMark`],
//! `weir compile --iptables-self-mark`): the rules, the id capacity and
//! the mark conflicts follow the mask, and bad masks are refused.

use super::self_set::{SelfMark, DEFAULT_MASK, KUBE_PROXY_BITS, LEGACY_MASK};
use super::{generate_text, Options, Output, Unsupported};
use crate::diagnostics::{Construct, Refusal};
use crate::driver::analyze;
use crate::source::MemoryLoader;
use std::path::PathBuf;

/// `n` endpoints under `allow from self`, and `steer` appended.
fn source(n: usize, steer: &str) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "endpoint e{i} {{ labels {{ app: \"x\" }} addr 10.{}.{}.1 }}\n",
            i / 256,
            i % 256
        ));
    }
    s.push_str("policy itself {\n  applies to all\n  ingress {\n    allow from self\n  }\n}\n");
    s.push_str(steer);
    s
}

fn generate(src: &str, mask: u32) -> Result<Output, Vec<Unsupported>> {
    let path = PathBuf::from("p.weir");
    let a = analyze(
        std::slice::from_ref(&path),
        &MemoryLoader::new().with(&path, src),
        None,
    );
    assert!(!a.checked.has_errors(), "{:?}", a.checked.diagnostics);
    let opts = Options {
        self_mark: SelfMark::new(mask).unwrap(),
        ..Options::default()
    };
    generate_text(&a.compiled.unwrap().graph, &a.checked.model, &opts)
}

#[test]
fn the_mask_decides_the_bits() {
    let m = SelfMark::new(0x00ff_0000).unwrap();
    assert_eq!(
        (m.same_bit(), m.id_mask(), m.shift(), m.max_id()),
        (0x1_0000, 0xfe_0000, 17, 0x7f)
    );
    let d = SelfMark::default();
    assert_eq!(
        (
            d.reserved(),
            d.same_bit(),
            d.id_mask(),
            d.shift(),
            d.max_id()
        ),
        (DEFAULT_MASK, 0x1_0000, 0xfffe_0000, 17, 0x7fff)
    );
    let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(m.member(a, 3), "10.0.0.1 skbmark 0x60000/0x0");
    assert_eq!(m.parse_member(&m.member(a, 3)), Some((a, 3)));
    // The two-bit minimum: the SAME bit and one id (a single endpoint).
    assert_eq!(SelfMark::new(0xc000_0000).unwrap().max_id(), 1);
}

#[test]
fn rules_and_members_use_the_mask() {
    let o = generate(&source(3, ""), 0x00ff_0000).unwrap();
    for r in [
        "-j MARK --set-xmark 0x0/0xff0000",
        "-m mark --mark 0x0/0xfe0000 -m comment --comment \"weir:self\" -j MARK --set-xmark 0x10000/0x10000",
        "-j MARK --set-xmark 0x0/0xfe0000",
        "-m mark --mark 0x10000/0x10000",
    ] {
        assert!(o.iptables.contains(r), "{r} in\n{}", o.iptables);
    }
    assert!(!o.iptables.contains("0xfffff"), "{}", o.iptables);
    assert!(
        o.ipset
            .contains("add weir-self 10.0.2.1 skbmark 0x60000/0x0"),
        "{}",
        o.ipset
    );
    assert_eq!(o.manifest["self_mark"], 0x00ff_0000);
    // The default mask is written (a manifest without `self_mark` means
    // the earlier default, LEGACY_MASK, which is not written)...
    let d = generate(&source(3, ""), DEFAULT_MASK).unwrap();
    assert_eq!(d.manifest["self_mark"], DEFAULT_MASK);
    assert!(d.iptables.contains("-j MARK --set-xmark 0x0/0xffff0000"));
    let l = generate(&source(3, ""), LEGACY_MASK).unwrap();
    assert!(l.manifest.get("self_mark").is_none());
    // ...and a program without `self` writes none: its bundle is what it
    // was.
    let none = "endpoint a { labels { app: \"x\" } addr 10.0.0.1 }\n\
        policy p {\n  applies to all\n  ingress {\n    allow tcp 80 from any\n  }\n}\n";
    assert!(generate(none, DEFAULT_MASK)
        .unwrap()
        .manifest
        .get("self_mark")
        .is_none());
}

/// The default leaves kube-proxy's bits alone (weir replaces Calico or
/// Cilium, not kube-proxy), and is the widest run that does: 2^15 - 1
/// ids, checked at compile time (E0501 beyond them).
#[test]
fn the_default_mask_is_safe_beside_kube_proxy() {
    assert_eq!(DEFAULT_MASK & KUBE_PROXY_BITS, 0);
    assert_eq!(KUBE_PROXY_BITS, 0x4000 | 0x8000);
    assert_ne!(LEGACY_MASK & KUBE_PROXY_BITS, 0, "why the default moved");
    let widest = (2..=32u32)
        .flat_map(|n| (0..=32 - n).map(move |s| (((1u64 << n) - 1) << s) as u32))
        .filter(|m| m & KUBE_PROXY_BITS == 0)
        .map(u32::count_ones)
        .max();
    assert_eq!(widest, Some(DEFAULT_MASK.count_ones()));
    let d = SelfMark::default();
    assert_eq!(d.reserved(), DEFAULT_MASK);
    assert_eq!(d.max_id(), 32_767);
    // The capacity check reads the mask's capacity (the E0501 refusal
    // itself is shown with a small mask in `the_id_space_is_the_masks`).
    let over = SelfMark::new(0x0003_0000).unwrap();
    assert_eq!(over.max_id(), 1);
    assert!(generate(&source(1, ""), 0x0003_0000).is_ok());
    assert!(generate(&source(2, ""), 0x0003_0000).is_err());
}

#[test]
fn the_id_space_is_the_masks() {
    // 127 ids in 0xfe0000: 127 endpoints fit, 128 do not (E0501).
    assert!(generate(&source(127, ""), 0x00ff_0000).is_ok());
    let e = generate(&source(128, ""), 0x00ff_0000).unwrap_err();
    assert!(
        matches!(
            &e[..],
            [Unsupported {
                refusal: Refusal::NotExpressible {
                    construct: Construct::SelfTooManyEndpoints {
                        endpoints: 128,
                        max: 127
                    },
                    ..
                },
                ..
            }]
        ),
        "{e:?}"
    );
    assert_eq!(e[0].diagnostic().code.to_string(), "E0501");
    // The default mask holds them.
    assert!(generate(&source(128, ""), DEFAULT_MASK).is_ok());
}

#[test]
fn a_steering_mark_conflicts_with_the_masks_bits() {
    let steer = |m: &str| format!("steer s {{\n  mark {m} udp 53 from any\n}}\n");
    // 0x4000 is outside 0x00ff0000 and the default mask (inside the
    // earlier default: refused there).
    assert!(generate(&source(2, &steer("0x4000")), 0x00ff_0000).is_ok());
    assert!(generate(&source(2, &steer("0x4000")), DEFAULT_MASK).is_ok());
    assert!(generate(&source(2, &steer("0x4000")), LEGACY_MASK).is_err());
    let e = generate(&source(2, &steer("0x10000")), 0x00ff_0000).unwrap_err();
    assert!(
        matches!(
            &e[..],
            [Unsupported {
                refusal: Refusal::NotExpressible {
                    construct: Construct::SelfWithMark {
                        mark: 0x10000,
                        mask: 0x00ff_0000,
                        ..
                    },
                    ..
                },
                ..
            }]
        ),
        "{e:?}"
    );
}

#[test]
fn bad_masks_are_refused() {
    for bad in [0, 1, 0x8000_0000, 0x00ff_00ff, 0xffff_f801, 0x5] {
        let e = SelfMark::new(bad).unwrap_err();
        assert!(e.contains("one contiguous run of at least 2 bits"), "{e}");
    }
    assert!(SelfMark::new(0xffff_ffff).is_ok());
    assert!(SelfMark::new(0x3).is_ok());
    assert_eq!(SelfMark::parse("0x0fff0000"), SelfMark::new(0x0fff_0000));
    assert_eq!(SelfMark::parse("0XC0"), SelfMark::new(0xc0));
    assert_eq!(SelfMark::parse("768"), SelfMark::new(0x300));
    for bad in ["", "0x", "0xfffff800ff", "mask", "-1", "0x1000"] {
        assert!(SelfMark::parse(bad).is_err(), "{bad}");
    }
}
