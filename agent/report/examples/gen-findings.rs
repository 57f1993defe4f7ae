//! Prints `docs/findings.md`, rendered from the finding catalogue. Run by `scripts/gen-findings`.

use std::io::Write as _;

fn main() -> std::process::ExitCode {
    let doc = guestward_report::catalogue::render_markdown();
    match std::io::stdout().lock().write_all(doc.as_bytes()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-findings: cannot write to stdout: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
