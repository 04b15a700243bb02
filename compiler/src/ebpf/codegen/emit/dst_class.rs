//! The destination's class, deferred past the service stage (issue 21:
//! the new service flow's cost).
//!
//! The prologue classifies both addresses of a new flow. For a packet to a
//! frontend the destination's class was wasted work: the frontend's
//! address is rarely an endpoint, so its class was a host-hash miss and,
//! with CIDR prefixes, a trie lookup — and the service stage then
//! classified the backend anyway ([`Gen::service`]). Between the two,
//! only the steering entry reads the destination's class (it judges the
//! packet as sent, before load balancing). So in a program that
//! translates and whose steering entry is the "no steering rule" leaf,
//! the prologue classifies only the source and the service block
//! classifies the destination on its every way out to the policy: the
//! backend for a translated packet, the destination as sent for any
//! other. A program with steering rules classifies as before.

use super::*;

impl Gen<'_> {
    /// Whether the destination's class is left to the service block (see
    /// the module docs): the program translates, and its steering entry
    /// is the "no steering rule" leaf (which reads no class).
    pub(super) fn defers_dst_class(&self) -> bool {
        self.has_services
            && translates(self.g)
            && matches!(
                self.g.dag.node(self.g.dag.roots.steer),
                Node::Steer(SteerLeaf::None)
            )
    }

    /// The destination's class by the packet's family (the backend's
    /// after a translation: it has the frontend's family), then both
    /// classes' atom rows.
    pub(super) fn classify_dst(&self, em: &mut Em) {
        let dst6 = em.label("reclassify6");
        let classified = em.label("reclassified");
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R1, 6, dst6);
        self.classify(em, 4, ctx::DST, ctx::DST_CLASS);
        em.push(Op::Ja { target: classified });
        em.bind(dst6);
        self.classify(em, 6, ctx::DST, ctx::DST_CLASS);
        em.bind(classified);
        self.load_rows(em);
    }
}

#[cfg(test)]
mod tests {
    use crate::ebpf::codegen::{generate, Options};
    use crate::ebpf::service::tests::compile;

    const SERVICE: &str = r#"
endpoint client { labels { app: "client" } addr 10.0.0.1 }
endpoint web-1 { labels { app: "web" } addr 10.1.0.1 }
service web {
  frontend 10.96.0.1:80/tcp
  backends { 10.1.0.1:8080 }
}
"#;

    /// Host-hash lookups of IPv4 addresses between the prologue's
    /// conntrack miss (`new_flow`) and the service block, and after it
    /// (the service block's classification of the destination).
    fn host4_lookups(src: &str) -> (usize, usize) {
        let (m, g) = compile(src);
        let out = generate(&m, &g, &Options::default()).expect("generated");
        let l = &out.listing;
        let new = l.find("\nnew_flow:").expect("new_flow");
        let service = new + l[new..].find("\nservice:").expect("service");
        let count = |s: &str| s.matches("map_fd(weir_host4)").count();
        let reclassify = service + l[service..].find("\nreclassify:").expect("reclassify");
        let end = reclassify + l[reclassify..].find("\nreclassified:").expect("end");
        (count(&l[new..service]), count(&l[reclassify..end]))
    }

    /// Without steering rules the prologue classifies only the source
    /// and the service block the destination (on every way out); with a
    /// steering rule (which judges the packet as sent) the prologue
    /// classifies both, as before.
    #[test]
    fn destination_class_deferred_only_without_steering() {
        assert_eq!(host4_lookups(SERVICE), (1, 1));
        let steered = format!("{SERVICE}steer s priority 10 {{\n  mark 0x10 tcp 80 from any\n}}\n");
        assert_eq!(host4_lookups(&steered), (2, 1));
    }
}
