//! One `cloud` collection with the process environment (`AWS_EC2_METADATA_SERVICE_ENDPOINT`
//! etc.), printed as a table, or as JSON with `--json`. Used by `scripts/bench-cloud.sh`.

use guestward_cloud::{CloudCollector, ImdsConfig, render_table};
use guestward_core::HostRoot;
use std::process::ExitCode;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("imds_collect: starting a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let collector = match CloudCollector::new(&ImdsConfig::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imds_collect: {e}");
            return ExitCode::from(2);
        }
    };
    let scan = runtime.block_on(collector.scan(&HostRoot::live()));
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
