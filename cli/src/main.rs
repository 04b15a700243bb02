//! The `weir` command. Each subcommand lives in its own module with an
//! `Args` struct (clap derive) and a `run(args) -> i32` returning the exit
//! code: 0 success, 1 the input has errors, 2 usage or IO problems
//! (`weir diff` adds 3, allows more, and 4, only denies more).

use clap::{Parser, Subcommand};

#[macro_use]
mod out;
mod agent;
mod alloc;
mod apply;
mod audit_stats;
mod check;
mod compile;
mod context;
mod diff;
mod ebpf_cmd;
mod endpoints;
mod explain;
mod fmt;
mod import;
mod iptables_stats;
mod junit;
mod loader;
mod lsp;
mod metrics;
mod monitor;
mod packet_names;
mod program;
mod report;
mod shell;
mod snapshot;
mod stats_serve;
mod target;
mod test;
mod trace;

#[derive(Debug, Parser)]
#[command(name = "weir", version, about = "Declarative network policy compiler")]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check policy files and report diagnostics.
    Check(check::Args),
    /// Compile a program into a bundle for the eBPF and iptables back ends.
    Compile(compile::Args),
    /// Explain the verdict for one packet: which rule decided, and where.
    Trace(trace::Args),
    /// The exact connectivity change between two programs (or two git
    /// revisions of one): exit 0 no change, 3 allows more, 4 only denies
    /// more.
    Diff(diff::Args),
    /// Run the `test` blocks of policy files.
    Test(test::Args),
    /// Format policy files in the canonical layout.
    Fmt(fmt::Args),
    /// Run the language server (LSP over stdio).
    Lsp(lsp::Args),
    /// Apply a compiled bundle to this node (atomically; the previous
    /// generation stays in force on failure).
    Apply(apply::Args),
    /// Remove everything weir applied, and nothing else.
    Detach(apply::DetachArgs),
    /// Show the applied generation and whether it is in force.
    Status(apply::StatusArgs),
    /// Per-rule packet counters of the applied eBPF generation.
    Stats(ebpf_cmd::StatsArgs),
    /// Live verdict events of the applied back end: time, verdict, 5-tuple,
    /// endpoints, the deciding rule and its line (docs/monitor.md).
    Monitor(monitor::Args),
    /// Apply a new endpoint inventory to the generation in force as
    /// map / ipset updates (no recompile).
    Endpoints(endpoints::Args),
    /// The node agent: keep this node's generation in force from the
    /// Kubernetes API server (or a recorded watch stream, `--replay`).
    Agent(agent::Args),
    /// Import policies and workloads from elsewhere (`weir import k8s`).
    Import(import::Args),
    /// Print the documentation of a diagnostic code (docs/diagnostics.md).
    Explain(explain::Args),
    /// Print a shell completion script (bash, zsh or fish).
    Completions(shell::CompletionsArgs),
    /// Print the weir(1) man page in roff (`weir man | man -l -`).
    Man(shell::ManArgs),
}

// `weir compile` of a large program is allocation-heavy (syntax tree,
// model, graph, bundle): with mimalloc the headline model of
// BENCHMARKS.md compiles ~1.25x faster than with glibc's allocator
// (0.99 s against 1.26 s, medians of four runs each).
//
// Feature `system-alloc` leaves the system allocator in place, so that
// heap profilers which hook `malloc` (heaptrack, valgrind's massif) see
// every allocation: how `weir compile`'s memory was measured by phase
// (BENCHMARKS.md, issue 21).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// No transparent huge pages for this process. mimalloc asks for them,
/// and a short-lived compile that touches its memory once pays for the
/// kernel zeroing 2 MiB per fault: profiled on the headline model of
/// BENCHMARKS.md, page zeroing was half of the main thread's time and the
/// whole process used 2.15 s of CPU with huge pages, 1.2 s without.
fn no_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and only
    // sets a flag of this process (inherited by children).
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() {
    no_huge_pages();
    let cli = Cli::parse();
    alloc::purge_after(match cli.command {
        Command::Apply(_) => alloc::APPLY_PURGE_DELAY_MS,
        _ => alloc::PURGE_DELAY_MS,
    });
    let code = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Import(args) => import::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Compile(args) => compile::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Test(args) => test::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Lsp(args) => lsp::run(args),
        Command::Apply(args) => apply::run(args),
        Command::Detach(args) => apply::run_detach(args),
        Command::Status(args) => apply::run_status(args),
        Command::Stats(args) => ebpf_cmd::run_stats(args),
        Command::Monitor(args) => monitor::run(args),
        Command::Endpoints(args) => endpoints::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
    };
    program::print_explain_hint();
    std::process::exit(code);
}
