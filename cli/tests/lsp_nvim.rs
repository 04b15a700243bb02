//! A real, unmodified LSP client against `weir lsp`: headless Neovim
//! (Debian's 0.7.2 in CI) with docs/editors.md's 0.7–0.9 setup as its
//! `init.lua`, running `nvim/session.lua`, which writes what the editor
//! saw as JSON. Judged here against the LSP specification's meaning, not
//! against our own snapshots.
//!
//! Without `nvim` on `PATH` the test is skipped, but under `CI=true` it
//! fails (scripts/test installs the `neovim` package). Neovim is killed
//! if it has not finished after two minutes, so a hang cannot stall CI.

mod lsp_common;

use lsp_common::{doc_snippet, have, path_with_weir, project, run_bounded, stdlib, MAIN};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs the session in `ws`; returns what session.lua wrote.
fn run_session(ws: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nvim/session.lua");
    let out = ws.join("result.json");
    let home = ws.join(".home");
    std::fs::create_dir_all(&home).unwrap();
    let init = home.join("init.lua");
    std::fs::write(&init, doc_snippet("### Neovim 0.7 to 0.9", "lua")).unwrap();
    let run = run_bounded(
        Command::new("nvim")
            .current_dir(ws)
            .args(["--headless", "-i", "NONE", "-u"])
            .arg(&init)
            .arg("main.weir")
            .arg("-c")
            .arg(format!("luafile {}", script.display()))
            .env("PATH", path_with_weir())
            .env("WEIR_STDLIB", stdlib())
            .env("WEIR_NVIM_OUT", &out)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_CACHE_HOME", home.join("cache")),
    );
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
        let lsp_log = std::fs::read_to_string(home.join("cache/nvim/lsp.log")).unwrap_or_default();
        panic!(
            "session.lua wrote no result ({e}); nvim said:\n{}\nlsp.log:\n{lsp_log}",
            String::from_utf8_lossy(&run.stderr)
        )
    });
    serde_json::from_str(&text).expect("session.lua writes JSON")
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn neovim_session() {
    if !have("nvim") {
        assert!(
            std::env::var("CI").is_err(),
            "nvim is not installed (CI=true: this is a failure; scripts/test installs neovim)"
        );
        eprintln!("lsp_nvim: nvim not found, skipped");
        return;
    }
    let ws = project("lsp-nvim");
    let r = run_session(&ws);
    let _ = std::fs::remove_dir_all(&ws);
    assert_eq!(r.get("error"), None, "session.lua failed: {r:#}");
    assert_eq!(
        strings(&r["steps"]),
        [
            "initialized",
            "diagnostics",
            "code actions",
            "fix",
            "hover",
            "navigation",
            "completion",
            "formatting",
            "port names"
        ],
        "every step of the session ran"
    );

    // What the client parsed from `initialize` (ServerCapabilities).
    let caps = &r["capabilities"];
    for cap in [
        "hoverProvider",
        "definitionProvider",
        "referencesProvider",
        "documentFormattingProvider",
        "codeActionProvider",
        "documentSymbolProvider",
    ] {
        assert_eq!(caps[cap], true, "{cap} as the client reads it: {caps:#}");
    }
    assert!(caps["completionProvider"].is_object(), "{caps:#}");
    assert_eq!(caps["textDocumentSync"]["change"], 2, "{caps:#}");
    assert_eq!(caps["textDocumentSync"]["openClose"], true, "{caps:#}");

    // The broken name is reported where it is, with its code.
    assert_eq!(r["diagnostics_appeared"], true, "{r:#}");
    let diags = r["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0]["code"], "E0201", "{diags:#?}");
    assert_eq!(diags[0]["source"], "weir");
    assert_eq!(diags[0]["severity"], 1, "an error");
    assert_eq!(diags[0]["lnum"], 7, "the rule's line");
    assert_eq!(diags[0]["col"], 24, "at `webb`");

    // The quick fix repairs it and the diagnostic goes away.
    assert_eq!(strings(&r["code_actions"]), ["Replace with `web`"], "{r:#}");
    assert_eq!(r["fixed_line"], "    allow tcp 8080 from web");
    assert_eq!(r["diagnostics_cleared"], true, "{r:#}");

    let hover = r["hover"].as_str().expect("hover markdown");
    assert!(
        hover.contains("`web-1`") && hover.contains("`web-2`") && !hover.contains("`api-1`"),
        "hover names the selector's endpoints: {hover}"
    );

    let uri = |name: &str| format!("file://{}", ws.join(name).display());
    // Definition: a Location (or a one-element array) in lib.weir.
    let def = &r["definition"];
    let def = if def.is_array() { &def[0] } else { def };
    assert_eq!(def["uri"], uri("lib.weir"), "{def:#}");
    assert_eq!(def["range"]["start"]["line"], 1, "{def:#}");
    assert_eq!(def["range"]["start"]["character"], 9, "{def:#}");

    let mut refs: Vec<(String, u64)> = r["references"]
        .as_array()
        .expect("Location[]")
        .iter()
        .map(|l| {
            (
                l["uri"].as_str().unwrap().to_string(),
                l["range"]["start"]["line"].as_u64().unwrap(),
            )
        })
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        vec![
            (uri("lib.weir"), 1),
            (uri("main.weir"), 7),
            (uri("other.weir"), 3),
            (uri("other.weir"), 5),
        ],
        "the declaration, the open file's use and the unopened file's two"
    );

    let values = strings(&r["completion_values"]);
    assert_eq!(values, ["\"api\"", "\"web\""], "values of `app`");
    let peers = strings(&r["completion_peers"]);
    for want in ["web", "api", "app", "any", "self", "world"] {
        assert!(
            peers.contains(&want),
            "{want} missing after `from `: {peers:?}"
        );
    }
    for unwanted in ["import", "frontend", "policy", "api-in", "web-1"] {
        assert!(
            !peers.contains(&unwanted),
            "{unwanted} offered after `from `: {peers:?}"
        );
    }

    assert_eq!(weir_compiler::fmt::format(MAIN).unwrap(), MAIN);
    assert_eq!(
        r["formatted"], MAIN,
        "formatting restores the canonical layout"
    );

    // Port names: a tcp rule is offered the tcp names only; a service's
    // named target port every declared name.
    assert_eq!(strings(&r["completion_rule_ports"]), ["\"http\""], "{r:#}");
    assert_eq!(
        strings(&r["completion_backend_ports"]),
        ["\"dns\"", "\"http\""],
        "{r:#}"
    );
}
