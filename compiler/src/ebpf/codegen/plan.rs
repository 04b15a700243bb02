//! Planning the layout: blocks in pipeline order (depth-first reverse
//! postorder per entry), which class tables become row columns, the class
//! rows, and the stage split (split, assemble, split tighter).

use super::leaf_events::SharedEvents;
use super::stage_listing::StageListing;
use super::*;
use crate::contract::atom_rows::AtomRows;

/// Nodes reachable from `root` in reverse postorder of a depth-first
/// walk: a topological order (parents first, so blocks only jump
/// forward) that keeps each subtree together, so a packet's path crosses
/// few stage cuts; children are visited in payload order, so a test's
/// else branch and a table's default come right after it (the jump to
/// them falls through).
pub(super) fn reachable(g: &Graph, root: NodeId) -> Vec<NodeId> {
    let kids =
        |n: NodeId| -> Vec<NodeId> { g.node(n).children().into_iter().map(|c| c.1).collect() };
    let mut seen = BTreeSet::from([root]);
    let mut post = Vec::new();
    // (node, its children, next child to visit)
    let mut stack = vec![(root, kids(root), 0usize)];
    while let Some((n, children, next)) = stack.last_mut() {
        if let Some(&c) = children.get(*next) {
            *next += 1;
            if seen.insert(c) {
                stack.push((c, kids(c), 0));
            }
        } else {
            post.push(*n);
            stack.pop();
        }
    }
    post.reverse();
    post
}

/// The blocks of the program, in layout order, and what laying them out
/// needs: which class tables become map columns, the atom row width, the
/// log slots used.
pub(super) struct Plan {
    pub(super) node_numbers: HashMap<NodeId, usize>,
    pub(super) blocks: Vec<Block>,
    pub(super) has_atoms: bool,
    pub(super) ctabs: BTreeMap<NodeId, ClassTable>,
    /// Per map-backed class table, the branch of every class (its column
    /// in the class rows).
    pub(super) columns: Vec<Vec<u16>>,
    /// Words of atom bits at the start of a class row: none when the
    /// bits are in `weir_atom_bits` ([`super::sparse_atoms`]).
    pub(super) atom_words: usize,
    /// Words of atom bits of a class (in its row or in `weir_atom_bits`).
    pub(super) bit_words: usize,
    pub(super) sparse_atoms: bool,
    pub(super) log_slots: usize,
    pub(super) shared_events: SharedEvents,
}

