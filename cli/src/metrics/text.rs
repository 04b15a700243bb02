//! The Prometheus text exposition format, version 0.0.4: one `# HELP`
//! and one `# TYPE` line per family, then its samples, each family's
//! samples together (the format requires it). Label values are escaped
//! as the format says (`\\`, `\"`, `\n`); help text escapes `\\` and
//! `\n`. Only families of the catalogue ([`super::families`]) can be
//! written, and only with the labels it declares (a label outside the
//! list is a programming error, caught by the tests).

use std::fmt::Write as _;

use super::families::Family;

/// The content type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A text being written.
#[derive(Default)]
pub struct Text {
    out: String,
    /// The family whose header was written last.
    current: Option<&'static str>,
    /// Families already written (a family is written once, contiguous).
    done: Vec<&'static str>,
}

impl Text {
    pub fn new() -> Text {
        Text::default()
    }

    /// Starts `family` (its header), even if it gets no sample: a
    /// scraper then knows the family exists.
    pub fn family(&mut self, family: &'static Family) {
        if self.current == Some(family.name) {
            return;
        }
        debug_assert!(
            super::families::ALL
                .iter()
                .any(|f| std::ptr::eq(*f, family)),
            "{} is not in families::ALL (nor, then, checked against docs/metrics.md)",
            family.name
        );
        debug_assert!(
            !self.done.contains(&family.name),
            "{} written twice",
            family.name
        );
        let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = write!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {ty}\n",
            name = family.name,
            ty = family.ty.name()
        );
        self.current = Some(family.name);
        self.done.push(family.name);
    }

    /// One sample of `family`; labels with an empty value are left out
    /// (Prometheus treats an absent label as empty).
    pub fn sample(
        &mut self,
        family: &'static Family,
        labels: &[(&str, &str)],
        value: impl Into<Value>,
    ) {
        self.family(family);
        self.out.push_str(family.name);
        let mut first = true;
        for (k, v) in labels.iter().filter(|(_, v)| !v.is_empty()) {
            debug_assert!(
                family.labels.contains(k),
                "{} has no label {k}",
                family.name
            );
            self.out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(self.out, "{k}=\"{}\"", escape(v));
        }
        if !first {
            self.out.push('}');
        }
        let _ = match value.into() {
            Value::Int(n) => writeln!(self.out, " {n}"),
            Value::Float(v) => writeln!(self.out, " {v}"),
        };
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value as the format escapes it.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: counters read from the kernel are u64 and written
/// exactly (an f64 would round them past 2^53); measured values are f64.
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(n)
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        Value::Int(n as u64)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Int(b.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

#[cfg(test)]
mod tests {
    use super::super::families::{AGENT_OBJECTS, RULE_PACKETS};
    use super::*;

    #[test]
    fn header_once_labels_escaped_empty_left_out() {
        let mut t = Text::new();
        t.sample(
            &RULE_PACKETS,
            &[("policy", "a\"b\\c\nd"), ("tier", ""), ("id", "3")],
            7u64,
        );
        t.sample(&RULE_PACKETS, &[("id", "4")], u64::MAX);
        t.family(&AGENT_OBJECTS);
        let s = t.finish();
        assert_eq!(
            s,
            "# HELP weir_rule_packets_total Packets decided (or logged, for a log rule) by each provenance id of the generation in force.\n\
             # TYPE weir_rule_packets_total counter\n\
             weir_rule_packets_total{policy=\"a\\\"b\\\\c\\nd\",id=\"3\"} 7\n\
             weir_rule_packets_total{id=\"4\"} 18446744073709551615\n\
             # HELP weir_agent_objects Watched objects held, by kind.\n\
             # TYPE weir_agent_objects gauge\n"
        );
        let mut t = Text::new();
        t.sample(&AGENT_OBJECTS, &[], 0.0015);
        assert!(t.finish().ends_with("weir_agent_objects 0.0015\n"));
    }
}
