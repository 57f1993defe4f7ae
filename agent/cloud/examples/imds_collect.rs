//! One `cloud` collection with the process environment (`AWS_EC2_METADATA_SERVICE_ENDPOINT`
//! etc.), printed as a table, or as JSON with `--json`. Used by `scripts/bench-cloud.sh`.

use guestward_cloud::{ImdsConfig, render_table, scan_blocking};
use guestward_core::HostRoot;
use std::process::ExitCode;

fn main() -> ExitCode {
    let scan = scan_blocking(&ImdsConfig::default(), &HostRoot::live());
    let mut out = std::io::stdout().lock();
    let written = if std::env::args().any(|a| a == "--json") {
        serde_json::to_writer_pretty(&mut out, &scan.section).map_err(std::io::Error::other)
    } else {
        match &scan.section.data {
            Some(r) => render_table(r, &mut out),
            None => Ok(()),
        }
    };
    if let Err(e) = written {
        eprintln!("imds_collect: {e}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
