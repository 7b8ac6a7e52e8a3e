//! What the command line prints, written so that a reader who went away never kills it.
//!
//! `println!` panics when stdout is a closed pipe (`shipsec run | head`, a log shipper
//! that restarted): in `shipsec serve` the panic took the signal task with it, so SIGTERM
//! and SIGINT were ignored for good, and `shipsec worker` exited 101. Status lines are for
//! whoever reads them; when nobody does, they are dropped, and the command goes on (a stop
//! still drains and exits 0). SIGPIPE stays ignored (Rust's default), so a closed pipe is
//! an error here, never a signal.

use std::fmt::Arguments;
use std::io::Write;

/// Writes `args` and a newline to stdout, dropping them when stdout is gone.
pub(crate) fn line(args: Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // A reader that went away is not this command's failure: the line is dropped.
    let _ = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
}

/// Writes `args` to stdout as they are (no newline), dropping them when stdout is gone.
pub(crate) fn text(args: Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // As in `line`.
    let _ = out.write_fmt(args).and_then(|()| out.flush());
}

/// Writes `args` and a newline to stderr, dropping them when stderr is gone.
pub(crate) fn complaint(args: Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    // Nowhere left to say it.
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `println!` that never panics (see the module).
macro_rules! say {
    () => { $crate::cli::console::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::console::line(format_args!($($arg)*)) };
}

/// `print!` that never panics.
macro_rules! say_text {
    ($($arg:tt)*) => { $crate::cli::console::text(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
macro_rules! complain {
    () => { $crate::cli::console::complaint(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::console::complaint(format_args!($($arg)*)) };
}