/// Plans the blocks: the prologue, every node reachable from each entry
/// (the service block after the steering entry), the final block.
pub(super) fn plan(model: &Model, g: &Graph, audit_g: Option<&Graph>, opts: &Options) -> Plan {
    let (_, node_numbers) = g.dag.numbering();
    let roots = g.dag.roots;
    let mut entries = vec![(Entry::Steer, roots.steer)];
    // The audit walks (`audit.rs`): after the service block, before the
    // enforced sides.
    if let Some(a) = audit_g {
        for e in audit::audit_entries(opts.mode) {
            let r = a.dag.roots;
            entries.push((
                e,
                if e == Entry::AuditEgress {
                    r.egress
                } else {
                    r.ingress
                },
            ));
        }
    }
    if opts.mode != Mode::Ingress {
        entries.push((Entry::Egress, roots.egress));
    }
    if opts.mode != Mode::Egress {
        entries.push((Entry::Ingress, roots.ingress));
    }
    let mut blocks = vec![Block::Prologue];
    let mut has_atoms = false;
    let mut ctabs: BTreeMap<NodeId, ClassTable> = BTreeMap::new();
    // Per map-backed class table, the branch of every class (its column
    // in the class rows).
    let mut columns: Vec<Vec<u16>> = Vec::new();
    let bit_words = g.classes.atoms.len().div_ceil(32).max(1);
    let sparse_atoms = opts.atoms.sparse(g, bit_words);
    let atom_words = if sparse_atoms { 0 } else { bit_words };
    let mut log_slots = 0;
    let nclasses = g.classes.len() as u32;
    let mut shared_events = SharedEvents::default();
    for (e, root) in &entries {
        let eg = match audit_g {
            Some(a) if e.is_audit() => a,
            _ => g,
        };
        let order = reachable(eg, *root);
        // Leaves' events (`leaf_events.rs`): the egress leaves' block
        // before the ingress walk they go on to.
        if *e == Entry::Ingress && shared_events.to_ingress {
            blocks.push(Block::LeafEvents { to_ingress: true });
        }
        if matches!(e, Entry::Egress | Entry::Ingress) && opts.events.is_some() {
            shared_events.add(model, g, *e, &order, opts.mode == Mode::Node);
        }
        for &n in &order {
            if e.is_audit() {
                // Audit leaves only count; audit tables stay inline.
                has_atoms |= matches!(
                    eg.node(n),
                    Node::Test {
                        cond: Cond::SrcAtom(_) | Cond::DstAtom(_),
                        ..
                    }
                );
                continue;
            }
            match g.node(n) {
                Node::Verdict(v) => log_slots = log_slots.max(v.logged.len().min(LOG_SLOTS)),
                Node::Test {
                    cond: Cond::SrcAtom(_) | Cond::DstAtom(_),
                    ..
                } => has_atoms = true,
                Node::Table {
                    key: TableKey::SrcClass | TableKey::DstClass,
                    entries: iv,
                    ..
                } if iv.len() > INLINE_CLASS_INTERVALS
                    && !ctabs.contains_key(&n)
                    && row_bytes(atom_words, columns.len() + 1) <= MAX_ROW_BYTES =>
                {
                    let mut targets: Vec<NodeId> = Vec::new();
                    let mut branch_of: HashMap<NodeId, u16> = HashMap::new();
                    let mut column = vec![NO_BRANCH; nclasses as usize];
                    for x in iv {
                        // A branch index is a `u16` below `NO_BRANCH`: a
                        // table with more distinct targets stays a search
                        // on the class itself.
                        let branch = *branch_of.entry(x.next).or_insert_with(|| {
                            targets.push(x.next);
                            (targets.len() - 1).min(usize::from(NO_BRANCH)) as u16
                        });
                        for c in x.lo..=x.hi.min(nclasses.saturating_sub(1)) {
                            column[c as usize] = branch;
                        }
                    }
                    if targets.len() < usize::from(NO_BRANCH) {
                        let id = columns.len() as u32;
                        columns.push(column);
                        ctabs.insert(n, ClassTable { id, targets });
                    }
                }
                _ => {}
            }
        }
        // Each node, and before the first in-place target of each group
        // of a large table, that group's dispatch block.
        // (Audit walks are another graph: their node ids are not the
        // enforced graph's, and their tables stay inline.)
        blocks.extend(dispatch::plan_dispatch(eg, *e, &order, |n| {
            match (eg.node(n), ctabs.get(&n).filter(|_| !e.is_audit())) {
                (_, Some(t)) => Some(t.targets.clone()),
                (Node::Table { entries, .. }, None) => {
                    Some(entries.iter().map(|x| x.next).collect())
                }
                _ => None,
            }
        }));
        if *e == Entry::Steer {
            blocks.push(Block::Service);
        }
    }
    if shared_events.to_final {
        blocks.push(Block::LeafEvents { to_ingress: false });
    }
    blocks.push(Block::Final);
    Plan {
        node_numbers,
        blocks,
        has_atoms,
        ctabs,
        columns,
        atom_words,
        bit_words,
        sparse_atoms,
        log_slots,
        shared_events,
    }
}

/// The class rows (`weir_atoms`): per class, its atoms as a bit set, then
/// its branch in every map-backed class table, padded to `row_size`;
/// built by their non-zero words (a row of 100,000 atoms is 3,125 words,
/// of which a class sets one or two). With `sparse_bits` (the words of
/// atom bits, [`super::sparse_atoms`]) the bits go into the second rows
/// returned (`Fill::atom_bits`) and the class rows hold only the columns
/// (`atom_words` is then 0); without, the second rows are empty.
pub(super) fn class_rows(
    g: &Graph,
    atom_words: usize,
    columns: &[Vec<u16>],
    row_size: usize,
    sparse_bits: Option<usize>,
) -> (AtomRows, AtomRows) {
    let mut rows = AtomRows::new((row_size / 4) as u32);
    let mut bits = match sparse_bits {
        Some(w) => AtomRows::new(w as u32),
        None => AtomRows::default(),
    };
    let mut tail: Vec<u8> = Vec::with_capacity(row_size - atom_words * 4);
    for (c, row) in g.classes.classes.iter().enumerate() {
        let mut words: Vec<(u32, u32)> = Vec::new();
        // `iter` is increasing: one word per run of atoms in it.
        for a in row.iter() {
            let (i, bit) = ((a / 32) as u32, 1u32 << (a % 32));
            match words.last_mut() {
                Some((j, w)) if *j == i => *w |= bit,
                _ => words.push((i, bit)),
            }
        }
        if sparse_bits.is_some() {
            bits.push_sparse(std::mem::take(&mut words));
        }
        tail.clear();
        for col in columns {
            tail.extend_from_slice(&col[c].to_ne_bytes());
        }
        tail.resize(row_size - atom_words * 4, 0);
        for (k, b) in tail.chunks(4).enumerate() {
            let w = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            words.push(((atom_words + k) as u32, w));
        }
        rows.push_sparse(words);
    }
    (rows, bits)
}

