//! The entry chains of every generation: what the runtime's hook chains
//! jump to from the built-in chains. Their own module because both the
//! stages (`emit`) and the depth passes (`depth`, which must never inline
//! or split an entry) name them.

pub const RAW_PRE: &str = "WEIR-RAW-PRE";
pub const MANGLE_PRE: &str = "WEIR-MANGLE-PRE";
pub const NAT_PRE: &str = "WEIR-NAT-PRE";
pub const FWD: &str = "WEIR-FWD";
/// All of them.
pub const ENTRIES: [&str; 5] = [
    RAW_PRE,
    MANGLE_PRE,
    NAT_PRE,
    FWD,
    super::self_set::MANGLE_FWD,
];
