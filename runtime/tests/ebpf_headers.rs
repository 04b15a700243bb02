//! The parser's guarantee (docs/language.md §4, "Headers"; issue 15 item
//! 1), in the kernel with BPF_PROG_TEST_RUN: under `deny tcp 22; allow
//! any`, an IPv6 TCP segment to port 22 is denied by the deny rule behind
//! any chain of up to 8 extension headers (hop-by-hop, routing,
//! destination options, AH, a first fragment), and so is an IPv4 one with
//! options; a non-first fragment of either family is denied and counted
//! as `fragment`; a chain of 9 extension headers and truncated headers
//! are denied and counted as `unparsed`. Each case is also asked of the
//! interpreter, which must give the same verdict and provenance.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use ebpf_common::headers::{non_first_fragment, with_extensions, with_options, Ext};
use ebpf_common::*;
use weir_compiler::ebpf::codegen::{layout, Mode};
use weir_compiler::graph;
use weir_compiler::interp::{Headers, Interp, Packet};
use weir_compiler::model::{Proto, Verdict};
use weir_compiler::provenance::Provenance;

const SRC: &str = "endpoint ssh {\n  labels { app: \"ssh\" }\n  addr 10.0.50.2\n  addr fd00:50::2\n}\n\
policy no-ssh {\n  applies to app == \"ssh\"\n  ingress {\n    deny tcp 22 from any\n    allow any from any\n  }\n}\n";

fn packet(dst: &str) -> Packet {
    let src = if dst.contains(':') {
        "fd00:50::1"
    } else {
        "10.0.50.1"
    };
    Packet::new(
        Proto::Tcp,
        src.parse().unwrap(),
        40000,
        dst.parse().unwrap(),
        22,
    )
}

/// Runs `frame`; the TC verdict and the provenance counted (exactly one).
fn judge(gen: &weir_runtime::ebpf::Generation, frame: &[u8]) -> (u32, Vec<usize>) {
    clear_conntrack(gen);
    let before = counts(gen);
    let ret = run(gen, frame);
    let after = counts(gen);
    let ids = (0..after.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    (ret, ids)
}

#[test]
fn ebpf_sees_through_extension_headers_and_denies_what_it_cannot_see() {
    if !have_root("ebpf_sees_through_extension_headers_and_denies_what_it_cannot_see") {
        return;
    }
    let loader = weir_compiler::source::MemoryLoader::new().with("ssh.weir", SRC);
    let checked = weir_compiler::check::check_program(&["ssh.weir".into()], &loader, None);
    assert!(checked.diagnostics.iter().all(|d| !d.is_error()));
    let model = checked.model;
    let g = graph::build(&model);
    let gen = load_output(&compile(&model, &g, Mode::Node));
    let interp = Interp::new(&model);
    let id = |p: Provenance| g.provenance.id(&p) as usize;
    let deny_rule = id(interp.evaluate(&packet("fd00:50::2")).decided_by);
    assert!(
        matches!(
            g.provenance.get(deny_rule as u32),
            Some(Provenance::Rule { index: 0, .. })
        ),
        "the deny rule decides the plain packet"
    );
    let shot = layout::TC_ACT_SHOT as u32;
    let v6 = frame(&packet("fd00:50::2"));
    let v4 = frame(&packet("10.0.50.2"));
    let hbh = Ext::HopByHop(8);
    let first_frag = Ext::Fragment {
        offset: 0,
        more: true,
    };
    let nine: Vec<Ext> = (0..9).map(|_| Ext::DestOpts(8)).collect();
    let eight: Vec<Ext> = (0..8).map(|_| Ext::DestOpts(8)).collect();
    let cases: Vec<(&str, Vec<u8>, Headers)> = vec![
        ("ipv6 plain", v6.clone(), Headers::Whole),
        (
            "ipv6 8-byte hop-by-hop",
            with_extensions(&v6, &[hbh]),
            Headers::Whole,
        ),
        (
            "ipv6 hop-by-hop, routing, destination options",
            with_extensions(&v6, &[Ext::HopByHop(24), Ext::Routing, Ext::DestOpts(16)]),
            Headers::Whole,
        ),
        ("ipv6 AH", with_extensions(&v6, &[Ext::Ah]), Headers::Whole),
        (
            "ipv6 first fragment",
            with_extensions(&v6, &[hbh, first_frag]),
            Headers::Whole,
        ),
        (
            "ipv6 8 extension headers",
            with_extensions(&v6, &eight),
            Headers::Whole,
        ),
        (
            "ipv6 non-first fragment",
            non_first_fragment(&v6, 185),
            Headers::Fragment,
        ),
        (
            "ipv6 9 extension headers",
            with_extensions(&v6, &nine),
            Headers::Unparsed,
        ),
        (
            "ipv6 hop-by-hop cut short",
            with_extensions(&v6, &[Ext::HopByHop(16)])[..60].to_vec(),
            Headers::Unparsed,
        ),
        (
            "ipv6 transport header cut short",
            with_extensions(&v6, &[hbh])[..64].to_vec(),
            Headers::Unparsed,
        ),
        ("ipv4 plain", v4.clone(), Headers::Whole),
        ("ipv4 options", with_options(&v4, 3), Headers::Whole),
        (
            "ipv4 non-first fragment",
            non_first_fragment(&v4, 185),
            Headers::Fragment,
        ),
        (
            "ipv4 transport header cut short",
            v4[..36].to_vec(),
            Headers::Unparsed,
        ),
    ];
    let mut failures = Vec::new();
    for (name, f, headers) in &cases {
        let dst = if name.starts_with("ipv6") {
            "fd00:50::2"
        } else {
            "10.0.50.2"
        };
        let mut p = packet(dst);
        if *headers != Headers::Whole {
            p.headers = *headers;
            p.sport = 0;
            p.dport = 0;
        }
        let o = interp.evaluate(&p);
        assert_eq!(o.verdict, Verdict::Deny, "{name}: the interpreter denies");
        let want = (shot, vec![id(o.decided_by)]);
        let got = judge(&gen, f);
        eprintln!("{name}: got {got:?}, want {want:?} ({:?})", o.decided_by);
        if got != want {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
