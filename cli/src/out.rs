//! Every line the CLI prints goes through here, so a closed pipe (`weir
//! stats | head`) ends the command quietly instead of panicking in
//! `println!`. On a broken pipe the process dies of SIGPIPE, as `cat`,
//! `grep` or `kubectl` do: the shell sees status 141 and prints nothing.
//! The signal stays ignored otherwise (Rust's default), so a child
//! process that dies early (`iptables-restore` refusing its input) is an
//! error the runtime reports, not a silent death of `weir apply`.

use serde::Serialize;
use std::fmt;
use std::io::{self, Write};

/// Write to standard output; a closed pipe ends the process quietly.
pub fn print(args: fmt::Arguments<'_>) {
    let result = io::stdout().lock().write_fmt(args);
    handle(result);
}

/// Write to standard error; a closed pipe ends the process quietly.
pub fn eprint(args: fmt::Arguments<'_>) {
    let result = io::stderr().lock().write_fmt(args);
    handle(result);
}

/// `value` as indented JSON and a newline on standard output.
pub fn json_pretty<T: Serialize + ?Sized>(value: &T) {
    print(format_args!("{}", json_text(value)));
}

/// `value` as indented JSON with every object's keys sorted (as in the
/// bundle: the same input always gives the same bytes), and a newline.
pub fn json_text<T: Serialize + ?Sized>(value: &T) -> String {
    // serde_json's `Value` keeps objects in a sorted map.
    let sorted = serde_json::to_value(value).expect("JSON of plain data");
    let mut text = serde_json::to_string_pretty(&sorted).expect("JSON of plain data");
    text.push('\n');
    text
}

/// The result of a write: a broken pipe ends the process; other errors
/// (a full disk under a redirect) are reported once, and the process ends
/// with status 2.
pub fn handle(result: io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => die_of_sigpipe(),
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: writing output: {e}");
            std::process::exit(2);
        }
    }
}

fn die_of_sigpipe() -> ! {
    // SAFETY: restoring the default disposition of one signal and raising
    // it in this process; no memory is touched.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached: the default action of SIGPIPE ends the process.
    std::process::exit(141)
}

/// `println!` that a closed pipe ends quietly.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that a closed pipe ends quietly.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::print(format_args!($($arg)*)) };
}

/// `eprintln!` that a closed pipe ends quietly.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::eprint(format_args!("{}\n", format_args!($($arg)*))) };
}
