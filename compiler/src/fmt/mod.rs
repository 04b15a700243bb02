//! The formatter: one canonical layout for `.weir` files.
//!
//! [`format`] parses the text, refuses a file with syntax errors (returning
//! them), and prints the tree again. Pure: no IO.
//!
//! # The layout
//!
//! - Two-space indentation; one item, block line, rule or `expect` per
//!   line; blocks (`service`, `policy`, `ingress`/`egress`, `steer`,
//!   `test`) always open on the header line and close on a line of their
//!   own; an empty block is written `{}`.
//! - A blank line between top-level items, except between consecutive
//!   one-line items of the same kind (`import`s, `selector`s, `set`s,
//!   `endpoint`s, `tier`s, `default`s, `inventory`s), which stay grouped. A blank line the
//!   author left between such one-liners, or between lines of a block, is
//!   kept (at most one); blank lines at the start or end of a block go.
//! - Single spaces around operators (`==`, `!=`, `&&`, `||`, `=`, `:`
//!   after a label key), none inside `has(k)` or `( … )`, `!` attached;
//!   no alignment.
//! - Brace lists (set literals, `in` lists, label maps, port lists,
//!   explicit backends) are written `{ a, b }` on one line when the line
//!   fits in 100 columns, otherwise one element per line with a trailing
//!   comma; a list holding a comment is always broken. An endpoint is one
//!   line (`endpoint web-1 { labels { app: "web" } addr 10.1.0.5 }`) when it
//!   fits, else one `labels`/`addr` line each; several `labels` lines are
//!   merged into one.
//! - Literals are kept as written (quoted or bare labels, hex numbers,
//!   durations, address spelling, `{ x }` versus `x` for a one-element
//!   set); an IPv6 socket is always bracketed.
//! - Comments are kept, in order: a comment on its own line stays on its
//!   own line before the thing it precedes (at that thing's indentation); a
//!   comment at the end of a line stays at the end of that line, after two
//!   spaces. A comment inside a construct that is printed on one line (a
//!   selector written over several lines) moves to its own line just
//!   before that construct.
//!
//! Formatting is idempotent and preserves the syntax tree (tested over
//! every example and stdlib file).

mod print;

use std::collections::VecDeque;
use weir_grammar::lexer::Comment;
use weir_grammar::{FileId, Span, SyntaxError};

/// Maximum line width before brace lists are broken.
pub const WIDTH: usize = 100;

/// Formats a whole file. A file with lexical or syntax errors is not
/// formatted: its errors are returned (file id 0) instead.
pub fn format(src: &str) -> Result<String, Vec<SyntaxError>> {
    let (file, errors, comments) = weir_grammar::parse_with_comments(FileId(0), src);
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut e = Emitter::new(src, comments);
    e.file(&file);
    Ok(e.finish())
}

/// A printable fragment: text and brace lists that may break.
#[derive(Debug, Clone)]
pub(crate) enum Doc {
    Text(String),
    Seq(Vec<Doc>),
    List(Box<List>),
}

#[derive(Debug, Clone)]
pub(crate) struct List {
    /// Elements with their source spans (for comments).
    pub items: Vec<(Span, Doc)>,
    /// `true`: elements separated by `, ` (a trailing `,` when broken);
    /// `false`: by a space (endpoint bodies), nothing when broken.
    pub commas: bool,
    /// The source region of the list, for finding comments inside it.
    pub span: Span,
}

impl Doc {
    pub fn text(s: impl Into<String>) -> Doc {
        Doc::Text(s.into())
    }

    fn flat(&self, out: &mut String) {
        match self {
            Doc::Text(t) => out.push_str(t),
            Doc::Seq(v) => v.iter().for_each(|d| d.flat(out)),
            Doc::List(l) => {
                if l.items.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push_str("{ ");
                for (i, (_, d)) in l.items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(if l.commas { ", " } else { " " });
                    }
                    d.flat(out);
                }
                out.push_str(" }");
            }
        }
    }

    fn flat_string(&self) -> String {
        let mut s = String::new();
        self.flat(&mut s);
        s
    }
}

