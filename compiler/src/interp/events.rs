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
//!
//! **Why per side.** Policy is judged on two sides (the source's egress,
//! the destination's ingress), and a person who writes `log` on a rule
//! asks to see *that rule's* judgement — as a Calico `Log` action or a
//! Cilium per-direction policy-verdict does. So each side reports its own
//! judgement ([`side_events`]), and each audit side decided by an audit
//! policy reports what that policy would do ([`audit_side_event`]). Both
//! are functions of one side's decision alone, which is what makes them
//! exact in every back end: a side's leaf knows them (the iptables
//! chains keep no per-packet state between the sides' chains).

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

/// Is `p` something only the audit evaluation can decide by — a rule of
/// an audit policy or the isolation default of an audit tier? (The
/// enforced program has neither.)
pub fn is_audit_provenance(model: &Model, p: &Provenance) -> bool {
    match *p {
        Provenance::Rule { policy, .. } => model.policies[policy].audit,
        Provenance::TierDefault { tier, .. } => model.tiers[tier].audit,
        _ => false,
    }
}

/// The events of one enforced side that was evaluated (egress, then
/// ingress unless egress denied), in order: a `log` event for each logged
/// provenance but the side's deciding one; then `deny` when the side
/// denies, `allow` when it allows by a rule with the `log` flag.
pub fn side_events<P: Copy + PartialEq>(
    allow: bool,
    by: P,
    logged: &[P],
    by_has_log: bool,
) -> Vec<(EventVerdict, P)> {
    let mut out: Vec<(EventVerdict, P)> = logged
        .iter()
        .filter(|&&p| p != by)
        .map(|&p| (EventVerdict::Log, p))
        .collect();
    if !allow {
        out.push((EventVerdict::Deny, by));
    } else if by_has_log {
        out.push((EventVerdict::Allow, by));
    }
    out
}

/// The audit event of one audit side, if it reports one: decided by an
/// audit policy ([`is_audit_provenance`]), it would deny, or allow by a
/// rule with the `log` flag.
pub fn audit_side_event(model: &Model, allow: bool, by: &Provenance) -> Option<EventVerdict> {
    if !is_audit_provenance(model, by) {
        None
    } else if !allow {
        Some(EventVerdict::Deny)
    } else if has_log_flag(model, by) {
        Some(EventVerdict::Allow)
    } else {
        None
    }
}

/// The events one evaluated packet emits, in this order:
///
/// 1. before policy (a header denial, a service without backends): the
///    denial (`deny`; `reject` for a service without backends);
/// 2. each enforced side evaluated up to the first denial (egress, then
///    ingress), its [`side_events`];
/// 3. each audit side (egress, then ingress; both, as the audit counters
///    count them), its [`audit_side_event`].
///
/// Packets of established connections emit nothing.
pub fn events(model: &Model, o: &Outcome) -> Vec<ExpectedEvent> {
    let mut out = Vec::new();
    if o.decided_by == Provenance::Established {
        return out;
    }
    let ev = |verdict, by, audit| ExpectedEvent { verdict, by, audit };
    let sides: Vec<_> = [&o.egress, &o.ingress].into_iter().flatten().collect();
    if sides.is_empty() {
        // Decided before policy: a bypass allows (nothing), everything
        // else denies.
        match o.verdict {
            Verdict::Deny if o.reject => out.push(ev(EventVerdict::Reject, o.decided_by, false)),
            Verdict::Deny => out.push(ev(EventVerdict::Deny, o.decided_by, false)),
            Verdict::Allow if has_log_flag(model, &o.decided_by) => {
                out.push(ev(EventVerdict::Allow, o.decided_by, false))
            }
            Verdict::Allow => {}
        }
    }
    for s in sides {
        let allow = s.verdict == Verdict::Allow;
        let log = has_log_flag(model, &s.by);
        for (v, p) in side_events(allow, s.by, &s.logged, log) {
            out.push(ev(v, p, false));
        }
        if !allow {
            break;
        }
    }
    if let Some(a) = &o.audit {
        for s in [&a.egress, &a.ingress].into_iter().flatten() {
            if let Some(v) = audit_side_event(model, s.verdict == Verdict::Allow, &s.by) {
                out.push(ev(v, s.by, true));
            }
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

    const SIDES: &str = r#"
endpoint web { labels { app: "web" } addr 10.0.0.1 }
endpoint db { labels { app: "db" } addr 10.0.0.2 }
policy web-out priority 100 {
  applies to app == "web"
  egress {
    allow tcp to app == "db" log
  }
}
policy db-in priority 100 {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
  }
}
policy web-stage priority 10 audit {
  applies to app == "web"
  egress {
    deny tcp 80 to any
  }
}
policy db-stage priority 10 audit {
  applies to app == "db"
  ingress {
    deny tcp 80 from any
  }
}
"#;

    #[test]
    fn each_side_reports_its_own_judgement() {
        let m = model(SIDES);
        // The egress rule with `log` allowed its side; the ingress rule
        // decides the packet. The egress side still reports `allow`.
        assert_eq!(
            evs(&m, "tcp 10.0.0.1:4000 -> 10.0.0.2:5432"),
            vec![(EventVerdict::Allow, "web-out egress rule #1".into(), false)]
        );
        // Ingress denies: the egress side's allow, then the denial.
        let e = evs(&m, "tcp 10.0.0.1:4000 -> 10.0.0.2:22");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0],
            (EventVerdict::Allow, "web-out egress rule #1".into(), false)
        );
        assert_eq!(e[1].0, EventVerdict::Deny);
    }

    #[test]
    fn each_audit_side_an_audit_policy_decides_reports() {
        let m = model(SIDES);
        // Both staged policies would deny: one audit event per side.
        let e = evs(&m, "tcp 10.0.0.1:4000 -> 10.0.0.2:80");
        assert!(
            e.contains(&(EventVerdict::Deny, "web-stage egress rule #1".into(), true)),
            "{e:?}"
        );
        assert!(
            e.contains(&(EventVerdict::Deny, "db-stage ingress rule #1".into(), true)),
            "{e:?}"
        );
        assert_eq!(e.iter().filter(|x| x.2).count(), 2, "{e:?}");
    }
}
