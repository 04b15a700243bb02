//! Fault injection for the eBPF back end, as a user runs it: the real
//! `weir` binary is killed with SIGKILL at random points of `weir apply
//! --backend ebpf` (seeded, at least 20 kills that hit a running apply,
//! bounded), and after every kill `weir status` must tell the truth —
//! checked against `bpftool` (the program on the interface's TCX ingress
//! and the ids of our pinned programs), not against weir's own record —
//! with exactly one generation pinned and no intent left over; the next
//! apply and the final detach must succeed, and detach must leave nothing
//! behind. Also: two concurrent applies leave one complete generation;
//! `ip netns exec NS weir apply` is the same instance as `--netns NS` and
//! stays attached after the command exits; a pin directory pre-created by
//! another user is refused.
//!
//! Needs root, `ip` and `bpftool`; skipped without them unless `CI` is set
//! (then it fails).

#[path = "support/run.rs"]
mod run;
use run::{ok, s, show, weir};

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_compiler::ebpf::layout::MAIN_PROGRAM;
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};

const SRC_A: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }
policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    deny from any
  }
}
"#;

const SRC_B: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }
policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    allow tcp 8080 from app == "web"
    deny from any
  }
}
"#;

fn compile(work: &Path, dir: &Path, src: &str) {
    let file = work.join(format!(
        "{}.weir",
        dir.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&file, src).unwrap();
    ok(weir(&[
        "compile",
        s(&file),
        "--target",
        "ebpf",
        "-o",
        s(dir),
    ]));
}

/// One test's namespace, bundles and the instance's paths.
struct Fixture {
    topo: Topology,
    work: PathBuf,
    a: PathBuf,
    b: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let work =
            weir_runtime::kernel_test::state_dir(&format!("cli-ebpf-faults-{name}")).unwrap();
        let (a, b) = (work.join("a"), work.join("b"));
        compile(&work, &a, SRC_A);
        compile(&work, &b, SRC_B);
        Fixture {
            topo: Topology::new().expect("netns topology"),
            work,
            a,
            b,
        }
    }

    fn ns(&self) -> &str {
        self.topo.node.name()
    }

    fn target(&self) -> Vec<&str> {
        vec![
            "--backend",
            "ebpf",
            "--netns",
            self.ns(),
            "--iface",
            NODE_CLIENT_IF,
        ]
    }

    fn cmd(&self, verb: &str, bundle: Option<&Path>) -> Vec<String> {
        let mut a = vec![verb.to_string()];
        a.extend(bundle.map(|b| s(b).to_string()));
        a.extend(self.target().iter().map(|x| x.to_string()));
        a
    }

    fn run(&self, verb: &str, bundle: Option<&Path>) -> Output {
        let a = self.cmd(verb, bundle);
        weir(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The instance's name: the namespace by its inode (or, from a weir
    /// before that, by its name — so this test can be run against it).
    fn instance(&self) -> String {
        let ino = std::fs::metadata(format!("/run/netns/{}", self.ns()))
            .unwrap()
            .ino();
        let legacy = format!("netns-{}-{NODE_CLIENT_IF}", self.ns());
        if Path::new("/run/weir/ebpf").join(&legacy).exists() {
            return legacy;
        }
        format!("netns-{ino}-{NODE_CLIENT_IF}")
    }

    fn pin_dir(&self) -> PathBuf {
        Path::new("/sys/fs/bpf/weir").join(self.instance())
    }

    fn state_dir(&self) -> PathBuf {
        Path::new("/run/weir/ebpf").join(self.instance())
    }

    /// The program the pinned link runs, from bpftool (the kernel's
    /// link info); `None` without a pinned link.
    fn link_program(&self) -> Option<u64> {
        let path = self.pin_dir().join("link");
        if !path.exists() {
            return None;
        }
        let o = Command::new("bpftool")
            .args(["-j", "link", "show", "pinned"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "bpftool link show pinned: {}", show(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["prog_id"].as_u64()
    }

    /// Real traffic through the interface: `(web → db:5432 allowed,
    /// web → db:9999 allowed)`. Both policies allow the first and deny
    /// the second.
    fn traffic(&self) -> (bool, bool) {
        let (web, db) = ("10.1.0.10".parse().unwrap(), "10.2.0.20".parse().unwrap());
        let t = Duration::from_millis(400);
        (
            self.topo.tcp_connect(web, db, 5432, t),
            self.topo.tcp_connect(web, db, 9999, t),
        )
    }

    /// Generations pinned, from the file system.
    fn pinned_generations(&self) -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(self.pin_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("gen-")?.parse().ok())
            .collect();
        v.sort();
        v
    }

    /// The id of generation `g`'s entry program, from bpftool.
    fn pinned_entry(&self, g: u64) -> u64 {
        let path = self
            .pin_dir()
            .join(format!("gen-{g}"))
            .join(format!("prog_{MAIN_PROGRAM}"));
        let o = Command::new("bpftool")
            .args(["-j", "prog", "show", "pinned"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "bpftool prog show pinned: {}", show(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["id"].as_u64().unwrap()
    }

    /// `weir status` after whatever happened must agree with bpftool:
    /// either nothing is applied and nothing is attached, or generation G
    /// is recorded, reported attached, pinned alone, and its entry program
    /// is the one program on the interface. Returns G.
    fn check_truth(&self, when: &str) -> Option<u64> {
        let mut a = self.cmd("status", None);
        a.push("--json".into());
        let o = weir(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let link = self.link_program();
        // `--json` says "nothing applied" as `{"applied": false}`
        // (docs/schemas/status.json).
        let nothing = serde_json::from_str::<Value>(&out)
            .is_ok_and(|v| v == serde_json::json!({ "applied": false }));
        if nothing {
            assert_eq!(o.status.code(), Some(0), "{when}: {}", show(&o));
            assert_eq!(link, None, "{when}: status says nothing applied");
            assert!(self.pinned_generations().is_empty(), "{when}: pins left");
            assert_eq!(self.traffic(), (true, true), "{when}: nothing applied");
            return None;
        }
        assert_eq!(o.status.code(), Some(0), "{when}: {}", show(&o));
        let st: Value = serde_json::from_str(&out).unwrap();
        let g = st["generation"].as_u64().unwrap();
        assert_eq!(st["attached"], true, "{when}: {st}");
        assert_eq!(
            self.pinned_generations(),
            vec![g],
            "{when}: one generation pinned"
        );
        assert_eq!(
            link,
            Some(self.pinned_entry(g)),
            "{when}: bpftool vs generation {g}"
        );
        assert_eq!(
            st["in_force"][0]["program_id"].as_u64(),
            link,
            "{when}: status's read-back"
        );
        assert_eq!(self.traffic(), (true, false), "{when}: the policy in force");
        assert!(
            !self.state_dir().join("pending.json").exists(),
            "{when}: an intent left over"
        );
        Some(g)
    }

    /// Detach, then nothing of ours is left: no program, pins, state.
    fn detach_leaves_nothing(&self) {
        ok(self.run("detach", None));
        assert_eq!(self.traffic(), (true, true), "after detach");
        assert!(!self.pin_dir().exists(), "{}", self.pin_dir().display());
        assert!(!self.state_dir().exists(), "{}", self.state_dir().display());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.run("detach", None);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// xorshift64*: a seeded, reproducible sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn may_run(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(test, &["ip", "bpftool"])
}

#[test]
fn ebpf_apply_killed_at_random_points_recovers() {
    if !may_run("ebpf_apply_killed_at_random_points_recovers") {
        return;
    }
    let f = Fixture::new("kill");
    let seed = std::env::var("WEIR_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005e_ed0f_ebf0_u64);
    eprintln!("seed {seed} (WEIR_FAULT_SEED)");
    let mut rng = Rng(seed);
    // How long one apply takes here: kill points are spread over it. The
    // first apply is only a first guess (on a loaded machine it can take
    // several times what the later ones take): an apply that finished
    // before its kill point shrinks the span, one that was killed widens
    // it a little, so about 85 % of the kill points land inside an apply
    // and they still reach its end.
    let t0 = Instant::now();
    ok(f.run("apply", Some(&f.a)));
    let mut span = t0.elapsed().as_micros() as u64 * 11 / 10;
    f.check_truth("after the first apply");

    let (mut kills, mut attempts) = (0, 0);
    while kills < 24 {
        attempts += 1;
        assert!(
            attempts <= 120,
            "only {kills} kills hit a running apply in 120 tries"
        );
        let bundle = if attempts % 2 == 0 { &f.a } else { &f.b };
        let a = f.cmd("apply", Some(bundle));
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(&a)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.next() % span.max(1)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
            span = span * 21 / 20;
        } else {
            span = (span * 3 / 4).max(1_000);
        }
        child.wait().unwrap();
        f.check_truth(&format!("after kill {kills} (attempt {attempts})"));
    }
    eprintln!("{kills} kills in {attempts} attempts");
    // The next apply recovers and succeeds; then detach cleans up.
    ok(f.run("apply", Some(&f.b)));
    assert!(f.check_truth("after the final apply").is_some());
    f.detach_leaves_nothing();
}

#[test]
fn ebpf_apply_crashed_at_each_step_is_finished_or_rolled_back() {
    if !may_run("ebpf_apply_crashed_at_each_step_is_finished_or_rolled_back") {
        return;
    }
    let f = Fixture::new("steps");
    ok(f.run("apply", Some(&f.a)));
    // Crash before the switch: the generation in force stays; after it:
    // the new one is finished.
    let mut before = 1;
    for (point, switched) in [
        ("pending", false),
        ("pinned", false),
        ("switched", true),
        ("recorded", true),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(f.cmd("apply", Some(&f.b)))
            .env("WEIR_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), None, "{point}: killed: {}", show(&o));
        // The crashed apply armed the shared conntrack collector with its
        // own program before the switch (bpftool's id of its pin).
        let armed = (point == "pinned").then(|| {
            let pin = f
                .pin_dir()
                .join(format!("gen-{}", before + 1))
                .join("prog_weir_gc_arm");
            let o = Command::new("bpftool")
                .args(["-j", "prog", "show", "pinned"])
                .arg(&pin)
                .output()
                .unwrap();
            let v: Value = serde_json::from_slice(&o.stdout)
                .unwrap_or_else(|_| panic!("{point}: {} pinned: {}", pin.display(), show(&o)));
            v["id"].as_u64().unwrap()
        });
        // The record is behind the kernel (or ahead of it) right now;
        // status finishes or rolls back, then tells the truth.
        let g = f.check_truth(&format!("crash at {point}")).unwrap();
        assert_eq!(g, before + u64::from(switched), "crash at {point}");
        // Rolled back: the collector is armed by the generation in force
        // again, so nothing holds the crashed one's program any more.
        if let Some(id) = armed {
            // (The kernel frees a released program after an RCU grace
            // period: polled.)
            let alive = || {
                Command::new("bpftool")
                    .args(["prog", "show", "id", &id.to_string()])
                    .output()
                    .unwrap()
                    .status
                    .success()
            };
            let start = Instant::now();
            while alive() && start.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(
                !alive(),
                "crash at {point}: the rolled-back collector program {id} is still alive"
            );
        }
        ok(f.run("apply", Some(&f.a)));
        before = f.check_truth(&format!("apply after {point}")).unwrap();
    }
    f.detach_leaves_nothing();
}

#[test]
fn two_concurrent_ebpf_applies_leave_one_complete_generation() {
    if !may_run("two_concurrent_ebpf_applies_leave_one_complete_generation") {
        return;
    }
    let f = Fixture::new("concurrent");
    for round in 0..3 {
        let spawn = |b: &Path| {
            Command::new(env!("CARGO_BIN_EXE_weir"))
                .args(f.cmd("apply", Some(b)))
                .output()
        };
        let (oa, ob) = std::thread::scope(|sc| {
            let ha = sc.spawn(|| spawn(&f.a).unwrap());
            let hb = sc.spawn(|| spawn(&f.b).unwrap());
            (ha.join().unwrap(), hb.join().unwrap())
        });
        ok(oa);
        ok(ob);
        let g = f.check_truth(&format!("round {round}")).unwrap();
        assert_eq!(g, 2 * (round + 1), "each apply its own generation");
    }
    f.detach_leaves_nothing();
}

#[test]
fn ip_netns_exec_and_netns_are_one_instance() {
    if !may_run("ip_netns_exec_and_netns_are_one_instance") {
        return;
    }
    let f = Fixture::new("exec");
    let o = Command::new("ip")
        .args(["netns", "exec", f.ns(), env!("CARGO_BIN_EXE_weir"), "apply"])
        .arg(&f.a)
        .args(["--backend", "ebpf", "--iface", NODE_CLIENT_IF])
        .output()
        .unwrap();
    ok(o);
    // Still attached after the command (and its mount namespace) ended,
    // and `--netns` sees the same instance.
    assert_eq!(f.check_truth("after ip netns exec apply"), Some(1));
    ok(f.run("apply", Some(&f.b)));
    assert_eq!(f.check_truth("after --netns apply"), Some(2));
    // The host's instance of that interface name knows nothing of it.
    let o = weir(&["status", "--backend", "ebpf", "--iface", NODE_CLIENT_IF]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "nothing applied");
    f.detach_leaves_nothing();
}

#[test]
fn a_pin_directory_prepared_by_another_user_is_refused() {
    if !may_run("a_pin_directory_prepared_by_another_user_is_refused") {
        return;
    }
    let f = Fixture::new("pins");
    let dir = f.pin_dir();
    // Pin directories are named by the namespace's inode, which the
    // kernel reuses: a directory another test's namespace left behind may
    // already be there. Start from an empty one.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let o = f.run("apply", Some(&f.a));
    assert_ne!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("owned by uid 65534"),
        "{}",
        show(&o)
    );
    assert_eq!(f.traffic(), (true, true), "nothing attached");
    // Empty: weir wrote nothing into a directory it refused.
    std::fs::remove_dir(&dir).unwrap();
    // The bpffs root weir mounts or uses is not writable by others.
    ok(f.run("apply", Some(&f.a)));
    let root = std::fs::metadata("/sys/fs/bpf/weir").unwrap();
    assert_eq!(root.uid(), 0);
    assert_eq!(root.mode() & 0o022, 0, "mode {:o}", root.mode());
    let m = std::fs::metadata(f.pin_dir()).unwrap();
    assert_eq!(m.mode() & 0o777, 0o700);
    let st = std::fs::metadata(f.state_dir().join("state.json")).unwrap();
    assert_eq!(st.mode() & 0o777, 0o600);
    f.detach_leaves_nothing();
}

#[test]
fn an_interface_recreated_under_a_pinned_link_is_attached_again() {
    if !may_run("an_interface_recreated_under_a_pinned_link_is_attached_again") {
        return;
    }
    let f = Fixture::new("defunct");
    let ip = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().unwrap();
        assert!(o.status.success(), "ip {args:?}: {}", show(&o));
    };
    // A namespace of our own whose interface we can delete.
    let ns = format!("weir-t{}-defunct", std::process::id());
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    ip(&["netns", "add", &ns]);
    let veth = |ip: &dyn Fn(&[&str])| {
        ip(&[
            "-n", &ns, "link", "add", "wa", "type", "veth", "peer", "name", "wb",
        ]);
        ip(&["-n", &ns, "link", "set", "wa", "up"]);
    };
    veth(&ip);
    let target = ["--backend", "ebpf", "--netns", &ns, "--iface", "wa"];
    let run = |verb: &str, bundle: Option<&Path>| {
        let mut a = vec![verb];
        a.extend(bundle.map(s));
        a.extend(target);
        weir(&a)
    };
    ok(run("apply", Some(&f.a)));
    // The interface goes and comes back: the pinned link is defunct.
    ip(&["-n", &ns, "link", "del", "wa"]);
    veth(&ip);
    let o = run("status", None);
    assert_eq!(o.status.code(), Some(1), "not attached: {}", show(&o));
    ok(run("apply", Some(&f.b)));
    let o = run("status", None);
    assert_eq!(o.status.code(), Some(0), "attached again: {}", show(&o));
    ok(run("detach", None));
    ip(&["netns", "del", &ns]);
}

#[test]
fn a_failed_ebpf_apply_leaves_nothing_of_itself() {
    if !may_run("a_failed_ebpf_apply_leaves_nothing_of_itself") {
        return;
    }
    let f = Fixture::new("failed");
    let broken = f.work.join("broken");
    compile(&f.work, &broken, SRC_B);
    std::fs::write(broken.join("weir.o"), b"not an object").unwrap();
    // A failed first apply: the node as before.
    let o = f.run("apply", Some(&broken));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(!f.pin_dir().exists(), "pins of a failed first apply");
    assert!(!f.state_dir().exists(), "state of a failed first apply");
    assert_eq!(f.check_truth("after a failed first apply"), None);
    // A failed later apply: the generation in force alone.
    ok(f.run("apply", Some(&f.a)));
    let o = f.run("apply", Some(&broken));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert_eq!(f.check_truth("after a failed apply"), Some(1));
    f.detach_leaves_nothing();
}
