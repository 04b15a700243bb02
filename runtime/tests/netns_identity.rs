//! A network namespace is named by what it is (its nsfs inode), not by
//! how it was entered: the state directory and eBPF instance of the
//! caller's namespace, computed inside a named namespace (as under `ip
//! netns exec NAME weir …`), are those of `--netns NAME`; the host's
//! differ.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

use weir_runtime::ebpf::Instance;
use weir_runtime::iptables::Options;
use weir_runtime::netns::Netns;

#[test]
fn entering_a_namespace_and_naming_it_find_the_same_state() {
    if !weir_runtime::kernel_test::may_run(
        "entering_a_namespace_and_naming_it_find_the_same_state",
        &["ip"],
    ) {
        return;
    }
    let name = format!("weir-t{}-identity", std::process::id());
    let ns = Netns::create(&name).expect("netns");
    let inside = ns
        .run(|| {
            (
                Options::host().state_dir,
                Instance::new("eth0", None).name(),
            )
        })
        .unwrap();
    let named = (
        Options::netns(ns.name()).state_dir,
        Instance::new("eth0", Some(ns.name())).name(),
    );
    assert_eq!(inside, named);
    assert_ne!(Options::host().state_dir, named.0, "the host's is another");
    assert!(named.1.starts_with("netns-"), "{}", named.1);
}
