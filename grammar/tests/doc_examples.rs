//! Every ```weir block in docs/language.md must parse without errors.

use weir_grammar::{parse, FileId};

fn weir_blocks(doc: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        let t = line.trim_start();
        match &mut cur {
            None if t.starts_with("```weir") => cur = Some((i + 1, String::new())),
            Some(_) if t.starts_with("```") => out.push(cur.take().unwrap()),
            Some((_, s)) => {
                s.push_str(line);
                s.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn language_md_examples_parse() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/language.md");
    let doc = std::fs::read_to_string(path).expect("docs/language.md");
    let blocks = weir_blocks(&doc);
    assert!(blocks.len() >= 5, "found only {} weir blocks", blocks.len());
    let mut failures = Vec::new();
    for (line, src) in &blocks {
        let (file, errors) = parse(FileId(0), src);
        if !errors.is_empty() {
            for e in &errors {
                failures.push(format!(
                    "language.md block@{line}: {:?} {:?}",
                    e.kind,
                    &src[e.span.range()]
                ));
            }
        }
        assert!(
            !file.items.is_empty(),
            "block at line {line} parsed to nothing"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
