//! `weir completions bash|zsh|fish` and `weir man`: shell completion
//! scripts and the roff man page, both generated from the clap command
//! definition, so they list exactly the commands and flags the binary has.

use clap::CommandFactory;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {}

/// The completion script on standard output.
pub fn completions(args: CompletionsArgs) -> i32 {
    let mut cmd = crate::Cli::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "weir", &mut buf);
    write_all(&buf)
}

/// weir(1) in roff on standard output (`weir man | man -l -`), with one
/// section per subcommand.
pub fn man(_args: ManArgs) -> i32 {
    let cmd = crate::Cli::command();
    let mut buf = Vec::new();
    let page = clap_mangen::Man::new(cmd.clone());
    if let Err(e) = page.render(&mut buf) {
        return crate::program::usage(format_args!("rendering the man page: {e}"));
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("weir {}", sub.get_name());
        let _ = writeln!(buf, ".SH \"{}\"", name.to_uppercase());
        if let Some(about) = sub.get_about() {
            let _ = writeln!(buf, "{}", roff_text(&about.to_string()));
        }
        let _ = writeln!(buf, ".PP\n.nf\n{}\n.fi", roff_text(&usage(sub)));
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            let _ = writeln!(buf, ".TP\n{}", roff_text(&flag(arg)));
            if let Some(help) = arg.get_help() {
                let _ = writeln!(buf, "{}", roff_text(&help.to_string()));
            }
        }
    }
    write_all(&buf)
}

fn usage(sub: &clap::Command) -> String {
    let mut sub = sub.clone().bin_name(format!("weir {}", sub.get_name()));
    sub.render_usage()
        .to_string()
        .trim_start_matches("Usage: ")
        .to_string()
}

/// `--format human|json`, `--endpoints <FILE>`, `--deny-warnings`,
/// `<PATHS>`: a flag with the values it takes.
fn flag(arg: &clap::Arg) -> String {
    let mut s = match (arg.get_long(), arg.get_short()) {
        (Some(l), Some(c)) => format!("-{c}, --{l}"),
        (Some(l), None) => format!("--{l}"),
        (None, Some(c)) => format!("-{c}"),
        (None, None) => format!("<{}>", arg.get_id().as_str().to_uppercase()),
    };
    if !arg.get_action().takes_values() || arg.get_long().is_none() {
        return s;
    }
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !values.is_empty() {
        s.push_str(&format!(" {}", values.join("|")));
    } else if let Some(names) = arg.get_value_names() {
        let names: Vec<String> = names.iter().map(|n| format!("<{n}>")).collect();
        s.push_str(&format!(" {}", names.join(" ")));
    } else {
        s.push_str(&format!(" <{}>", arg.get_id().as_str().to_uppercase()));
    }
    s
}

/// Text safe in a roff body: backslashes doubled, no line starting with a
/// control character.
fn roff_text(s: &str) -> String {
    s.replace('\\', "\\\\")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_all(bytes: &[u8]) -> i32 {
    crate::out::handle(std::io::stdout().lock().write_all(bytes));
    0
}
