//! Limits and refusals: what a program exceeds or a back end cannot
//! express on the TC path, as the `E05xx` diagnostics say it.

use super::*;

/// A limit the policy exceeds (becomes an `E05xx` diagnostic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// A map would need more than [`MAX_MAP_ENTRIES`] entries.
    MapTooLarge { map: String, entries: u64 },
    /// More than [`MAX_STAGES`] programs.
    TooManyStages { stages: usize },
    /// A packet's path would make more than [`MAX_TAIL_CALLS`] tail calls.
    TooManyTailCalls { calls: usize },
    /// One decision-graph block does not fit a stage by itself.
    BlockTooLarge {
        block: String,
        slots: usize,
        jumps: usize,
    },
    /// A stage failed to assemble (jump range).
    StageTooLarge {
        stage: usize,
        overflow: StageOverflow,
    },
    /// A construct the TC path cannot express (E0501, not a limit): the
    /// declaration's span and what it is.
    Unsupported {
        span: weir_grammar::Span,
        construct: Construct,
    },
}

/// In words: the diagnostic's message and label.
impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.kind(weir_grammar::Span::default()).into_diagnostic();
        write!(f, "{}: {}", d.message, d.primary.message)
    }
}

impl Limit {
    /// As a diagnostic kind: E0510 at `program_span` (limits are about the
    /// program as a whole), E0501 for [`Limit::Unsupported`] at its
    /// declaration.
    pub fn kind(&self, program_span: weir_grammar::Span) -> Kind {
        let refusal = match self.clone() {
            Limit::Unsupported { span, construct } => {
                return Kind::Refused {
                    span,
                    refusal: Refusal::NotExpressible {
                        backend: crate::contract::Target::Ebpf,
                        construct,
                    },
                }
            }
            Limit::MapTooLarge { map, entries } => Refusal::MapTooLarge {
                map,
                entries,
                max: MAX_MAP_ENTRIES,
            },
            Limit::TooManyStages { stages } => Refusal::TooManyStages {
                stages,
                max: MAX_STAGES,
            },
            Limit::TooManyTailCalls { calls } => Refusal::TooManyTailCalls {
                calls,
                max: MAX_TAIL_CALLS,
            },
            Limit::BlockTooLarge {
                block,
                slots,
                jumps,
            } => Refusal::BlockTooLarge {
                block,
                slots,
                jumps,
            },
            Limit::StageTooLarge { stage, overflow } => Refusal::StageTooLarge { stage, overflow },
        };
        Kind::Refused {
            span: program_span,
            refusal,
        }
    }

    /// The E05xx diagnostic.
    pub fn diagnostic(&self, model: &Model) -> crate::diagnostics::Diagnostic {
        self.kind(model.program_span()).into_diagnostic()
    }
}

/// Whether a service can change an SCTP packet's port: an SCTP frontend
/// whose backends may listen on another port — a selector's target port
/// of another number or a name (resolved per endpoint, and endpoints
/// change at run time), or an explicit backend with another port. Only
/// then does the TC path carry the CRC32c update
/// (`service::sctp_crc`): an address change needs none (SCTP's checksum
/// has no pseudo-header).
pub fn sctp_port_changes(model: &Model) -> bool {
    use crate::model::{BackendSource, Proto, TargetPort};
    model.services.iter().any(|svc| {
        svc.frontends.iter().any(|f| {
            f.proto == Proto::Sctp
                && match &svc.backends {
                    BackendSource::Select { port, .. } => *port != TargetPort::Number(f.port),
                    BackendSource::Explicit(list) => list.iter().any(|b| b.port != f.port),
                }
        })
    })
}

/// `redirect` rules that can match SCTP (protocol `sctp` or none): the
/// TC path assigns packets to a proxy with the kernel's socket lookup,
/// which finds TCP and UDP sockets only, so it cannot steer SCTP (E0525;
/// docs/language.md §4, the eBPF back end's redirect).
pub fn sctp_redirects(model: &Model) -> Vec<Limit> {
    use crate::model::{Proto, ProtoMatch, SteerAction};
    let mut out = Vec::new();
    for s in &model.steers {
        for (i, r) in s.rules.iter().enumerate() {
            let sctp = match &r.proto {
                ProtoMatch::Any => true,
                ProtoMatch::Ports { proto, .. } | ProtoMatch::Named { proto, .. } => {
                    *proto == Proto::Sctp
                }
                ProtoMatch::Icmp { .. } => false,
            };
            if sctp && matches!(r.action, SteerAction::Redirect { .. }) {
                out.push(Limit::Unsupported {
                    span: r.span,
                    construct: Construct::SctpRedirect {
                        steer: s.name.clone(),
                        index: i + 1,
                    },
                });
            }
        }
    }
    out
}
