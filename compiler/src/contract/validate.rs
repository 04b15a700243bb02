//! Every value a manifest holds that its type cannot restrict, checked
//! once on reading ([`super::parse`]): a runtime never writes a class id
//! beyond the class table, an address of the wrong length, a hook weir
//! does not write, or a file name with a directory part into the kernel.
//! Each failure names the value by its path in the manifest.

use std::collections::BTreeSet;

use super::atom_rows::{BITS_MAP, MAP as ATOMS};
use super::iptables::{IptablesSection, SetKind, HOOKS};
use super::manifest::{EbpfSection, Manifest, Target};
use super::plain_name;

type Check = Result<(), String>;

/// All checks of a manifest.
pub fn manifest(m: &Manifest) -> Check {
    artifacts(m)?;
    targets(m)?;
    classes(m)?;
    provenance_and_services(m)?;
    local_proxies(m)?;
    if let Some(e) = &m.backends.ebpf {
        ebpf(m, e)?;
    }
    if let Some(i) = &m.backends.iptables {
        iptables(m, i)?;
    }
    Ok(())
}

fn artifacts(m: &Manifest) -> Check {
    for (name, hash) in &m.artifacts {
        if !plain_name(name) || name == super::MANIFEST {
            return Err(format!(
                "artifacts: `{name}` is not a plain file name of the bundle directory"
            ));
        }
        let hex = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex {
            return Err(format!(
                "artifacts.{name}: `{hash}` is not a SHA-256 (64 lowercase hex digits)"
            ));
        }
    }
    Ok(())
}

/// `targets` and `backends` name the same back ends.
fn targets(m: &Manifest) -> Check {
    let listed: BTreeSet<Target> = m.targets.iter().copied().collect();
    let mut sections = BTreeSet::new();
    if m.backends.ebpf.is_some() {
        sections.insert(Target::Ebpf);
    }
    if m.backends.iptables.is_some() {
        sections.insert(Target::Iptables);
    }
    if listed.len() != m.targets.len() || listed != sections {
        return Err(format!(
            "targets {:?} do not match the back-end sections ({})",
            m.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
            m.backend_names()
        ));
    }
    Ok(())
}

/// The number of classes: every class id must be below it.
fn class_count(m: &Manifest) -> usize {
    m.classes.rows.len()
}

fn class_id(what: &str, class: u32, n: usize) -> Check {
    if class as usize >= n {
        return Err(format!(
            "{what} is class {class}, but the bundle has {n} classes"
        ));
    }
    Ok(())
}

fn classes(m: &Manifest) -> Check {
    let c = &m.classes;
    let (atoms, n) = (c.atoms.len(), class_count(m));
    if c.endpoint_atom as usize >= atoms {
        return Err(format!(
            "classes.endpoint_atom is {}, but there are {atoms} atoms",
            c.endpoint_atom
        ));
    }
    for (i, row) in c.rows.iter().enumerate() {
        if let Some(a) = row.iter().find(|&&a| a as usize >= atoms) {
            return Err(format!(
                "classes.rows[{i}] holds atom {a}, but there are {atoms} atoms"
            ));
        }
    }
    for (i, (cidr, class)) in c.map.iter().enumerate() {
        let at = format!("classes.map[{i}] ({}/{})", cidr.addr, cidr.len);
        class_id(&at, *class, n)?;
    }
    for e in &m.endpoints {
        for a in &e.addrs {
            class_id(
                &format!("endpoint `{}` address {}", e.name, a.addr),
                a.class,
                n,
            )?;
        }
    }
    Ok(())
}

/// A listed proxy is one the host must be checked for: never loopback
/// or unspecified (on every host; the writer never lists one), and a
/// rule position from 1.
fn local_proxies(m: &Manifest) -> Check {
    for (i, p) in m.local_proxies.iter().enumerate() {
        if crate::proxy_addr::is_host_local(p.addr) {
            return Err(format!(
                "local_proxies[{i}]: {} is on every host, not a node address",
                p.addr
            ));
        }
        if p.index == 0 {
            return Err(format!(
                "local_proxies[{i}]: rule index 0 (rules count from 1)"
            ));
        }
    }
    Ok(())
}

