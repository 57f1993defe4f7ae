//! Lists the packages of an rpm database like
//! `rpm -qa --queryformat '%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n'`.
//! Used by scripts/bench-rpmdb.sh.
//!
//! usage: rpmdb-list DIR   (a directory holding rpmdb.sqlite, Packages.db or Packages)

use guestward_core::HostRoot;
use guestward_rpmdb::{Limits, read_rpm_dirs};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: rpmdb-list DIR");
        return ExitCode::from(2);
    };
    let root = match HostRoot::new(PathBuf::from(dir)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let scan = read_rpm_dirs(&root, &[PathBuf::from("/")], &Limits::default());
    for e in &scan.errors {
        eprintln!("error: {e}");
    }
    let Some(inv) = scan.inventory else { return ExitCode::from(1) };
    let none = || "(none)".to_owned();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for p in &inv.packages {
        let epoch = p.epoch.map(|e| e.to_string()).unwrap_or_else(none);
        let arch = p.arch.clone().unwrap_or_else(none);
        if writeln!(out, "{}\t{epoch}\t{}\t{}\t{arch}", p.name, p.version, p.release).is_err() {
            return ExitCode::from(1);
        }
    }
    for c in &inv.corrupt {
        eprintln!("corrupt: {}", c.reason);
    }
    for p in &inv.problems {
        eprintln!("problem: {p}");
    }
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
