//! E0525: the eBPF back end refuses a `redirect` rule that can match SCTP
//! (protocol `sctp`, or none given) — the kernel's socket lookup and
//! assignment take TCP and UDP sockets only — at the rule, naming eBPF and
//! the construct, through the dispatch `weir compile` uses; `redirect tcp`
//! and `redirect udp` compile, and iptables (whose `REDIRECT` steers SCTP)
//! does not refuse any of them.

use weir_compiler::backends;
use weir_compiler::bundle::Target;
use weir_compiler::graph;

fn checked(src: &str) -> weir_compiler::model::Model {
    let loader = weir_compiler::source::MemoryLoader::new().with("steer.weir", src);
    let c = weir_compiler::check::check_program(&["steer.weir".into()], &loader, None);
    assert!(
        c.diagnostics.iter().all(|d| !d.is_error()),
        "{:?}",
        c.diagnostics
    );
    c.model
}

#[test]
fn ebpf_refuses_redirects_that_can_match_sctp() {
    let cases = [
        ("redirect from any to proxy 127.0.0.1:15001", true),
        ("redirect sctp 3868 from any to proxy 127.0.0.1:15001", true),
        ("redirect tcp 80 from any to proxy 127.0.0.1:15001", false),
        ("redirect udp 53 from any to proxy [::1]:15001", false),
        ("redirect icmp from any to proxy 127.0.0.1:15001", false),
    ];
    for (rule, refused) in cases {
        let src = format!(
            "endpoint web {{ labels {{ app: \"web\" }} addr 10.1.0.10 }}\nsteer mesh {{\n  mark 0x10 tcp 22 from any\n  {rule}\n}}\n"
        );
        let model = checked(&src);
        let g = graph::build(&model);
        backends::generate(Target::Iptables, &model, &g)
            .unwrap_or_else(|d| panic!("iptables, {rule}: {d:?}"));
        let r = backends::generate(Target::Ebpf, &model, &g);
        if !refused {
            r.unwrap_or_else(|d| panic!("ebpf, {rule}: {d:?}"));
            continue;
        }
        let Err(diags) = r else {
            panic!("ebpf compiled `{rule}`, which can match SCTP");
        };
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = &diags[0];
        assert_eq!(d.code.as_str(), "E0525", "{d:?}");
        assert!(
            d.message.contains("ebpf") && d.message.contains("redirect of SCTP to a proxy"),
            "{}",
            d.message
        );
        assert_eq!(d.primary.span, model.steers[0].rules[1].span, "{rule}");
    }
}
