//! The human and Markdown forms of a diff.

use super::Program;
use std::fmt::Write;
use weir_compiler::diff::compare::Decision;
use weir_compiler::diff::services::{FrontendSide, ServiceChange};
use weir_compiler::diff::{Change, Diff};
use weir_compiler::interp::explain::proto_name;
use weir_compiler::interp::verdict_name;
use weir_compiler::model::Frontend;

fn ranges<T: PartialEq + std::fmt::Display + Copy>(rs: &[(T, T)]) -> String {
    let v: Vec<String> = rs
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    v.join(", ")
}

/// `tcp 5432`, `udp 53, 5353`, `tcp every port`, `icmp type 8 code 0`,
/// `other` (every protocol without a keyword in the row's family).
pub fn traffic(c: &Change) -> String {
    let p = c.proto.name();
    if c.proto.has_ports() {
        if c.ports == [(0, u16::MAX)] {
            format!("{p} every port")
        } else {
            format!("{p} {}", ranges(&c.ports))
        }
    } else if !c.proto.is_icmp() {
        p.to_string()
    } else {
        let mut s = p.to_string();
        if c.icmp_types != [(0, u8::MAX)] {
            let _ = write!(s, " type {}", ranges(&c.icmp_types));
        }
        if c.icmp_codes != [(0, u8::MAX)] {
            let _ = write!(s, " code {}", ranges(&c.icmp_codes));
        }
        s
    }
}

fn backend_text(b: &Option<weir_compiler::model::Backend>) -> String {
    match b {
        None => "not translated".into(),
        Some(b) => {
            let who = b.endpoint.clone().unwrap_or_else(|| b.addr.to_string());
            format!("{who}:{}", b.port)
        }
    }
}

fn backend_list(bs: &std::collections::BTreeSet<&Option<weir_compiler::model::Backend>>) -> String {
    let v: Vec<String> = bs.iter().map(|b| backend_text(b)).collect();
    v.join(", ")
}

/// For connections sent to a frontend: the backends before and now. A
/// few combinations are listed; more are summarized by their backends
/// (the JSON form lists every combination).
pub fn via_text(c: &Change) -> Option<String> {
    if c.via.is_empty() {
        return None;
    }
    if c.via.iter().all(|v| v.old == v.new) {
        let bs: std::collections::BTreeSet<_> = c.via.iter().map(|v| &v.new).collect();
        return Some(format!("backend {}", backend_list(&bs)));
    }
    if c.via.len() <= 2 {
        let v: Vec<String> = c
            .via
            .iter()
            .map(|v| {
                format!(
                    "backend {} before, {} now",
                    backend_text(&v.old),
                    backend_text(&v.new)
                )
            })
            .collect();
        return Some(v.join("; "));
    }
    let olds: std::collections::BTreeSet<_> = c.via.iter().map(|v| &v.old).collect();
    let news: std::collections::BTreeSet<_> = c.via.iter().map(|v| &v.new).collect();
    let which = if c.via.len() == olds.len() * news.len() {
        "every combination".to_string()
    } else {
        format!("{} of the combinations", c.via.len())
    };
    Some(format!(
        "backends {} before, {} now ({which})",
        backend_list(&olds),
        backend_list(&news)
    ))
}

pub fn change_word(c: &Change) -> &'static str {
    if c.allows_more() {
        "now allowed"
    } else {
        "now denied"
    }
}

/// `deny  db-ingress ingress rule #3` plus where, when written.
fn decision_lines(d: &Decision, p: &Program, out: &mut String, indent: &str) {
    let _ = writeln!(
        out,
        "{:<6}{}",
        verdict_name(d.verdict()),
        d.by.describe(&p.checked.model)
    );
    if let Some(l) = d.by.span(&p.checked.model).and_then(|s| p.locate(s)) {
        let _ = writeln!(out, "{indent}--> {}", l.at);
        let _ = writeln!(out, "{indent}    {}", l.line.trim());
    }
}

fn frontend_text(f: &Frontend) -> String {
    let a = match f.addr {
        std::net::IpAddr::V4(a) => format!("{a}:{}", f.port),
        std::net::IpAddr::V6(a) => format!("[{a}]:{}", f.port),
    };
    format!("{a}/{}", proto_name(f.proto))
}

fn side_text(s: &Option<FrontendSide>) -> String {
    match s {
        None => "no such frontend".into(),
        Some(s) => {
            let bs: Vec<String> = s
                .backends
                .iter()
                .map(|b| {
                    let who = b.endpoint.clone().unwrap_or_else(|| b.addr.to_string());
                    format!("{who}:{}", b.port)
                })
                .collect();
            let balance = if s.maglev { "maglev" } else { "random" };
            if bs.is_empty() {
                format!("service {} ({balance}), no backends", s.service)
            } else {
                format!("service {} ({balance}) → {}", s.service, bs.join(", "))
            }
        }
    }
}

