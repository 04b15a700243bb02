//! `weir-bench [--quick] [--out FILE] [--seed N] [--no-kernel]`: runs the
//! benchmarks, prints the tables, and with `--out` rewrites the generated
//! region of FILE (BENCHMARKS.md). `--only FIGURE` (ebpf, iptables,
//! iptables-apply, compile, updates, sizes, per-pod; repeatable) runs only those tables, to iterate
//! on one part; it cannot be combined with `--out`. `--ct-table lru|hash`
//! compiles the eBPF programs with that kind of per-flow tables,
//! `--iptables legacy|nft` drives those tools (legacy by default; nft
//! only with `--only`, the report's notes name legacy), `--atoms
//! auto|dense|sparse` the per-pod table's with their atom bits in the
//! class rows or in `weir_atom_bits` (`codegen::sparse_atoms`), `--sizes
//! N,N…` measures only those sizes in both sweeps (with `--only`: to
//! compare a change at the sizes it is about, runs taken in turn). `weir-bench --render DIR [--quick]
//! [--seed N] [--rules N | --services N]` only writes the headline model (or the rules
//! sweep's model of N rules, or the services sweep's of N services) as `synth.weir` and
//! `inventory.json` into DIR, to profile `weir compile` on it by hand;
//! `weir-bench --render-per-pod N DIR` does the same for the
//! one-peer-per-pod model of N pods (issue 21, item 4).

use std::path::PathBuf;

// The allocator the `weir` binary uses, and like `weir` without
// transparent huge pages (see cli/src/main.rs and cli/src/alloc.rs), so that the in-process
// compile figures measure what `weir compile` runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage() -> ! {
    eprintln!(
        "usage: weir-bench [--quick] [--out FILE | --only ebpf|iptables|iptables-apply|compile|updates|sizes|per-pod …] [--seed N] [--no-kernel] [--ct-table lru|hash] [--iptables legacy|nft] [--atoms auto|dense|sparse] [--sizes N,N…] | --render DIR [--rules N | --services N] | --render-per-pod N DIR"
    );
    std::process::exit(2)
}

fn main() {
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this
    // process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // The namespace harness's UDP servers panic in `recv_from` when their
    // socket is shut down at teardown (runtime/src/netns.rs); keep that
    // noise out of the output.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let server = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("udp-server-") || n.starts_with("tcp-server-"));
        if !server {
            default(info);
        }
    }));
    let mut opts = weir_bench::Opts::default();
    let mut out: Option<PathBuf> = None;
    let mut render: Option<PathBuf> = None;
    let mut per_pod: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--no-kernel" => opts.kernel = false,
            "--render" => render = Some(args.next().map(PathBuf::from).unwrap_or_else(|| usage())),
            "--render-per-pod" => {
                per_pod = Some(
                    args.next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| usage()),
                );
                render = Some(args.next().map(PathBuf::from).unwrap_or_else(|| usage()));
            }
            "--out" => out = Some(args.next().map(PathBuf::from).unwrap_or_else(|| usage())),
            "--only" => opts.only.push(
                args.next()
                    .and_then(|s| weir_bench::Figure::parse(&s))
                    .unwrap_or_else(|| usage()),
            ),
            "--rules" => {
                opts.render_rules = Some(
                    args.next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--services" => {
                opts.render_services = Some(
                    args.next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--iptables" => {
                opts.variant = match args.next().as_deref() {
                    Some("legacy") => weir_runtime::iptables::Variant::Legacy,
                    Some("nft") => weir_runtime::iptables::Variant::Nft,
                    _ => usage(),
                }
            }
            "--ct-table" => {
                opts.ct_table = args
                    .next()
                    .and_then(|s| weir_compiler::ebpf::state_tables::CtTable::parse(&s))
                    .unwrap_or_else(|| usage())
            }
            "--atoms" => {
                use weir_compiler::ebpf::codegen::sparse_atoms::AtomLayout;
                opts.atoms = match args.next().as_deref() {
                    Some("auto") => AtomLayout::Auto,
                    Some("dense") => AtomLayout::Dense,
                    Some("sparse") => AtomLayout::Sparse,
                    _ => usage(),
                }
            }
            "--sizes" => {
                opts.sizes = Some(
                    args.next()
                        .and_then(|s| s.split(',').map(|n| n.parse().ok()).collect())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--seed" => {
                opts.seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let nft = opts.variant != weir_runtime::iptables::Variant::Legacy;
    if out.is_some() && (!opts.only.is_empty() || opts.sizes.is_some() || nft) {
        eprintln!("error: --only makes a partial report; it cannot rewrite a file (--out)");
        std::process::exit(2);
    }
    if let Some(dir) = render {
        let written = match per_pod {
            Some(n) => weir_bench::render_per_pod(n, &dir),
            None => weir_bench::render_headline(&opts, &dir),
        };
        match written {
            Ok(()) => eprintln!("wrote {}/synth.weir and inventory.json", dir.display()),
            Err(e) => {
                eprintln!("error: writing {}: {e}", dir.display());
                std::process::exit(2);
            }
        }
        return;
    }
    let report = weir_bench::run(&opts);
    println!("{}", report.markdown());
    if let Some(path) = out {
        if let Err(e) = report.write_into(&path) {
            eprintln!("error: writing {}: {e}", path.display());
            std::process::exit(2);
        }
        eprintln!("wrote {}", path.display());
    }
}