/// The accepted stage split ([`split_stages`]).
pub(super) struct Split {
    /// Each block's stage.
    pub(super) stage_of: Vec<usize>,
    /// The assembled stages, their listings already written (none when
    /// there are more than [`MAX_STAGES`]).
    pub(super) staged: Option<Vec<stages::Stage>>,
    /// The tail calls on the longest path.
    pub(super) calls: usize,
}

/// The stages: split, assemble, and split tighter while a stage comes out
/// larger than the budget (stubs and dispatch are only known after).
/// Each stage's listing goes into `listing` as soon as the stage is
/// assembled within its size, and is freed (`stage_listing.rs`); a split
/// redone tighter starts the listing again.
pub(super) fn split_stages(
    gen: &Gen,
    opts: &Options,
    listing: &mut StageListing,
) -> Result<Split, Vec<Limit>> {
    let mut sizes: Vec<stages::BlockSize> = (0..gen.blocks.len())
        .map(|b| stages::measure(gen, b))
        .collect();
    // The final block, and the leaves' shared events blocks
    // (`leaf_events.rs`), are copied into the stages that reach them,
    // never laid out on their own (see `stages::assemble_stage`): they
    // take no room in the split, every stage keeps room for a copy of
    // each.
    let mut final_slots = 0;
    for b in (0..gen.blocks.len()).filter(|&b| gen.copied_in_reserve(b)) {
        final_slots += std::mem::take(&mut sizes[b].slots);
        sizes[b].jumps = 0;
    }
    let copied = stages::copied_blocks(&sizes, &opts.budget, gen.copied_blocks(), |b| {
        matches!(gen.blocks[b], Block::Node(..))
    });
    let flow = stages::Flow::new(&sizes, copied);
    let mut budget = opts.budget;
    let hard_slots = if opts.long_jumps {
        stages::HARD_SLOTS_LONG
    } else {
        stages::HARD_SLOTS
    };
    let most = (opts.budget.max_slots * 5 / 4).min(hard_slots);
    let mut tries = 0;
    let (stage_of, staged) = loop {
        let stage_of = match stages::split(&sizes, &flow, &budget, final_slots) {
            Ok(s) => s,
            Err(b) => {
                return Err(vec![Limit::BlockTooLarge {
                    block: gen.block_name(b),
                    slots: sizes[b].slots,
                    jumps: sizes[b].jumps,
                }])
            }
        };
        if tries > 0 {
            listing.restart();
        }
        tries += 1;
        let n = stage_of.iter().max().map_or(1, |m| m + 1);
        if n > MAX_STAGES {
            break (stage_of, None);
        }
        let entries = stages::entries(&flow, &stage_of);
        assert!(
            entries.first().is_none_or(BTreeSet::is_empty),
            "internal compiler error: the entry program is a tail-call target"
        );
        // The split fails on the first stage that does not assemble, or
        // comes out over `most`; the last try (below 64 slots) reports
        // the first stage that does not assemble, else `NoSplit`.
        let last = budget.max_slots < 64;
        let mut staged = Vec::with_capacity(n);
        let mut failed: Option<Limit> = None;
        let mut over = false;
        for k in 0..n {
            match stages::assemble_stage(gen, &flow, &stage_of, &entries, opts.long_jumps, k) {
                Ok(mut s) if s.code.len() <= most && !over => {
                    listing.stage(k, &mut s);
                    // Each slot's origin (10 MB at 100,000 one-peer
                    // rules) is in the listing now, and the object has
                    // no use for it.
                    s.code.origins = Vec::new();
                    staged.push(s);
                }
                Ok(_) => {
                    over = true;
                    if !last {
                        break;
                    }
                }
                Err(l) => {
                    failed = Some(l);
                    break;
                }
            }
        }
        if !over && failed.is_none() {
            break (stage_of, Some(staged));
        }
        if last {
            return Err(vec![failed.unwrap_or(Limit::StageTooLarge {
                stage: 0,
                overflow: StageOverflow::NoSplit,
            })]);
        }
        budget.max_slots = budget.max_slots * 4 / 5;
    };
    let calls = stages::tail_calls(&flow, &stage_of);
    Ok(Split {
        stage_of,
        staged,
        calls,
    })
}
