//! What the command line prints for its user. A reader of standard output that goes away
//! (`weir ls | head -3`) ends the command quietly, with success, as it ends other Unix tools:
//! every write returns [`ReaderGone`] then, which the command passes up and `main` recognises.
//! Notes on standard error are dropped when nobody reads them.

use std::fmt;
use std::io::{self, Write as _};

/// Prints one line on standard output: `say!("{} partitions", n)?`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::terminal::line(format_args!($($arg)*))
    };
}

/// Writes one line on standard error, unless nobody reads it: `note!("started {id}")`.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::terminal::note(format_args!($($arg)*))
    };
}

/// Standard output was closed by its reader.
#[derive(Debug)]
pub struct ReaderGone;

impl fmt::Display for ReaderGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the reader of standard output went away")
    }
}

impl std::error::Error for ReaderGone {}

/// Writes `args` and a newline.
pub fn line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    checked(out.write_fmt(args).and_then(|()| out.write_all(b"\n")))
}

/// Writes `text` as it is, and flushes it: a line that is rewritten in place.
pub fn text(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    checked(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

/// Writes a note for the user on standard error, unless nobody reads it.
pub fn note(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Whether `error` is standard output's reader going away, rather than a failure.
pub fn reader_gone(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<ReaderGone>())
}

fn checked(written: io::Result<()>) -> anyhow::Result<()> {
    match written {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Err(ReaderGone.into()),
        Err(error) => Err(anyhow::Error::new(error).context("failed to write to standard output")),
    }
}
