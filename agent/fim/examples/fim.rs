//! A stand-alone driver of the FIM engine for `scripts/bench-fim.sh`: `init|check|update` are
//! the same `guestward_fim::cli::run` as `guestward-agent fim`; `latency` and `idle` measure
//! the realtime monitor.
//!
//! ```text
//! fim [--config agent.toml] init|check|update [--json] [--state-dir DIR] [--root DIR]
//! fim latency --dir DIR --state-dir DIR [--rate 1000] [--seconds 10]
//! fim idle --state-dir DIR [--seconds 10] [--config agent.toml]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::{Parser, Subcommand};
use guestward_core::{AbsolutePath, HostRoot};
use guestward_fim::cli::FimCommand;
use guestward_fim::config::PathEntry;
use guestward_fim::{Config, Fim, Monitor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Cli {
    /// A TOML file with a `[fim]` section (other sections are ignored).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Fim(FimCommand),
    /// Realtime latency: modify `rate` distinct files per second, measure close → event.
    Latency {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// CPU used by the watcher while nothing changes.
    Idle {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[derive(serde::Deserialize)]
struct File {
    #[serde(default)]
    fim: Config,
}

fn load(path: Option<&Path>) -> Config {
    match path {
        Some(p) => toml::from_str::<File>(&std::fs::read_to_string(p).unwrap()).unwrap().fim,
        None => Config::default(),
    }
}

fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn main() {
    let cli = Cli::parse();
    let config = load(cli.config.as_deref());
    match cli.cmd {
        Cmd::Fim(cmd) => {
            let code = guestward_fim::cli::run(&cmd, &config, Path::new("/var/lib/guestward"));
            std::process::exit(i32::from(code));
        }
        Cmd::Latency { dir, state_dir, rate, seconds } => latency(&dir, &state_dir, rate, seconds),
        Cmd::Idle { state_dir, seconds } => {
            let fim = Fim::new(config, HostRoot::live(), state_dir).unwrap();
            let m = Monitor::start(fim, Box::new(|_| {})).unwrap();
            assert!(m.wait_watching(Duration::from_secs(600)));
            let s = m.status();
            let t0 = cpu_ticks();
            std::thread::sleep(Duration::from_secs(seconds));
            let used = cpu_ticks() - t0;
            println!(
                "idle: {} watches, {} entries; CPU over {seconds} s: {} ticks ({:.3}% of one core)",
                s.watches_used,
                s.files_in_baseline,
                used,
                used as f64 / (seconds as f64 * 100.0) * 100.0
            );
            m.stop();
        }
    }
}

fn latency(dir: &Path, state: &Path, rate: u64, seconds: u64) {
    let n = usize::try_from(rate * seconds).unwrap();
    for i in 0..n {
        let d = dir.join(format!("d{}", i % 100));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), "before").unwrap();
    }
    let config =
        Config { paths: vec![PathEntry::Simple(AbsolutePath::new(dir).unwrap())], ..Config::default() };
    let fim = Fim::new(config, HostRoot::live(), state).unwrap();
    let closed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let (c2, l2) = (Arc::clone(&closed), Arc::clone(&lat));
    let m = Monitor::start(
        fim,
        Box::new(move |e| {
            let now = Instant::now();
            if e.kind != "fim.change" {
                return;
            }
            let path = e.data["path"].as_str().unwrap_or_default().to_string();
            if let Some(t) = c2.lock().unwrap().get(&path) {
                l2.lock().unwrap().push(now - *t);
            }
        }),
    )
    .unwrap();
    assert!(m.wait_watching(Duration::from_secs(600)));
    let start = Instant::now();
    let t0 = cpu_ticks();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let p = dir.join(format!("d{}/f{i}", i % 100));
        std::fs::write(&p, format!("after {i}")).unwrap();
        closed.lock().unwrap().insert(p.display().to_string(), Instant::now());
    }
    let wrote = start.elapsed();
    let end = Instant::now() + Duration::from_secs(30);
    while lat.lock().unwrap().len() < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu = cpu_ticks() - t0;
    let mut l = lat.lock().unwrap().clone();
    l.sort();
    let q = |f: f64| {
        l.get(((l.len() as f64 * f) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    println!(
        "latency: {} of {n} changes at {:.0}/s reported; p50 {:?} p90 {:?} p99 {:?} max {:?}; overflows {}; CPU {} ticks",
        l.len(),
        n as f64 / wrote.as_secs_f64(),
        q(0.5),
        q(0.9),
        q(0.99),
        l.last().copied().unwrap_or_default(),
        m.status().overflows,
        cpu
    );
    m.stop();
}
