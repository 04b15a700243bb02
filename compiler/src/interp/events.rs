//! Verdict events (docs/language.md §4, "Events"): which judgements a back
//! end reports as an event, and with what.
//!
//! **Why a function of the outcome.** An event says nothing the
//! interpreter did not already conclude — a verdict, the provenance that
//! decided it, the `log` rules passed, the audit verdict. Which of those
//! are *reported* is one rule, written here once: `weir trace` prints it
//! (`events: …`), and the kernel tests check every event the data path
//! emits against it. No new syntax: the per-rule `log` flag is the
//! per-policy choice of reporting allows; denials of new flows are
//! always reported.

use super::Outcome;
use crate::contract::event::EventVerdict;
use crate::model::{Model, Verdict};
use crate::provenance::Provenance;

/// One event a judgement emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ExpectedEvent {
    pub verdict: EventVerdict,
    pub by: Provenance,
    /// An audit ("would") verdict.
    pub audit: bool,
}

/// Does `p` name a rule that carries the `log` flag (a deciding
/// `allow` / `deny` / `pass … log`)?
pub fn has_log_flag(model: &Model, p: &Provenance) -> bool {
    match *p {
        Provenance::Rule { policy, dir, index } => model.policies[policy]
            .rules(dir)
            .and_then(|r| r.get(index))
            .is_some_and(|r| r.log),
        _ => false,
    }
}

/// The events one evaluated packet emits, in this order:
///
/// 1. a `log` event for every entry of [`Outcome::logged`] other than the
///    packet's deciding provenance (`log` rules passed, `pass … log`
///    rules, and a side's deciding rule with `log` when the other side
///    decided the packet);
/// 2. the verdict event: every denial (`reject` for a service without
///    backends), whatever decided it; an allow only when its deciding
///    rule has the `log` flag;
/// 3. an audit event when the audit verdict differs from the enforced one
///    ([`super::AuditOutcome::differs`]) and would deny, or its deciding
///    rule has the `log` flag.
///
/// Packets of established connections emit nothing.
pub fn events(model: &Model, o: &Outcome) -> Vec<ExpectedEvent> {
    let mut out = Vec::new();
    if o.decided_by == Provenance::Established {
        return out;
    }
    let ev = |verdict, by, audit| ExpectedEvent { verdict, by, audit };
    for p in &o.logged {
        if *p != o.decided_by {
            out.push(ev(EventVerdict::Log, *p, false));
        }
    }
    match o.verdict {
        Verdict::Deny if o.reject => out.push(ev(EventVerdict::Reject, o.decided_by, false)),
        Verdict::Deny => out.push(ev(EventVerdict::Deny, o.decided_by, false)),
        Verdict::Allow if has_log_flag(model, &o.decided_by) => {
            out.push(ev(EventVerdict::Allow, o.decided_by, false))
        }
        Verdict::Allow => {}
    }
    if let Some(a) = &o.audit {
        if a.differs(o.verdict, o.decided_by)
            && (a.verdict == Verdict::Deny || has_log_flag(model, &a.decided_by))
        {
            let v = match a.verdict {
                Verdict::Allow => EventVerdict::Allow,
                Verdict::Deny => EventVerdict::Deny,
            };
            out.push(ev(v, a.decided_by, true));
        }
    }
    out
}

/// `weir trace`'s `events:` text: `deny by …`, `would deny by …`, joined
/// by `; ` (`none` when the packet emits no event).
pub fn describe(model: &Model, evs: &[ExpectedEvent]) -> String {
    if evs.is_empty() {
        return "none".into();
    }
    evs.iter()
        .map(|e| {
            format!(
                "{}{} by {}",
                if e.audit { "would " } else { "" },
                e.verdict.name(),
                e.by.describe(model)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{parse_packet, Interp};

    fn model(src: &str) -> Model {
        crate::check::model_of(src)
    }

    fn evs(m: &Model, packet: &str) -> Vec<(EventVerdict, String, bool)> {
        let i = Interp::new(m);
        let o = i.evaluate(&parse_packet(packet).unwrap());
        events(m, &o)
            .into_iter()
            .map(|e| (e.verdict, e.by.describe(m), e.audit))
            .collect()
    }

    const SRC: &str = r#"
endpoint web { labels { app: "web" } addr 10.0.0.1 }
endpoint db { labels { app: "db" } addr 10.0.0.2 }
policy db-in priority 100 {
  applies to app == "db"
  ingress {
    log tcp from app == "web"
    allow tcp 5432 from app == "web" log
    allow tcp 80 from app == "web"
  }
}
policy lock priority 10 audit {
  applies to app == "db"
  ingress {
    deny tcp 80 from any
  }
}
"#;

    #[test]
    fn denials_always_allows_only_with_log() {
        let m = model(SRC);
        // Denied by the tier default: one deny event; the log rule passed
        // on the way is a log event.
        assert_eq!(
            evs(&m, "tcp 10.0.0.1:4000 -> 10.0.0.2:22"),
            vec![
                (EventVerdict::Log, "db-in ingress rule #1".into(), false),
                (
                    EventVerdict::Deny,
                    Provenance::TierDefault {
                        tier: 0,
                        dir: crate::model::Direction::Ingress
                    }
                    .describe(&m),
                    false
                ),
            ]
        );
        // An allow rule with `log`: an allow event.
        assert_eq!(
            evs(&m, "tcp 10.0.0.1:4000 -> 10.0.0.2:5432"),
            vec![
                (EventVerdict::Log, "db-in ingress rule #1".into(), false),
                (EventVerdict::Allow, "db-in ingress rule #2".into(), false),
            ]
        );
        // Established: nothing.
        assert_eq!(
            evs(&m, "tcp 10.0.0.1:4000 -> 10.0.0.2:5432 established"),
            vec![]
        );
    }

    #[test]
    fn audit_would_deny_is_an_audit_event() {
        let m = model(SRC);
        assert_eq!(
            evs(&m, "tcp 10.0.0.1:4000 -> 10.0.0.2:80"),
            vec![
                (EventVerdict::Log, "db-in ingress rule #1".into(), false),
                (EventVerdict::Deny, "lock ingress rule #1".into(), true),
            ]
        );
    }
}
