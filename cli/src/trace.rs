//! `weir trace FILE... --packet "tcp 10.1.0.5:40000 -> 10.2.0.7:5432"`:
//! the interpreter's verdict for one packet and the rule that decided it.

use crate::program::{self, Color};
use std::path::PathBuf;
use weir_compiler::interp::explain::{explain, explain_json, Located};
use weir_compiler::interp::{parse_packet, BackendChoice, Interp};
use weir_compiler::source::SourceMap;
use weir_grammar::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy files (combined into one program).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The packet, e.g. "tcp 10.1.0.5:40000 -> 10.2.0.7:5432", "tcp web-1 ->
    /// db-1:5432" (endpoint names, as in `expect` lines), "icmp A -> B
    /// type 8 code 0", "icmp6 [fd00::1] -> [fd00::2] type 128"; append "established" or "at ingress|egress".
    #[arg(long)]
    pub packet: String,
    /// Use this backend when the packet hits a service (ADDR:PORT).
    #[arg(long, value_name = "ADDR:PORT")]
    pub backend: Option<std::net::SocketAddr>,
    /// A JSON endpoint inventory.
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// Source location of a span for explanations.
pub fn locator(sources: &SourceMap) -> impl Fn(Span) -> Option<Located> + '_ {
    move |span: Span| {
        let file = sources.get(span.file)?;
        let (line, col) = file.line_col(span.start as usize);
        let range = file.line_range(line - 1);
        Some(Located {
            at: format!("{}:{line}:{col}", file.name()),
            line: file.text.get(range)?.to_string(),
        })
    }
}

pub fn run(args: Args) -> i32 {
    let checked = match program::check(&args.files, args.endpoints.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if checked.has_errors() {
        program::print_human(&checked.diagnostics, &checked.sources, args.color);
        return 1;
    }
    let packet = match crate::packet_names::resolve(&args.packet, &checked.model)
        .and_then(|text| parse_packet(&text))
    {
        Ok(p) => p,
        Err(e) => return program::usage(format_args!("--packet: {e}")),
    };
    let interp = Interp::new(&checked.model);
    let choice = match args.backend {
        Some(b) => BackendChoice::Pinned(b.ip(), b.port()),
        None => BackendChoice::ByHash,
    };
    let outcome = interp.evaluate_with(&packet, choice);
    if let (Some(b), None) = (args.backend, &outcome.service) {
        return program::usage(format_args!(
            "--backend {b} applies to a packet sent to a service frontend; this one hits none"
        ));
    }
    if let (Some(b), Some(hit)) = (args.backend, &outcome.service) {
        if hit.chosen.is_none() && !hit.candidates.is_empty() {
            return program::usage(format_args!(
                "--backend {b} is not a backend of this service"
            ));
        }
    }
    let locate = locator(&checked.sources);
    match args.format {
        Format::Human => crate::out!("{}", explain(&interp, &packet, &outcome, &locate)),
        Format::Json => crate::out::json_pretty(&explain_json(&interp, &packet, &outcome, &locate)),
    }
    0
}
