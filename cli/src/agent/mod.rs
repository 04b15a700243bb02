//! `weir agent`: the node agent (docs/kubernetes.md "The node agent").
//! It runs on every node (a DaemonSet, deploy/), watches the API server
//! for the objects `weir import k8s` reads, and keeps this node's
//! generation in force: endpoint churn through the runtime's map / ipset
//! update, policy changes through a new generation applied atomically,
//! refusals and an unreachable API server leaving the last good
//! generation in force.
//!
//! - [`event`]: the watch events and their JSON-lines form (`--replay`);
//! - [`store`]: the objects by (kind, namespace, name);
//! - [`reconcile`]: the decision (unchanged / endpoints / recompile /
//!   refused / failed) and its application through a [`node::Node`];
//! - [`build`]: one generation's files and compile;
//! - [`status`], [`http`]: readiness, events, `/metrics`;
//! - `watch` (cargo feature `kube`): kube-rs watchers turned into
//!   [`event::Event`]s — the only part that talks to the API server.
//!
//! A replay and the live watcher feed the same [`reconcile::Reconciler`].

pub mod build;
pub mod event;
pub mod http;
pub mod node;
pub mod reconcile;
pub mod status;
pub mod store;
#[cfg(feature = "kube")]
mod watch;

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use crate::target::{Backend, Target};
use node::{DryRun, EbpfNode, IptablesNode, Node};
use reconcile::{Decision, Reconciler};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// The long help's text after the options.
const AFTER: &str = "\
Each reconcile imports every watched object (as `weir import k8s` does) and compares the result with the generation in force:
  unchanged   same program, same endpoints: nothing to do
  endpoints   same program, new endpoints: map / ipset update as `weir endpoints` does, no recompile
  recompile   a new program (or endpoints the generation cannot take): compiled and applied atomically as `weir apply` does
  refused     the import or the compiler has errors: the last good generation stays in force
  failed      applying failed: the last good generation stays in force; retried every 30 s
An unreachable API server keeps the generation in force; the agent is not ready until the watch relists.
The live watcher needs a build with the cargo feature `kube` (the DaemonSet image, deploy/).
Exit codes with --replay: 0 the last reconcile left a good generation in force, 1 it was refused or failed, 2 usage or IO problems.
See docs/kubernetes.md, \"The node agent\".";

#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER)]
pub struct Args {
    /// Replay a recorded watch stream (JSON lines, docs/kubernetes.md)
    /// instead of watching the API server; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Decide but apply nothing: print each decision (with --replay).
    #[arg(long)]
    pub dry_run: bool,
    /// Where generations are compiled (`DIR/gen-N/`) [default:
    /// /var/lib/weir/agent; a temporary directory with --dry-run].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Serve /healthz, /readyz, /metrics and /status on this address
    /// (e.g. 0.0.0.0:9402).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Quiet time after a watch event before reconciling (live watch).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub debounce_ms: u64,
    /// Also attach connect-time load balancing to this cgroup v2
    /// directory (`--backend ebpf`).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// The node this agent runs on (the DaemonSet passes spec.nodeName):
    /// node ports are its addresses and Local Services its endpoints.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// How decisions are printed (--replay).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// The packet-mark bits the iptables back end uses for `self` (as
    /// `weir compile --iptables-self-mark`; default 0xffff0000, which
    /// leaves kube-proxy's 0xc000 alone). Accepted and unused with
    /// `--backend ebpf` (it decides `self` in maps), so one DaemonSet
    /// can pass it for either back end.
    #[arg(long, value_name = "MASK", value_parser = crate::compile::self_mark)]
    pub iptables_self_mark: Option<weir_compiler::iptables::self_set::SelfMark>,
    #[command(flatten)]
    pub target: Target,
}

fn node(args: &Args) -> Result<Box<dyn Node + Send>, i32> {
    if args.dry_run {
        return Ok(Box::new(DryRun::new(
            args.target.backend == Backend::Iptables,
        )));
    }
    Ok(match args.target.backend {
        Backend::Iptables => Box::new(IptablesNode(args.target.runtime())),
        Backend::Ebpf => Box::new(EbpfNode {
            inst: crate::ebpf_cmd::instance(&args.target)?,
            cgroup: args.cgroup.clone(),
        }),
    })
}

