//! `weir-bench [--quick] [--out FILE] [--seed N] [--no-kernel]`: runs the
//! benchmarks, prints the tables, and with `--out` rewrites the generated
//! region of FILE (BENCHMARKS.md). `--only FIGURE` (ebpf, iptables,
//! iptables-apply, compile, updates, sizes; repeatable) runs only those tables, to iterate
//! on one part; it cannot be combined with `--out`. `--ct-table lru|hash`
//! compiles the eBPF programs with that kind of per-flow tables, `--sizes
//! N,N…` measures only those sizes in both sweeps (with `--only`: to
//! compare a change at the sizes it is about, runs taken in turn). `weir-bench --render DIR [--quick]
//! [--seed N]` only writes the headline model as `synth.weir` and
//! `inventory.json` into DIR, to profile `weir compile` on it by hand.

use std::path::PathBuf;

// The allocator the `weir` binary uses, and like `weir` without
// transparent huge pages (see cli/src/main.rs), so that the in-process
// compile figures measure what `weir compile` runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage() -> ! {
    eprintln!(
        "usage: weir-bench [--quick] [--out FILE | --only ebpf|iptables|iptables-apply|compile|updates|sizes …] [--seed N] [--no-kernel] [--ct-table lru|hash] [--sizes N,N…] | --render DIR"
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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--no-kernel" => opts.kernel = false,
            "--render" => render = Some(args.next().map(PathBuf::from).unwrap_or_else(|| usage())),
            "--out" => out = Some(args.next().map(PathBuf::from).unwrap_or_else(|| usage())),
            "--only" => opts.only.push(
                args.next()
                    .and_then(|s| weir_bench::Figure::parse(&s))
                    .unwrap_or_else(|| usage()),
            ),
            "--ct-table" => {
                opts.ct_table = args
                    .next()
                    .and_then(|s| weir_compiler::ebpf::state_tables::CtTable::parse(&s))
                    .unwrap_or_else(|| usage())
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
    if out.is_some() && (!opts.only.is_empty() || opts.sizes.is_some()) {
        eprintln!("error: --only makes a partial report; it cannot rewrite a file (--out)");
        std::process::exit(2);
    }
    if let Some(dir) = render {
        match weir_bench::render_headline(&opts, &dir) {
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
