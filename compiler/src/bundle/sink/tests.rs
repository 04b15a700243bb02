use super::*;
use crate::contract::sha256_hex;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-sink-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Writes of every size around the buffer's, mixed.
fn produce(sink: &Sink, name: &str) -> Vec<u8> {
    let mut f = sink.file(name).unwrap();
    let mut all = Vec::new();
    for (i, n) in [1, BUFFER - 1, 3, BUFFER, 0, 2 * BUFFER + 5, 7, 100]
        .into_iter()
        .enumerate()
    {
        let chunk: Vec<u8> = (0..n).map(|k| (k * 31 + i) as u8).collect();
        f.write_all(&chunk).unwrap();
        all.extend_from_slice(&chunk);
    }
    let w = f.finish().unwrap();
    assert_eq!(w.len, all.len() as u64);
    assert_eq!(w.sha256, sha256_hex(&all));
    all
}

#[test]
fn memory_and_directory_sinks_write_the_same_bytes() {
    let mem = Sink::memory();
    let want = produce(&mem, crate::contract::WEIR_ASM);
    mem.write(MANIFEST, b"{}\n").unwrap();
    let artifacts = mem.artifacts();
    assert_eq!(
        artifacts.keys().collect::<Vec<_>>(),
        [crate::contract::WEIR_ASM]
    );
    let files = mem.into_files();
    assert_eq!(files[crate::contract::WEIR_ASM], want);

    let dir = scratch("same");
    let mut disk = Sink::dir(&dir).unwrap();
    produce(&disk, crate::contract::WEIR_ASM);
    disk.write(MANIFEST, b"{}\n").unwrap();
    assert_eq!(disk.artifacts(), artifacts);
    assert_eq!(disk.read(crate::contract::WEIR_ASM).unwrap().unwrap(), want);
    disk.commit().unwrap();
    assert_eq!(
        std::fs::read(dir.join(crate::contract::WEIR_ASM)).unwrap(),
        want
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "no staging directory is left: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sink_never_committed_leaves_the_old_bundle_as_it_was() {
    let dir = scratch("keep");
    let mut old = Sink::dir(&dir).unwrap();
    old.write(crate::contract::IPTABLES_RULES, b"old rules\n")
        .unwrap();
    old.write(MANIFEST, b"{\"old\":1}\n").unwrap();
    old.commit().unwrap();
    {
        // A compile that writes some files and then fails.
        let new = Sink::dir(&dir).unwrap();
        new.write(crate::contract::IPTABLES_RULES, b"new rules\n")
            .unwrap();
        let _unfinished = new.file(crate::contract::WEIR_ASM).unwrap();
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [crate::contract::IPTABLES_RULES, MANIFEST]);
    assert_eq!(
        std::fs::read(dir.join(crate::contract::IPTABLES_RULES)).unwrap(),
        b"old rules\n"
    );
    assert_eq!(std::fs::read(dir.join(MANIFEST)).unwrap(), b"{\"old\":1}\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_commit_replaces_the_bundle_and_removes_only_stale_artifacts() {
    let dir = scratch("replace");
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        crate::contract::WEIR_O,
        crate::contract::IPSET_RULES,
        "notes.txt",
    ] {
        std::fs::write(dir.join(name), b"old").unwrap();
    }
    let mut s = Sink::dir(&dir).unwrap();
    s.write(crate::contract::WEIR_O, b"new object").unwrap();
    s.write(MANIFEST, b"{}\n").unwrap();
    // Finished files are in the staging directory, not yet in `dir`.
    assert_eq!(
        std::fs::read(dir.join(crate::contract::WEIR_O)).unwrap(),
        b"old"
    );
    s.commit().unwrap();
    assert_eq!(
        std::fs::read(dir.join(crate::contract::WEIR_O)).unwrap(),
        b"new object"
    );
    assert!(!dir.join(crate::contract::IPSET_RULES).exists());
    assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
    drop(s);
    assert!(
        dir.join(MANIFEST).exists(),
        "a committed sink's drop keeps it"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_compile_removes_the_directories_it_created() {
    let top = scratch("created");
    let dir = top.join("a").join("b");
    std::fs::create_dir_all(&top).unwrap();
    {
        let s = Sink::dir(&dir).unwrap();
        s.write(MANIFEST, b"{}\n").unwrap();
        assert!(dir.is_dir());
    }
    assert!(!top.join("a").exists());
    assert!(top.exists(), "it existed before");
    std::fs::remove_dir_all(&top).unwrap();
}

#[test]
fn a_part_is_appended_and_never_a_file_of_the_bundle() {
    let dir = scratch("part");
    let mut sinks = [Sink::memory(), Sink::dir(&dir).unwrap()];
    let mut outs = Vec::new();
    for sink in &mut sinks {
        let mut p = sink.part("head.part").unwrap();
        p.write_all(b"{\"a\":1}").unwrap();
        p.finish().unwrap();
        assert!(sink.written().is_empty());
        assert!(sink.artifacts().is_empty());
        let mut f = sink.file(MANIFEST).unwrap();
        f.write_all(b"{\"z\":0,").unwrap();
        sink.append_part("head.part", 1, &mut f).unwrap();
        f.finish().unwrap();
        assert!(sink
            .append_part("head.part", 1, &mut sink.file("x").unwrap())
            .is_err());
        outs.push(sink.read(MANIFEST).unwrap().unwrap());
        sink.commit().unwrap();
    }
    assert_eq!(outs[0], b"{\"z\":0,\"a\":1}");
    assert_eq!(outs[0], outs[1]);
    let [mem, _disk] = sinks;
    assert_eq!(mem.into_files().keys().collect::<Vec<_>>(), [MANIFEST]);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [MANIFEST]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A staging directory of a process that no longer runs (a compile killed
/// before its commit) is removed by the next directory sink; one of a
/// running process (pid 1 always runs) is left alone.
#[test]
fn a_dead_compiles_staging_directory_is_removed() {
    let dir = scratch("dead-staging");
    // Above the kernel's largest pid_max (2^22): no process has it.
    let dead = dir.join(".weir-staging-999999999");
    let live = dir.join(".weir-staging-1");
    for d in [&dead, &live] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("weir.o"), b"half").unwrap();
    }
    let sink = Sink::dir(&dir).unwrap();
    assert!(!dead.exists(), "a dead compile's staging directory stays");
    assert!(
        live.exists(),
        "a running process's staging directory was removed"
    );
    drop(sink);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A restarted file holds only what was written after the restart, and
/// its length and hash are those bytes' (the eBPF listing of a stage
/// split redone tighter), in memory and on disk, past the buffer's size.
#[test]
fn a_restarted_file_keeps_only_what_follows() {
    let first: Vec<u8> = (0..BUFFER + 17).map(|k| (k * 7) as u8).collect();
    let then = b"; program weir_main\n".to_vec();
    let dir = scratch("restart");
    let disk = Sink::dir(&dir).unwrap();
    for sink in [&Sink::memory(), &disk] {
        let mut f = sink.file(crate::contract::WEIR_ASM).unwrap();
        f.write_all(&first).unwrap();
        f.write_all(b"tail").unwrap();
        f.restart().unwrap();
        f.write_all(&then).unwrap();
        let w = f.finish().unwrap();
        assert_eq!(w.len, then.len() as u64);
        assert_eq!(w.sha256, sha256_hex(&then));
        assert_eq!(sink.read(crate::contract::WEIR_ASM).unwrap().unwrap(), then);
    }
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}