/// The back-end counters for `/metrics` (what `weir stats --serve`
/// serves, the same renderer), read at each scrape; nothing on a dry run.
fn extra_metrics(args: &Args) -> Box<dyn FnMut() -> String + Send> {
    if args.dry_run {
        return Box::new(String::new);
    }
    match crate::metrics::read::Source::of(&args.target) {
        Ok(source) => {
            let mut tally = crate::metrics::Tally::new();
            Box::new(move || {
                let scrape = source.read();
                scrape.count_errors(&mut tally);
                crate::metrics::render(&scrape, &tally)
            })
        }
        Err(_) => Box::new(String::new),
    }
}

pub fn run(args: Args) -> i32 {
    if let Err(code) = args.target.validate() {
        return code;
    }
    if args.cgroup.is_some() && args.target.backend != Backend::Ebpf {
        return crate::program::usage("--cgroup applies to --backend ebpf");
    }
    if args.dry_run && args.replay.is_none() {
        return crate::program::usage("--dry-run applies to --replay FILE");
    }
    let (work, temporary) = match (&args.work_dir, args.dry_run) {
        (Some(d), _) => (d.clone(), false),
        (None, true) => (
            std::env::temp_dir().join(format!("weir-agent-dry-run-{}", std::process::id())),
            true,
        ),
        (None, false) => (PathBuf::from("/var/lib/weir/agent"), false),
    };
    if let Err(e) = std::fs::create_dir_all(&work) {
        return crate::program::usage(format_args!("cannot create {}: {e}", work.display()));
    }
    let node = match node(&args) {
        Ok(n) => n,
        Err(c) => return c,
    };
    let target = match args.target.backend {
        Backend::Iptables => weir_compiler::bundle::Target::Iptables,
        Backend::Ebpf => weir_compiler::bundle::Target::Ebpf,
    };
    let mut opts = weir_compiler::backends::Options::default();
    opts.iptables.self_mark = args.iptables_self_mark.unwrap_or_default();
    let mut rec = Reconciler::new(node, work.clone(), target)
        .for_node(args.node.clone())
        .with_options(opts);
    let shared = http::shared();
    if let Some(addr) = &args.listen {
        match http::serve(addr, shared.clone(), extra_metrics(&args)) {
            Ok(a) => crate::errln!("weir agent: serving /healthz /readyz /metrics /status on {a}"),
            Err(e) => return crate::program::usage(format_args!("cannot listen on {addr}: {e}")),
        }
    }
    let code = match &args.replay {
        Some(file) => replay(file, &mut rec, &shared, args.format),
        None => live(&args, &mut rec, &shared),
    };
    if temporary {
        let _ = std::fs::remove_dir_all(&work);
    }
    code
}

/// Publishes the status for the HTTP server.
fn publish(rec: &Reconciler, shared: &http::Shared) {
    let s = &rec.status;
    let because = if s.generation.is_none() {
        "no generation in force yet".to_string()
    } else if !s.api_reachable {
        format!(
            "the API server is unreachable ({}); the last good generation stays in force",
            s.api_error.as_deref().unwrap_or("watch failed")
        )
    } else {
        String::new()
    };
    let mut p = shared.lock().unwrap_or_else(|e| e.into_inner());
    p.ready = s.ready;
    p.not_ready_because = because;
    p.metrics = s.prometheus();
    p.status = serde_json::to_string_pretty(s).unwrap_or_default();
    p.at = std::time::Instant::now();
}

fn print(d: &Decision, format: Format) {
    match format {
        Format::Json => crate::outln!("{}", serde_json::to_string(d).unwrap_or_default()),
        Format::Human => {
            let gen = d.generation.map_or("none".to_string(), |g| g.to_string());
            crate::outln!(
                "reconcile {}: {} (generation in force: {gen}): {} [{:.1} ms]",
                d.reconcile,
                d.verdict.name(),
                d.detail,
                d.micros as f64 / 1e3
            );
            if !d.changed.is_empty() {
                crate::outln!("  changed: {}", d.changed.join(", "));
            }
        }
    }
}

/// Prints readiness when it changes (what `/readyz` would answer).
fn readiness(rec: &Reconciler, shared: &http::Shared, was: &mut bool, format: Format) {
    if rec.status.ready == *was {
        return;
    }
    *was = rec.status.ready;
    let because = shared
        .lock()
        .map(|p| p.not_ready_because.clone())
        .unwrap_or_default();
    match format {
        Format::Json => crate::outln!(
            "{}",
            serde_json::json!({ "ready": *was, "reason": because })
        ),
        Format::Human if *was => crate::outln!("ready"),
        Format::Human => crate::outln!("not ready: {because}"),
    }
}

