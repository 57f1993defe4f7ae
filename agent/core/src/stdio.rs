//! Writing a command's lines to standard output and standard error without `println!` and
//! `eprintln!`, which panic when the write fails.
//!
//! Why: a health check or cron job whose stderr goes to a log on a full disk, or a script that
//! closes the pipe it reads (`guestward-collector serve | head -c0`), turned a documented exit
//! code into a panic and exit 101, and `agentctl status --json` printed no JSON at all. The
//! binaries of this project write through these functions instead (their crates deny
//! `clippy::print_stdout` and `clippy::print_stderr`).

use std::fmt::Display;
use std::io::Write;

/// Writes `line` and a newline to standard error. A failure (stderr closed, or a file on a full
/// disk) is ignored: there is nowhere left to say it, and the exit code still tells the caller.
pub fn error_line(line: impl Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

/// Writes `line` and a newline to standard output, returning the error for the caller to
/// judge: a closed pipe is a quiet end (see [`crate::exit::is_broken_pipe`]), a full disk an
/// error worth a message.
pub fn output_line(line: impl Display) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Standard output, locked, whose write errors say that it was standard output that failed:
/// `agentctl status > /dev/full` once said only "No space left on device (os error 28)". The
/// error keeps its kind, so a closed pipe is still recognised as one.
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

/// See [`stdout`].
pub struct Stdout(std::io::StdoutLock<'static>);

fn named(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot write to standard output: {e}"))
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(named)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(named)
    }
}

// Tested through the binaries that use it: the agent's, agentctl's and the collector's
// end-to-end tests run them with stderr on /dev/full and stdout on a closed pipe.