fn provenance_and_services(m: &Manifest) -> Check {
    for (i, p) in m.provenance.iter().enumerate() {
        if p.id as usize != i {
            return Err(format!("provenance[{i}] has id {}", p.id));
        }
    }
    for (i, s) in m.services.iter().enumerate() {
        if s.index != i {
            return Err(format!(
                "services[{i}] (`{}`) has index {}",
                s.name, s.index
            ));
        }
        if s.no_backends_provenance as usize >= m.provenance.len() {
            return Err(format!(
                "services[{i}].no_backends_provenance is {}, but there are {} provenance ids",
                s.no_backends_provenance,
                m.provenance.len()
            ));
        }
        if let Some(b) = &s.backend_selector {
            port_keys(&format!("services[{i}] (`{}`)", s.name), s, b)?;
        }
    }
    Ok(())
}

/// A named target port's keys: one per protocol of the frontends, each
/// `port:NAME/PROTO` of that protocol, and port 0; none with a port.
fn port_keys(at: &str, s: &super::ServiceEntry, b: &super::BackendSelector) -> Check {
    if !b.per_protocol() {
        return match b.port {
            0 => Err(format!(
                "{at}: backend_selector has port 0 and no port_keys"
            )),
            _ => Ok(()),
        };
    }
    if b.port != 0 {
        return Err(format!("{at}: backend_selector has a port and port_keys"));
    }
    for (proto, key) in &b.port_keys {
        let ok = key
            .strip_prefix(crate::named_ports::PREFIX)
            .and_then(|r| r.rsplit_once('/'))
            .is_some_and(|(n, p)| p == proto && crate::named_ports::valid_port_name(n));
        if !ok {
            return Err(format!(
                "{at}: port_keys: `{key}` is not a named-port label of protocol {proto}"
            ));
        }
    }
    match s
        .frontends
        .iter()
        .find(|f| !b.port_keys.contains_key(&f.frontend.proto))
    {
        Some(f) => Err(format!(
            "{at}: port_keys has no key for frontend {}",
            String::from(f.frontend.clone())
        )),
        None => Ok(()),
    }
}

fn ebpf(m: &Manifest, e: &EbpfSection) -> Check {
    let p = &e.program;
    let n = class_count(m);
    if !plain_name(&p.object) || !m.artifacts.contains_key(&p.object) {
        return Err(format!(
            "backends.ebpf.object `{}` is not a file the manifest lists in `artifacts`",
            p.object
        ));
    }
    if p.fill.atom_rows.len() != n {
        return Err(format!(
            "backends.ebpf.fill.atom_rows has {} rows, but the bundle has {n} classes",
            p.fill.atom_rows.len()
        ));
    }
    p.fill
        .atom_rows
        .check()
        .map_err(|e| format!("backends.ebpf.fill.{e}"))?;
    let bits = &p.fill.atom_bits;
    if !bits.is_empty() {
        if bits.len() != n {
            return Err(format!(
                "backends.ebpf.fill.atom_bits has {} rows, but the bundle has {n} classes",
                bits.len()
            ));
        }
        bits.check()
            .map_err(|e| format!("backends.ebpf.fill.{}", e.replace("atom_rows", "atom_bits")))?;
        if let Some(map) = p.maps.iter().find(|m| m.name == BITS_MAP) {
            if (map.key_size, map.value_size) != (8, 4)
                || u64::from(map.max_entries) < bits.nonzero_words() as u64
            {
                return Err(format!(
                    "backends.ebpf.fill.atom_bits has {} words, but map {BITS_MAP} holds {} entries of {}-byte keys and {}-byte values",
                    bits.nonzero_words(),
                    map.max_entries,
                    map.key_size,
                    map.value_size
                ));
            }
        }
    }
    if let Some(map) = p.maps.iter().find(|m| m.name == ATOMS) {
        if u64::from(p.fill.atom_rows.width()) * 4 != u64::from(map.value_size) {
            return Err(format!(
                "backends.ebpf.fill.atom_rows are {} words wide, but map {ATOMS} holds {}-byte rows",
                p.fill.atom_rows.width(),
                map.value_size
            ));
        }
    }
    for (list, bytes, bits) in [("cls4", &p.fill.cls4, 4usize), ("cls6", &p.fill.cls6, 16)] {
        for (i, x) in bytes.iter().enumerate() {
            let at = format!("backends.ebpf.fill.{list}[{i}]");
            if x.addr.len() != bits {
                return Err(format!(
                    "{at} has a {}-byte address; {list} holds {bits}-byte addresses",
                    x.addr.len()
                ));
            }
            if x.len as usize > bits * 8 {
                return Err(format!(
                    "{at} has prefix length {} (at most {})",
                    x.len,
                    bits * 8
                ));
            }
            class_id(&at, x.class, n)?;
        }
    }
    if p.counters as usize != m.provenance.len() {
        return Err(format!(
            "backends.ebpf.counters is {}, but there are {} provenance ids",
            p.counters,
            m.provenance.len()
        ));
    }
    if !p.programs.iter().any(|q| q.name == p.entry) {
        return Err(format!(
            "backends.ebpf.entry `{}` is not one of its programs",
            p.entry
        ));
    }
    if let Some(lb) = &p.lb {
        lb_state(m, lb)?;
    }
    if let Some(a) = p.attach.iter().find(|a| a.as_str() != "tc-ingress") {
        return Err(format!(
            "backends.ebpf.attach: `{a}` is not an attach point weir writes (tc-ingress)"
        ));
    }
    Ok(())
}

