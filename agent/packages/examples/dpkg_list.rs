//! Prints the installed dpkg packages as `name\tversion\tarch\tstatus`, the same fields as
//! `dpkg-query -W -f '${binary:Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n'`.
//! Used by `scripts/bench-dpkg.sh` to compare the parser with dpkg-query on the same database.

use guestward_core::HostRoot;
use std::io::Write;
use std::path::Path;

fn main() -> std::process::ExitCode {
    let admin = std::env::args().nth(1).unwrap_or_else(|| "/var/lib/dpkg".to_string());
    let (inventory, problems) =
        match guestward_packages::dpkg::read_status(&HostRoot::live(), Path::new(&admin), 1 << 30) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::from(2);
            }
        };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for p in inventory.installed.iter().chain(&inventory.not_fully_installed) {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{} {} {}",
            p.name,
            p.version.full,
            p.architecture.as_deref().unwrap_or(""),
            p.status.want,
            p.status.flag,
            p.status.state
        );
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    std::process::ExitCode::SUCCESS
}
