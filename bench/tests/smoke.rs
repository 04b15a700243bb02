//! CI smoke run of the benchmarks at tiny sizes (`--quick`), in process,
//! so the benchmark never rots. No timing assertions: every part must run
//! and produce its table without problems.
//!
//! The kernel parts (eBPF test runs, namespaces, iptables) need root.
//! Without root they are skipped — unless `CI` is set, in which case the
//! test fails.

#[test]
fn quick_benchmark_runs() {
    let root = weir_bench::is_root();
    let ci = std::env::var_os("CI").is_some();
    assert!(
        root || !ci,
        "quick_benchmark_runs: needs root for the kernel parts (CI is set, so not skipping)"
    );
    if !root {
        eprintln!("quick_benchmark_runs: not root, kernel parts skipped");
    }
    let opts = weir_bench::Opts {
        quick: true,
        kernel: root,
        verbose: false,
        ..weir_bench::Opts::default()
    };
    let report = weir_bench::run(&opts);
    let text = report.markdown();
    for title in [
        "Targets",
        "Compile time and peak memory",
        "Program, map and rule sizes",
    ] {
        assert!(text.contains(title), "no `{title}` table in:\n{text}");
    }
    if root {
        for title in [
            "eBPF headline: new and established flows through the test driver",
            "eBPF per-packet cost by rules",
            "eBPF per-packet cost by services",
            "iptables per-packet cost by rules",
            "iptables per-packet cost by services",
            "iptables apply by rules",
            "Update latency",
            "eBPF, one rule per pod",
        ] {
            assert!(text.contains(title), "no `{title}` table in:\n{text}");
        }
        assert!(
            report.problems.is_empty(),
            "problems in the quick benchmark:\n{}",
            report.problems.join("\n")
        );
    }
    assert!(!text.contains("wrong verdict"), "{text}");
    if root {
        // Every headline row measured at the quick sizes (a driver that
        // cannot tail-call, or a flow the models lack, shows otherwise).
        for bad in ["no such flow", "error:"] {
            assert!(!text.contains(bad), "`{bad}` in:\n{text}");
        }
    }
    // --out keeps the prose around the generated region.
    let path = std::env::temp_dir().join(format!("weir-bench-smoke-{}.md", std::process::id()));
    std::fs::write(&path, "# B\n\nprose before\n\n<!-- weir-bench:begin -->\nold\n<!-- weir-bench:end -->\n\nprose after\n").unwrap();
    // A file without our exact begin marker gets the region prepended.
    report.write_into(&path).unwrap();
    let once = std::fs::read_to_string(&path).unwrap();
    report.write_into(&path).unwrap();
    let twice = std::fs::read_to_string(&path).unwrap();
    assert_eq!(once, twice, "regenerating replaces the region");
    assert!(twice.contains("prose after"));
    let _ = std::fs::remove_file(&path);
}
