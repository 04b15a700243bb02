//! `weir monitor`: a live stream of verdict events from the back end
//! applied on this node (docs/monitor.md).
//!
//! Events come from an [`EventSource`] chosen by the applied target
//! ([`open_source`], the one place a back end's source is plugged in);
//! each is resolved through the manifest recorded at apply
//! ([`resolve::Resolver`]: provenance id → `policy/direction#N` and
//! `file:line`, addresses → endpoint names, frontend → service) and
//! printed as one line, or one JSON object per line (`--json`), after the
//! filters.

mod resolve;

use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, ValueEnum};
use weir_compiler::contract::event::{EventVerdict, VerdictEvent};
use weir_runtime::ebpf;
use weir_runtime::events::EventSource;

use crate::target::{Backend, Target};
use resolve::Resolver;

/// Which verdicts to print (`--verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerdictFilter {
    Allow,
    Deny,
    Reject,
    Log,
    /// Audit events only ("would …").
    Would,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// One JSON object per line (fields: docs/monitor.md).
    #[arg(long)]
    pub json: bool,
    /// Only events whose source or destination is this endpoint.
    #[arg(long, value_name = "NAME")]
    pub endpoint: Option<String>,
    /// Only events decided by a rule of this policy.
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Only events with this verdict (`would`: audit events).
    #[arg(long, value_enum, value_name = "V")]
    pub verdict: Option<VerdictFilter>,
    /// Exit after printing N events (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub count: u64,
    /// Exit after this many seconds (0: no limit); exit code 0 either
    /// way.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub timeout: f64,
}

/// The event source of the applied back end, and the manifest recorded
/// at apply. The single place a back end's source is chosen.
fn open_source(target: &Target) -> Result<(Box<dyn EventSource>, std::path::PathBuf), i32> {
    match target.backend {
        Backend::Ebpf => {
            let inst = crate::ebpf_cmd::instance(target)?;
            match weir_runtime::events::ringbuf::open_applied(&inst) {
                Ok(Some(r)) => Ok((Box::new(r), inst.state_dir().join("manifest.json"))),
                Ok(None) => Err(fail(
                    "the applied generation was compiled without events (weir compile --events off)",
                )),
                Err(ebpf::EbpfError::NotApplied { instance }) => {
                    Err(fail(format!("nothing applied for {instance}")))
                }
                Err(e) => Err(fail(e)),
            }
        }
        Backend::Iptables => {
            let rt = target.runtime();
            let manifest = rt.applied_manifest().map_err(fail)?;
            let text = std::fs::read(&manifest)
                .map_err(|e| fail(format!("reading {}: {e}", manifest.display())))?;
            let full = weir_compiler::contract::parse(&text)
                .map_err(|e| fail(format!("{}: {e}", manifest.display())))?;
            let section = full
                .backends
                .iptables
                .ok_or_else(|| fail("the applied bundle has no iptables section"))?;
            let source = weir_runtime::events::nflog::NflogSource::for_bundle_in(
                target.netns.as_deref(),
                &section,
            )
            .map_err(fail)?;
            Ok((Box::new(source), manifest))
        }
    }
}

fn fail(e: impl std::fmt::Display) -> i32 {
    crate::errln!("weir monitor: {e}");
    2
}

pub fn run(args: Args) -> i32 {
    let (mut source, manifest) = match open_source(&args.target) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let resolver = match Resolver::from_file(&manifest) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let deadline =
        (args.timeout > 0.0).then(|| Instant::now() + Duration::from_secs_f64(args.timeout));
    let mut printed = 0u64;
    loop {
        let wait = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    break;
                }
                (d - now).min(Duration::from_millis(500))
            }
            None => Duration::from_millis(500),
        };
        let ev = match source.next_event(wait) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => return fail(e),
        };
        let line = resolver.line(&ev);
        if !keep(&args, &ev, &line) {
            continue;
        }
        if args.json {
            crate::outln!(
                "{}",
                serde_json::to_string(&line).expect("event lines serialize")
            );
        } else {
            crate::outln!("{}", line.human());
        }
        printed += 1;
        if args.count > 0 && printed >= args.count {
            break;
        }
    }
    if let Ok(n) = source.dropped() {
        if n > 0 && !args.json {
            crate::errln!("weir monitor: {n} events dropped by the data path (rate limit or full buffer; docs/monitor.md)");
        }
    }
    0
}

fn keep(args: &Args, ev: &VerdictEvent, line: &resolve::EventLine) -> bool {
    if let Some(v) = args.verdict {
        let ok = match v {
            VerdictFilter::Would => ev.audit,
            VerdictFilter::Allow => ev.verdict == EventVerdict::Allow && !ev.audit,
            VerdictFilter::Deny => ev.verdict == EventVerdict::Deny && !ev.audit,
            VerdictFilter::Reject => ev.verdict == EventVerdict::Reject && !ev.audit,
            VerdictFilter::Log => ev.verdict == EventVerdict::Log,
        };
        if !ok {
            return false;
        }
    }
    if let Some(e) = &args.endpoint {
        if line.src_endpoint.as_deref() != Some(e) && line.dst_endpoint.as_deref() != Some(e) {
            return false;
        }
    }
    if let Some(p) = &args.policy {
        if line.policy.as_deref() != Some(p) {
            return false;
        }
    }
    true
}