/// `--replay FILE`: every line through [`Reconciler::event`]; a reconcile
/// at each `SYNC` and at the end (when something changed since the last
/// one, or nothing was reconciled yet).
fn replay(
    file: &std::path::Path,
    rec: &mut Reconciler,
    shared: &http::Shared,
    format: Format,
) -> i32 {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                return crate::program::usage(format_args!("cannot read {}: {e}", file.display()))
            }
        }
    };
    crate::errln!(
        "weir agent: replaying {} ({})",
        file.display(),
        rec.node().name()
    );
    let mut last: Option<Decision> = None;
    let mut ready = false;
    for (n, line) in reader.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                return crate::program::usage(format_args!("reading {}: {e}", file.display()))
            }
        };
        let event = match event::parse_line(&line) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                return crate::program::usage(format_args!("{}:{}: {e}", file.display(), n + 1))
            }
        };
        if rec.event(event) {
            let d = rec.reconcile();
            print(&d, format);
            last = Some(d);
        }
        publish(rec, shared);
        readiness(rec, shared, &mut ready, format);
    }
    if rec.store.is_dirty() || last.is_none() {
        let d = rec.reconcile();
        print(&d, format);
        last = Some(d);
    }
    publish(rec, shared);
    readiness(rec, shared, &mut ready, format);
    match last.map(|d| d.verdict) {
        Some(reconcile::Verdict::Refused | reconcile::Verdict::Failed) => 1,
        _ if rec.status.generation.is_none() => 1,
        _ => 0,
    }
}

/// The live watch: events from the watcher threads; a reconcile after
/// `--debounce-ms` without events (or, under constant churn, 10 debounce
/// periods after the first unreconciled change); a failed apply is
/// retried every 30 s (a refusal is not: the store must change first).
/// While the API server is unreachable the store may be stale: no
/// reconcile until the watch relists.
#[cfg(feature = "kube")]
fn live(args: &Args, rec: &mut Reconciler, shared: &http::Shared) -> i32 {
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Instant;
    let rx = match watch::start() {
        Ok(rx) => rx,
        Err(e) => {
            crate::errln!("error: cannot start the watch: {e}");
            return 2;
        }
    };
    crate::errln!(
        "weir agent: watching {} kinds ({})",
        event::KINDS.len(),
        rec.node().name()
    );
    let debounce = Duration::from_millis(args.debounce_ms.max(10));
    let overdue = (debounce * 10).max(Duration::from_secs(1));
    let retry = Duration::from_secs(30);
    let mut failed_at: Option<Instant> = None;
    let mut first_dirty: Option<Instant> = None;
    // Non-LRU per-flow tables collect themselves: the object's BPF timer,
    // armed by each apply (docs/runtime.md).
    loop {
        let (mut now, quiet) = match rx.recv_timeout(debounce) {
            Ok(e) => (rec.event(e), false),
            Err(RecvTimeoutError::Timeout) => (false, true),
            Err(RecvTimeoutError::Disconnected) => {
                crate::errln!("error: the watchers stopped");
                return 2;
            }
        };
        if rec.store.is_dirty() {
            let t = *first_dirty.get_or_insert_with(Instant::now);
            now |= quiet || t.elapsed() >= overdue;
        } else {
            now |= failed_at.is_some_and(|t| t.elapsed() >= retry);
        }
        if now && rec.status.api_reachable {
            let d = rec.reconcile();
            first_dirty = None;
            failed_at = (d.verdict == reconcile::Verdict::Failed).then(Instant::now);
            if d.verdict != reconcile::Verdict::Unchanged {
                crate::errln!("{}", serde_json::to_string(&d).unwrap_or_default());
            }
        }
        publish(rec, shared);
    }
}

#[cfg(not(feature = "kube"))]
fn live(_: &Args, _: &mut Reconciler, _: &http::Shared) -> i32 {
    let _ = Duration::ZERO;
    crate::program::usage(
        "this weir was built without the live watcher (cargo feature `kube`): give --replay FILE, or use a build with `--features kube` (the DaemonSet image is one, deploy/)",
    )
}
