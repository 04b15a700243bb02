//! The endpoints record of an iptables generation ([`crate::record`]),
//! written at apply: the compiled inventory and the kernel names of the
//! generation's address sets, which `weir endpoints` updates in place.

use weir_compiler::contract::endpoints_state::Header;

use crate::statefs::file_identity;

/// The record of an iptables generation just applied from `bundle`
/// (`state`, written to `state.json`): the compiled inventory, with the
/// bundle files' identities when they can be trusted, so the first
/// `weir endpoints` neither builds the record nor reads the bundle.
/// Best effort: without a record, the next update builds it.
pub(crate) fn applied(
    rt: &crate::iptables::Iptables,
    bundle: &crate::Bundle,
    state: &crate::iptables::State,
) {
    let dir = &rt.options().state_dir;
    let applied = file_identity(&dir.join("state.json"));
    let header = Header {
        files: bundle.files.clone(),
        sets: Some(sets(bundle, state)),
        ipv6_class0: ipv6_class0(bundle),
        self_mark: self_mark(bundle),
        ..Header::new(
            u64::from(state.generation),
            state.bundle_hash.clone(),
            applied,
        )
    };
    crate::record::applied(dir, &bundle.manifest, header, true);
}

/// The generation's address sets: (kernel name, family, classes).
pub(crate) fn sets(
    bundle: &crate::Bundle,
    state: &crate::iptables::State,
) -> Vec<(String, u8, Vec<u32>)> {
    let mut sets = Vec::new();
    for s in &bundle.sets {
        let family = match crate::Bundle::set_family(s) {
            crate::bundle::Family::Ipv4 => 4,
            crate::bundle::Family::Ipv6 => 6,
        };
        let kernel = state
            .sets
            .iter()
            .find(|k| k.name == s.name)
            .map(|k| k.kernel_name.clone())
            .unwrap_or_else(|| crate::iptables::names::generation_set(&s.name, state.generation));
        sets.push((kernel, family, s.classes.clone()));
    }
    sets
}

/// The bundle's IPv6 side decides every address as class 0 (no IPv6
/// sets): see the manifest's `ipv6_class0`.
pub(crate) fn ipv6_class0(bundle: &crate::Bundle) -> bool {
    bundle
        .manifest
        .backends
        .iptables
        .as_ref()
        .is_some_and(|s| s.ipv6_class0)
}

/// The bundle's `self` mark (the manifest's `self_mark`) when not the
/// one an absent value means (`LEGACY_MASK`): what [`self_mark_of`]
/// reads back from the record.
pub(crate) fn self_mark(bundle: &crate::Bundle) -> Option<u32> {
    bundle
        .manifest
        .backends
        .iptables
        .as_ref()
        .map(|s| s.self_mark)
        .filter(|&m| m != weir_compiler::iptables::self_set::LEGACY_MASK)
}

/// The `self` mark a record's generation was compiled with (the
/// manifest's, recorded; never recomputed). The manifest was validated
/// when read, so a recorded mask is one; a record whose mask is not
/// (written by hand) is refused rather than guessed.
pub(crate) fn self_mark_of(
    header: &Header,
) -> Result<weir_compiler::iptables::self_set::SelfMark, String> {
    use weir_compiler::iptables::self_set::{SelfMark, LEGACY_MASK};
    SelfMark::new(header.self_mark.unwrap_or(LEGACY_MASK))
}