/// The service maps' state: indexes within their lists and capacities.
fn lb_state(m: &Manifest, lb: &super::ebpf::LbState) -> Check {
    let cap = &lb.capacity;
    if lb.services.len() != m.services.len() {
        return Err(format!(
            "backends.ebpf.lb has {} services, the manifest {}",
            lb.services.len(),
            m.services.len()
        ));
    }
    for (i, svc) in lb.services.iter().enumerate() {
        let at = format!("backends.ebpf.lb.services[{i}] (`{}`)", svc.name);
        if svc.no_backends as usize >= m.provenance.len() {
            return Err(format!("{at}: no_backends is not a provenance id"));
        }
        for (group, set) in &svc.sets {
            if group.proto.is_some() != svc.per_protocol {
                return Err(format!(
                    "{at}: set {group} (a protocol exactly when per_protocol)"
                ));
            }
            if let Some(s) = set
                .slots
                .iter()
                .find(|&&s| s as usize >= set.backends.len())
            {
                return Err(format!(
                    "{at}: slot {s} is beyond its {} backends",
                    set.backends.len()
                ));
            }
            if set.slots.len() > cap.slots as usize || set.table.is_some_and(|t| t >= cap.tables) {
                return Err(format!("{at}: exceeds the service maps' capacity"));
            }
        }
    }
    Ok(())
}

fn iptables(m: &Manifest, s: &IptablesSection) -> Check {
    let (n, atoms) = (class_count(m), m.classes.atoms.len());
    if s.classes != n {
        return Err(format!(
            "backends.iptables.classes is {}, but the bundle has {n} classes",
            s.classes
        ));
    }
    if let Err(e) = crate::iptables::self_set::SelfMark::new(s.self_mark) {
        return Err(format!("backends.iptables.self_mark: {e}"));
    }
    for (i, h) in s.hooks.iter().enumerate() {
        let known = HOOKS
            .iter()
            .any(|&(t, c, g)| (t, c, g) == (h.table.as_str(), h.chain.as_str(), h.target.as_str()));
        if !known {
            return Err(format!(
                "backends.iptables.hooks[{i}]: {} {} → {} is not a hook weir writes ({})",
                h.table,
                h.chain,
                h.target,
                HOOKS
                    .iter()
                    .map(|(t, c, g)| format!("{t} {c} → {g}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for (i, set) in s.sets.iter().enumerate() {
        let at = format!("backends.iptables.sets[{i}] (`{}`)", set.name);
        let name_ok = set.name.starts_with("weir-")
            && set.name.len() <= 24
            && set
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !name_ok {
            return Err(format!(
                "{at}: not a set name weir writes (`weir-` and up to 19 letters, digits or `-`)"
            ));
        }
        for &c in &set.classes {
            class_id(&format!("{at} member"), c, n)?;
        }
        let role = match set.kind {
            SetKind::Class => set.class.is_some_and(|c| (c as usize) < n) && set.atom.is_none(),
            SetKind::Atom => set.atom.is_some_and(|a| (a as usize) < atoms) && set.class.is_none(),
            SetKind::Classes => set.atom.is_none() && set.class.is_none(),
        };
        if !role {
            return Err(format!(
                "{at}: its `class` / `atom` do not fit kind {:?} in a bundle of {n} classes and {atoms} atoms",
                set.kind
            ));
        }
    }
    Ok(())
}
