//! Issue 15 ("done means"): generated dual-stack programs
//! (`gen::dual_stack`: IPv4 and IPv6 endpoints, sets, services, SCTP,
//! steering) through `weir compile --target all` never panic. In process,
//! through the function the CLI calls after checking
//! (`backends::generate_all` on the model's graph), for each model as
//! generated (the eBPF back end translates its IPv6 and SCTP services,
//! an SCTP port change with the CRC32c update) and with the SCTP
//! frontends removed, and through the eBPF generator with the SCTP
//! redirect refusal off (where the all-IPv6 service panic was). A back end may refuse (a diagnostic of the E05xx
//! family naming it), never crash; the interpreter judges the generated
//! packets (`weir trace`) without a panic too.

use std::panic::{catch_unwind, AssertUnwindSafe};

use weir_compiler::backends;
use weir_compiler::gen;
use weir_compiler::graph;
use weir_compiler::interp::Interp;
use weir_compiler::model::Model;

#[derive(Default)]
struct Tally {
    programs: usize,
    compiled: usize,
    refused: usize,
    /// eBPF outputs.
    ebpf: usize,
}

/// Every back end on `model`: counts what compiled and what was refused;
/// the refusals must be back-end diagnostics.
fn all_targets(tag: &str, model: &Model, t: &mut Tally) -> Result<(), String> {
    let g = graph::build(model);
    let results = catch_unwind(AssertUnwindSafe(|| {
        backends::generate_all(&backends::ALL, model, &g)
    }))
    .map_err(|_| format!("{tag}: a back end panicked"))?;
    t.programs += 1;
    for (target, r) in results {
        match r {
            Ok(_) => {
                t.compiled += 1;
                t.ebpf += usize::from(target == weir_compiler::bundle::Target::Ebpf);
            }
            Err(diags) => {
                t.refused += 1;
                for d in diags {
                    let code = d.code.as_str();
                    if !code.starts_with("E05") || !d.message.contains(target.name()) {
                        return Err(format!("{tag}: {code} {}", d.message));
                    }
                }
            }
        }
    }
    let interp = Interp::new(model);
    let mut rng = gen::Rng::new(0x7ACE);
    for p in gen::packets(model, &mut rng, 50) {
        catch_unwind(AssertUnwindSafe(|| interp.evaluate(&p)))
            .map_err(|_| format!("{tag}: the interpreter panicked on {p:?}"))?;
    }
    Ok(())
}

/// `model` without SCTP frontends.
fn translatable(model: &Model) -> Model {
    let mut m = model.clone();
    for s in &mut m.services {
        s.frontends
            .retain(|f| f.proto != weir_compiler::model::Proto::Sctp);
    }
    m.services.retain(|s| !s.frontends.is_empty());
    m
}

/// The eBPF generator with redirects of SCTP passed unsteered (for
/// tests): a limit is fine, a panic is not.
fn untranslated(tag: &str, model: &Model) -> Result<(), String> {
    use weir_compiler::ebpf::codegen::{generate, Options};
    let g = graph::build(model);
    let opts = Options {
        unsteered_sctp_redirects: true,
        ..Options::default()
    };
    catch_unwind(AssertUnwindSafe(|| generate(model, &g, &opts)))
        .map(|_| ())
        .map_err(|_| format!("{tag}: the eBPF generator panicked (unsteered SCTP redirects)"))
}

