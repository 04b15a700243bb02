//! The shell commands of a markdown document's fenced ```sh blocks, in
//! order, so tests can run what the docs tell a reader to type (example
//! READMEs, docs/tutorial.md) and the docs never go stale.
//!
//! A command is one line, or several when a line ends in `\` or opens a
//! here-document (`<<'EOF'` … `EOF`, kept verbatim so a policy written
//! with `cat > FILE <<'EOF'` arrives byte for byte). Blank lines and
//! comment lines between commands are skipped. Each command remembers the
//! `## ` section it appears in, so a test can treat one section (say,
//! "Clean up") differently.
//!
//! Included with `#[path = "support/markdown.rs"] mod markdown;` by the
//! tests that need it, so they do not compile the other support modules.

/// One command of a ```sh block.
#[derive(Debug, Clone)]
pub struct ShellCommand {
    /// The title of the `## ` section it is in ("" before the first).
    pub section: String,
    /// 1-based line of the command's first line in the document.
    pub line: usize,
    /// The command as a shell reads it (lines joined by `\n`).
    pub text: String,
}

/// Every command of the document's ```sh blocks, in document order.
pub fn sh_commands(doc: &str) -> Vec<ShellCommand> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut in_sh = false;
    let mut lines = doc.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let t = line.trim();
        if !in_sh {
            if let Some(title) = t.strip_prefix("## ") {
                section = title.to_string();
            }
            in_sh = t == "```sh";
            continue;
        }
        if t == "```" {
            in_sh = false;
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut text = t.to_string();
        while text.ends_with('\\') {
            match lines.next() {
                Some((_, next)) => {
                    text.push('\n');
                    text.push_str(next.trim());
                }
                None => break,
            }
        }
        if let Some(end) = heredoc_end(&text) {
            for (_, body) in lines.by_ref() {
                text.push('\n');
                text.push_str(body);
                if body == end {
                    break;
                }
            }
        }
        out.push(ShellCommand {
            section: section.clone(),
            line: n + 1,
            text,
        });
    }
    out
}

/// The terminator of a here-document the command opens (`<<EOF`,
/// `<<'EOF'`, `<<-"EOF"`), if it opens one.
fn heredoc_end(cmd: &str) -> Option<String> {
    let rest = cmd[cmd.find("<<")? + 2..].trim_start_matches('-');
    let word: String = rest
        .trim_start()
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

#[test]
fn commands_join_continuations_and_keep_heredocs_verbatim() {
    let doc = "## One\n```sh\n# a comment\nls \\\n  -l\n\ncat > f <<'EOF'\n  # kept\nx\nEOF\n```\n```text\nnot a command\n```\n## Two\n```sh\necho hi  # trailing\n```\n";
    let cmds = sh_commands(doc);
    let texts: Vec<&str> = cmds.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "ls \\\n-l",
            "cat > f <<'EOF'\n  # kept\nx\nEOF",
            "echo hi  # trailing"
        ]
    );
    assert_eq!(cmds[1].line, 7);
    assert_eq!(
        (cmds[0].section.as_str(), cmds[2].section.as_str()),
        ("One", "Two")
    );
}
