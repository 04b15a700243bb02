//! Endpoint churn at run time, computed purely: given a bundle's manifest,
//! the endpoints currently applied and a new inventory, which addresses
//! change class and which selector-backed services change backends. The
//! runtime (`weir endpoints`) only applies the result: LPM map entries or
//! ipset members, and service-map writes — never a recompile.
//!
//! Placement follows [`crate::graph::classes`] ("Endpoints that appear at
//! run time"): an address's signature is the set atoms that contain it,
//! the selector atoms its endpoint's labels match, and the endpoint atom
//! (`Sel::All`); its class is the compiled class with that signature.
//!
//! A signature no compiled class has is **refused** ("needs a
//! recompile"): adding a class at run time needs a row in every
//! class-keyed table of the program, and the bundle carries neither the
//! tables' atom decision lists nor a guarantee that inline class tables
//! send spare class ids to the right branch. The whole update is then
//! refused and the running state stays as it is.
//!
//! One concept per file: [`record`] (the endpoint, inventory in and
//! out), [`placement`] (class of an address), [`declared`] (source
//! endpoints an inventory cannot touch), [`plan`] (what an update
//! changes), [`backends`] (selector services' backends, by the
//! interpreter's rule), [`entries`] / [`scan`] / [`text_diff`] (the
//! recorded inventory text and the diff against a new one),
//! [`service_table`] / [`selcode`] (the recorded selector services),
//! [`namespace`] (a namespace relabel as one update), [`ns_tail`] (the
//! recorded `"namespaces"` section the text diff reads).

pub mod backends;
pub mod declared;
pub mod entries;
pub mod namespace;
pub mod ns_tail;
pub mod placement;
pub mod plan;
pub mod record;
pub mod scan;
pub mod selcode;
pub mod self_relation;
pub mod service_table;
pub mod text_diff;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ns;

pub use backends::*;
pub use declared::*;
pub use namespace::*;
pub use placement::*;
pub use plan::*;
pub use record::*;
pub use scan::scan_inventory;
pub use text_diff::*;
