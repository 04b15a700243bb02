use super::*;
use crate::gen;

fn out(seed: u64) -> Result<Output, Vec<Unsupported>> {
    let model = gen::model(seed);
    let g = crate::graph::build(&model);
    generate_text(&g, &model, &Options::default())
}

#[test]
fn deterministic_and_names_fit() {
    let opts = Options {
        maglev_as_random: true,
        ..Options::default()
    };
    let mut done = 0;
    for seed in 0..80 {
        let model = gen::model(seed);
        let g = crate::graph::build(&model);
        let Ok(a) = generate_text(&g, &model, &opts) else {
            continue;
        };
        done += 1;
        let g2 = crate::graph::build(&model);
        let b = generate_text(&g2, &model, &opts).unwrap();
        assert_eq!(a, b, "seed {seed}");
        for text in [&a.iptables, &a.ip6tables] {
            for line in text.lines() {
                if let Some(c) = line.strip_prefix(':') {
                    let name = c.split_whitespace().next().unwrap();
                    assert!(name.starts_with("WEIR-") && name.len() <= 24, "{name}");
                }
                if line.starts_with("-A ") {
                    assert!(line.contains("--comment \"weir:"), "no comment: {line}");
                }
            }
        }
        for line in a.ipset.lines().filter(|l| l.starts_with("create ")) {
            let name = line.split_whitespace().nth(1).unwrap();
            assert!(name.starts_with("weir-") && name.len() <= 26, "{name}");
        }
    }
    assert!(done >= 60, "only {done} seeds generate");
}

#[test]
fn maglev_is_refused_unless_trivial() {
    let mut refused = 0;
    for seed in 0..60 {
        if let Err(e) = out(seed) {
            refused += 1;
            for u in e {
                let d = u.diagnostic();
                assert_eq!(d.code.as_str(), "E0501");
                assert!(d.message.contains("iptables"), "{}", d.message);
            }
        }
    }
    assert!(refused > 0);
}

/// Generated policies whose chains nested deeper than nf_tables allows
/// (one chain per graph node) fit after tail inlining; one whose depth is
/// in conditional gotos alone is refused with E0510 at compile time
/// instead of failing at apply. (runtime/tests/iptables_diff.rs applies
/// the first ones on nf_tables.)
#[test]
fn deep_generated_policies_fit_nftables() {
    let opts = Options {
        maglev_as_random: true,
        ..Options::default()
    };
    for (seed, was) in [(1316, 19), (1526, 18), (396, 17), (863, 17), (122, 16)] {
        let model = gen::model(seed);
        let g = crate::graph::build(&model);
        assert_eq!(super::emit::depth_without_passes(&g, &model, &opts), was);
        let out = generate_text(&g, &model, &opts).unwrap();
        for counts in out.manifest["counts"].as_array().unwrap() {
            let d = counts["depth"].as_u64().unwrap() as usize;
            assert!(d <= super::depth::MAX_DEPTH, "seed {seed}: depth {d}");
        }
    }
    let model = gen::model(2111);
    let g = crate::graph::build(&model);
    let e = generate_text(&g, &model, &opts).unwrap_err();
    let d = e[0].diagnostic();
    assert_eq!(d.code.as_str(), "E0510");
    assert!(d.message.contains("table `nat`"), "{}", d.message);
}
