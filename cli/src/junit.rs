//! `weir test --format junit`: the JUnit XML that CI systems (GitLab,
//! Jenkins, GitHub test reporters) read. One `<testsuite>` per program,
//! one `<testcase>` per `expect` line (named after its test and the
//! packet, with the `expect` line's location as `file`), a failure with
//! the interpreter's explanation; a program-wide error or a snapshot
//! difference is one more failed test case of its program.

use crate::test::{ProgramResult, TestRun};

/// Text safe in XML attributes and content.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot hold at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

pub fn render(run: &TestRun) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = run.programs.iter().map(|p| cases(p).len()).sum();
    out.push_str(&format!(
        "<testsuites name=\"weir test\" tests=\"{total}\" failures=\"{}\">\n",
        run.failed
    ));
    for p in &run.programs {
        suite(&mut out, p);
    }
    out.push_str("</testsuites>\n");
    out
}

/// A failure's message and text.
type Failure = Option<(String, String)>;

/// (name, file, failure) per test case.
fn cases(p: &ProgramResult) -> Vec<(String, String, Failure)> {
    let mut v = Vec::new();
    if let Some(e) = &p.error {
        v.push((
            "program".to_string(),
            p.file.clone(),
            Some((e.clone(), String::new())),
        ));
    }
    if !p.snapshot.is_empty() || p.snapshot_problems > 0 {
        let failure = (p.snapshot_problems > 0).then(|| {
            (
                "compiled output differs from the snapshots".to_string(),
                p.snapshot.join("\n"),
            )
        });
        v.push(("snapshots".to_string(), p.file.clone(), failure));
    }
    for c in &p.cases {
        let name = format!("{}: expect {} {}", c.test, c.expect, c.packet);
        let failure = c
            .failure
            .as_ref()
            .map(|why| (why.clone(), c.explanation.join("\n")));
        v.push((name, c.at.clone(), failure));
    }
    v
}

fn suite(out: &mut String, p: &ProgramResult) {
    let cases = cases(p);
    let failures = cases.iter().filter(|c| c.2.is_some()).count();
    out.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">\n",
        esc(&p.file),
        cases.len()
    ));
    for (name, file, failure) in cases {
        out.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\"",
            esc(&p.file),
            esc(&name),
            esc(&file)
        ));
        match failure {
            None => out.push_str("/>\n"),
            Some((message, text)) => out.push_str(&format!(
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                esc(&message),
                esc(&text)
            )),
        }
    }
    out.push_str("  </testsuite>\n");
}