/// Writes the output, interleaving comments by source position.
pub(crate) struct Emitter<'a> {
    pub src: &'a str,
    comments: VecDeque<Comment>,
    out: String,
    indent: usize,
    /// Source offset of the last thing written (for blank-line detection).
    last_end: usize,
    /// Nothing written yet in the current block (no blank line allowed).
    fresh: bool,
}

impl<'a> Emitter<'a> {
    fn new(src: &'a str, mut comments: Vec<Comment>) -> Emitter<'a> {
        comments.sort_by_key(|c| c.span.start);
        Emitter {
            src,
            comments: comments.into(),
            out: String::new(),
            indent: 0,
            last_end: 0,
            fresh: true,
        }
    }

    fn finish(mut self) -> String {
        // Comments after the last item.
        self.leading(usize::MAX);
        let trimmed = self.out.trim_end().len();
        self.out.truncate(trimmed);
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        self.out
    }

    pub fn slice(&self, span: Span) -> &'a str {
        self.src.get(span.range()).unwrap_or("")
    }

    fn pad(&mut self) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
    }

    fn column(&self) -> usize {
        let line_start = self.out.rfind('\n').map_or(0, |i| i + 1);
        self.out[line_start..].chars().count()
    }

    /// Whether the source has a blank line between `a` and `b`.
    fn blank_between(&self, a: usize, b: usize) -> bool {
        let b = b.min(self.src.len());
        a < b && self.src[a..b].matches('\n').count() >= 2
    }

    /// A blank line, unless at the start of a block.
    fn blank(&mut self) {
        if !self.fresh && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    fn comment_line(&mut self, c: &Comment) {
        if self.blank_between(self.last_end, c.span.start as usize) {
            self.blank();
        }
        self.pad();
        self.out.push_str(c.text.trim_end());
        self.out.push('\n');
        self.last_end = c.span.end as usize;
        self.fresh = false;
    }

    /// Comments that start before `pos`.
    fn take_before(&mut self, pos: usize) -> Vec<Comment> {
        let mut v = Vec::new();
        while self
            .comments
            .front()
            .is_some_and(|c| (c.span.start as usize) < pos)
        {
            v.extend(self.comments.pop_front());
        }
        v
    }

    /// Writes the comments that start before `pos` on their own lines.
    fn leading(&mut self, pos: usize) {
        for c in self.take_before(pos) {
            self.comment_line(&c);
        }
    }

    /// A comment on the same source line after `end`, with only
    /// punctuation in between.
    fn take_trailing(&mut self, end: usize) -> Option<Comment> {
        let c = self.comments.front()?;
        let start = c.span.start as usize;
        let between = self.src.get(end..start)?;
        if between
            .chars()
            .all(|ch| matches!(ch, ' ' | '\t' | '\r' | ',' | ';' | '{' | '}'))
        {
            self.comments.pop_front()
        } else {
            None
        }
    }

    fn has_comments_in(&self, span: Span) -> bool {
        self.comments
            .iter()
            .take_while(|c| c.span.start < span.end)
            .any(|c| c.span.start >= span.start)
    }

    /// Ends the current output line, with the trailing comment after
    /// source offset `end` if there is one.
    fn end_line(&mut self, end: usize) {
        let mut end = end;
        if let Some(c) = self.take_trailing(end) {
            self.out.push_str("  ");
            self.out.push_str(c.text.trim_end());
            end = c.span.end as usize;
        }
        self.out.push('\n');
        self.last_end = self.last_end.max(end);
        self.fresh = false;
    }

    /// One construct on (usually) one line: leading comments, the text
    /// (brace lists broken when too long or holding comments), comments
    /// inside it that found no place moved before it, a trailing comment.
    /// `extra` is text appended after the construct on its last line
    /// (a block's ` {`).
    pub fn construct(&mut self, span: Span, doc: &Doc, extra: &str) {
        self.leading(span.start as usize);
        if self.blank_between(self.last_end, span.start as usize) {
            self.blank();
        }
        let saved = std::mem::take(&mut self.out);
        self.pad();
        self.doc_line(span, doc);
        self.out.push_str(extra);
        let text = std::mem::replace(&mut self.out, saved);
        // Comments inside the construct that no list took.
        for c in self.take_before(span.end as usize) {
            self.pad();
            self.out.push_str(c.text.trim_end());
            self.out.push('\n');
        }
        self.out.push_str(&text);
        self.last_end = self.last_end.max(span.start as usize);
        self.end_line(span.end as usize);
    }

    /// Writes `doc` at the current position: flat when it fits and holds
    /// no comment, else with its lists broken as needed.
    fn doc_line(&mut self, span: Span, doc: &Doc) {
        let flat = doc.flat_string();
        if !self.has_comments_in(span) && self.column() + flat.chars().count() <= WIDTH {
            self.out.push_str(&flat);
        } else {
            self.doc_broken(doc);
        }
    }

    fn doc_broken(&mut self, doc: &Doc) {
        match doc {
            Doc::Text(t) => self.out.push_str(t),
            Doc::Seq(v) => v.iter().for_each(|d| self.doc_broken(d)),
            Doc::List(l) => {
                let flat = doc.flat_string();
                let fits = self.column() + flat.chars().count() <= WIDTH;
                if l.items.is_empty() || (fits && !self.has_comments_in(l.span)) {
                    self.out.push_str(&flat);
                    return;
                }
                self.out.push('{');
                self.out.push('\n');
                self.indent += 1;
                for (span, item) in &l.items {
                    for c in self.take_before(span.start as usize) {
                        self.pad();
                        self.out.push_str(c.text.trim_end());
                        self.out.push('\n');
                    }
                    self.pad();
                    self.doc_line(*span, item);
                    if l.commas {
                        self.out.push(',');
                    }
                    let mut end = span.end as usize;
                    if let Some(c) = self.take_trailing(end) {
                        self.out.push_str("  ");
                        self.out.push_str(c.text.trim_end());
                        end = c.span.end as usize;
                    }
                    self.last_end = self.last_end.max(end);
                    self.out.push('\n');
                }
                for c in self.take_before(l.span.end.saturating_sub(1) as usize) {
                    self.pad();
                    self.out.push_str(c.text.trim_end());
                    self.out.push('\n');
                }
                self.indent -= 1;
                self.pad();
                self.out.push('}');
            }
        }
    }

    /// A block: `header {`, the body lines, `}`. `close` is the offset of
    /// the closing brace; `span` the whole construct.
    pub fn block(
        &mut self,
        header_span: Span,
        header: &Doc,
        span: Span,
        empty: bool,
        body: impl FnOnce(&mut Self),
    ) {
        let close = (span.end as usize).saturating_sub(1);
        let inner = Span::new(span.file, header_span.end as usize, close);
        if empty && !self.has_comments_in(inner) {
            let hs = Span::new(span.file, header_span.start as usize, span.end as usize);
            self.construct(hs, header, " {}");
            return;
        }
        self.construct(header_span, header, " {");
        self.indent += 1;
        self.fresh = true;
        body(self);
        self.leading(close);
        self.indent -= 1;
        self.pad();
        self.out.push('}');
        self.last_end = self.last_end.max(close);
        self.end_line(span.end as usize);
    }

    /// Before a top-level item: a blank line when `forced`, else when
    /// the source had one. Leading comments come after the blank line.
    pub fn item_gap(&mut self, start: usize, forced: bool) {
        if forced {
            self.blank();
            self.fresh = true;
            // `fresh` suppresses a second blank line from the source.
            let comments = self.take_before(start);
            for c in &comments {
                self.comment_line(c);
            }
            if comments.is_empty() {
                self.last_end = self.last_end.max(start);
            }
        }
    }
}

#[cfg(test)]
mod tests;