#[test]
fn generated_dual_stack_programs_compile_for_every_target_without_panics() {
    let seeds = 80u64;
    let mut t = Tally::default();
    let mut failures = Vec::new();
    let (mut six, mut without_sctp, mut sctp_port_change) = (0, 0, 0);
    let (mut redirect_refused, mut ebpf_refused) = (0, 0);
    for seed in 0..seeds {
        let model = gen::dual_stack(seed);
        let sctp = model.services.iter().any(|s| {
            s.frontends
                .iter()
                .any(|f| f.proto == weir_compiler::model::Proto::Sctp)
        });
        without_sctp += usize::from(!sctp);
        sctp_port_change += usize::from(weir_compiler::ebpf::codegen::sctp_port_changes(&model));
        // A redirect that can match SCTP (E0525) refuses both variants
        // (the steering is the same); counted apart from the port change.
        let redirect = !weir_compiler::ebpf::codegen::sctp_redirects(&model).is_empty();
        redirect_refused += usize::from(redirect);
        ebpf_refused += 2 * usize::from(redirect);
        six += usize::from(
            model
                .services
                .iter()
                .any(|s| s.frontends.iter().all(|f| f.addr.is_ipv6())),
        );
        let tag = format!("seed {seed}");
        let r = all_targets(&tag, &model, &mut t)
            .and_then(|_| {
                all_targets(
                    &format!("{tag}, TCP / UDP frontends only"),
                    &translatable(&model),
                    &mut t,
                )
            })
            .and_then(|_| untranslated(&tag, &model));
        if let Err(e) = r {
            failures.push(e);
        }
    }
    eprintln!(
        "{} programs ({six} with an IPv6-only service, {without_sctp} without SCTP, {sctp_port_change} with an SCTP port change, {redirect_refused} with a redirect matching SCTP): {} back-end outputs ({} eBPF), {} refusals, {} panics",
        t.programs,
        t.compiled,
        t.ebpf,
        t.refused,
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(t.programs, 2 * seeds as usize);
    // Every model, as generated (IPv6 and SCTP services included, an
    // SCTP port change too: issue 18) and with its SCTP frontends
    // removed; neither variant of a model with a redirect that can match
    // SCTP (E0525).
    assert_eq!(
        t.ebpf,
        2 * seeds as usize - ebpf_refused,
        "eBPF compiles every translatable model"
    );
    assert!(
        redirect_refused > 0 && redirect_refused < seeds as usize,
        "some models redirect SCTP, some do not"
    );
    assert_eq!(six, seeds as usize, "every model has an IPv6-only service");
    assert!(without_sctp > 0, "some models have no SCTP service");
    assert!(sctp_port_change > 0, "some SCTP services change the port");
    assert!(
        without_sctp + sctp_port_change < seeds as usize,
        "some SCTP services are translated"
    );
    // iptables refuses Maglev over several backends; eBPF a redirect
    // that can match SCTP.
    assert!(t.compiled >= seeds as usize * 2, "most compile");
}

/// Issue 18: the generator's IPv6 steering block produces redirects to a
/// proxy (TCP or UDP, the proxy IPv6 or IPv4, from IPv6 prefixes or from
/// anyone), so the differential tests over `gen::dual_stack` cover IPv6
/// redirects; none of them is refused by a back end (no E0525: they
/// cannot match SCTP).
#[test]
fn generated_dual_stack_programs_redirect_ipv6_traffic() {
    use weir_compiler::model::{PeerMatch, ProtoMatch, SteerAction};
    let (mut models, mut to_v4_proxy, mut from_anyone) = (0, 0, 0);
    for seed in 0..80u64 {
        let model = gen::dual_stack(seed);
        let mut found = false;
        for r in model
            .steers
            .iter()
            .filter(|s| s.name == "st6")
            .flat_map(|s| &s.rules)
        {
            if let SteerAction::Redirect { addr, .. } = r.action {
                found = true;
                to_v4_proxy += usize::from(addr.is_ipv4());
                from_anyone += usize::from(matches!(r.from, PeerMatch::Any));
                assert!(
                    matches!(r.proto, ProtoMatch::Ports { proto, .. }
                        if proto != weir_compiler::model::Proto::Sctp),
                    "seed {seed}: a TCP / UDP redirect"
                );
            }
        }
        if !found {
            continue;
        }
        models += 1;
        // The IPv6 steering block alone (the IPv4 one may redirect SCTP).
        let mut m = translatable(&model);
        m.steers.retain(|s| s.name == "st6");
        let g = graph::build(&m);
        for (target, r) in backends::generate_all(&backends::ALL, &m, &g) {
            if let Err(diags) = r {
                for d in diags {
                    assert!(
                        !d.message.contains("redirect"),
                        "seed {seed}: {} refuses the redirect: {}",
                        target.name(),
                        d.message
                    );
                }
            }
        }
    }
    eprintln!("{models} of 80 models redirect IPv6 traffic ({to_v4_proxy} to an IPv4 proxy, {from_anyone} from anyone)");
    assert!(models >= 8, "too few IPv6 redirects: {models}");
    assert!(
        to_v4_proxy > 0 && to_v4_proxy < models,
        "to both proxy families"
    );
    assert!(from_anyone > 0, "some dual-stack redirects");
}