fn counts(d: &Diff) -> (usize, usize) {
    let more = d.changes.iter().filter(|c| c.allows_more()).count();
    (more, d.changes.len() - more)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The summary line shared by both forms.
fn summary(d: &Diff) -> String {
    let (more, less) = counts(d);
    if d.changes.is_empty() && d.services.is_empty() {
        return "no connectivity change".into();
    }
    format!(
        "{} ({more} now allowed, {less} now denied), {}",
        plural(d.changes.len(), "changed connection", "changed connections"),
        plural(d.services.len(), "service change", "service changes")
    )
}

/// `weir diff` for a terminal.
pub fn human(d: &Diff, old: &Program, new: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "weir diff {} → {}: {}",
        old.label,
        new.label,
        summary(d)
    );
    for c in &d.changes {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}  {}", change_word(c), traffic(c));
        let _ = writeln!(out, "  from  {}", d.names(&c.src));
        let _ = writeln!(out, "  to    {}", d.names(&c.dst));
        if let Some(v) = via_text(c) {
            let _ = writeln!(out, "  via   {v}");
        }
        let _ = write!(out, "  old   ");
        decision_lines(&c.old, old, &mut out, "        ");
        let _ = write!(out, "  new   ");
        decision_lines(&c.new, new, &mut out, "        ");
    }
    for s in &d.services {
        let _ = writeln!(out);
        let _ = writeln!(out, "service frontend {}", frontend_text(&s.frontend));
        let _ = writeln!(out, "  old   {}", side_text(&s.old));
        let _ = writeln!(out, "  new   {}", side_text(&s.new));
    }
    out
}

/// Rows shown in a Markdown comment (GitHub limits a comment to 65,536
/// characters); the rest are counted.
const MARKDOWN_ROWS: usize = 100;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn decision_cell(d: &Decision, p: &Program) -> String {
    let mut s = format!(
        "**{}** {}",
        verdict_name(d.verdict()),
        d.by.describe(&p.checked.model)
    );
    if let Some(l) = d.by.span(&p.checked.model).and_then(|sp| p.locate(sp)) {
        let _ = write!(s, " (`{}`)", l.at);
    }
    cell(&s)
}

/// `weir diff --format markdown`: a pull-request comment.
pub fn markdown(d: &Diff, old: &Program, new: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### weir diff: {}", summary(d));
    let _ = writeln!(out);
    let _ = writeln!(out, "`{}` → `{}`", old.label, new.label);
    if !d.changes.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "| change | from | to | traffic | old | new |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for c in d.changes.iter().take(MARKDOWN_ROWS) {
            let word = if c.allows_more() {
                "⚠️ now allowed"
            } else {
                "now denied"
            };
            let _ = writeln!(
                out,
                "| {word} | {} | {} | {} | {} | {} |",
                cell(&d.names(&c.src)),
                cell(&d.names(&c.dst)),
                cell(&match via_text(c) {
                    Some(v) => format!("{} via {v}", traffic(c)),
                    None => traffic(c),
                }),
                decision_cell(&c.old, old),
                decision_cell(&c.new, new),
            );
        }
        if d.changes.len() > MARKDOWN_ROWS {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "… and {} more (run `weir diff` for the whole list).",
                d.changes.len() - MARKDOWN_ROWS
            );
        }
    }
    if !d.services.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "| service frontend | old | new |");
        let _ = writeln!(out, "|---|---|---|");
        for s in &d.services {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell(&frontend_text(&s.frontend)),
                cell(&side_text(&s.old)),
                cell(&side_text(&s.new))
            );
        }
    }
    out
}

/// For SARIF and JSON: one line describing a row.
pub fn row_message(d: &Diff, c: &Change, old: &Program, new: &Program) -> String {
    format!(
        "{} {} from {} to {}: {} by {} (was {} by {})",
        change_word(c),
        traffic(c),
        d.names(&c.src),
        d.names(&c.dst),
        verdict_name(c.new.verdict()),
        c.new.by.describe(&new.checked.model),
        verdict_name(c.old.verdict()),
        c.old.by.describe(&old.checked.model)
    )
}

pub fn service_message(s: &ServiceChange) -> String {
    format!(
        "service frontend {}: {} (was {})",
        frontend_text(&s.frontend),
        side_text(&s.new),
        side_text(&s.old)
    )
}
