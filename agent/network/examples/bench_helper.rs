//! Benchmark helper: holds many loopback TCP connections open.
//!
//! - `bench_helper listen <count> <port-file>`: listens on 127.0.0.1 (ephemeral port, written
//!   to `<port-file>`), accepts `<count>` connections, then holds them.
//! - `bench_helper connect <port> <count> <ready-file>`: opens `<count>` connections to
//!   127.0.0.1:<port>, writes `<ready-file>`, then holds them.
//!
//! Both exit when stdin reaches end of file or after `HOLD_SECS` at most, so a forgotten helper
//! cannot outlive a benchmark for long. One process holds at most `<count>` descriptors (the
//! open-files limit here is 20,000 per process, hence two processes for 20,000 sockets).

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Upper bound on how long a helper holds its sockets.
const HOLD_SECS: u64 = 900;
/// Upper bound on the number of connections one helper opens.
const MAX_COUNT: usize = 20_000;

/// Closes with RST (`SO_LINGER` 0) so the next benchmark step does not start with thousands
/// of `TIME_WAIT` sockets left over from this one.
fn close_abortively<T: std::os::fd::AsFd>(sockets: Vec<T>) {
    let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
    for s in &sockets {
        let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::Linger, &linger);
    }
    drop(sockets);
}

fn hold() {
    // Wait for stdin EOF (the script closes it) on a thread, bounded by HOLD_SECS.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(HOLD_SECS));
}

fn count(arg: Option<String>) -> Result<usize, Box<dyn std::error::Error>> {
    let n: usize = arg.ok_or("missing count")?.parse()?;
    if n > MAX_COUNT {
        return Err(format!("count {n} is over {MAX_COUNT}").into());
    }
    Ok(n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("listen") => {
            let n = count(args.next())?;
            let port_file = args.next().ok_or("missing port file")?;
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            std::fs::write(&port_file, listener.local_addr()?.port().to_string())?;
            let mut held = Vec::with_capacity(n);
            let deadline = Instant::now() + Duration::from_secs(120);
            while held.len() < n && Instant::now() < deadline {
                held.push(listener.accept()?.0);
            }
            hold();
            close_abortively(held);
        }
        Some("connect") => {
            let port: u16 = args.next().ok_or("missing port")?.parse()?;
            let n = count(args.next())?;
            let ready_file = args.next().ok_or("missing ready file")?;
            let mut held = Vec::with_capacity(n);
            for _ in 0..n {
                held.push(TcpStream::connect((Ipv4Addr::LOCALHOST, port))?);
            }
            std::fs::write(&ready_file, held.len().to_string())?;
            hold();
            close_abortively(held);
        }
        _ => {
            return Err(
                "usage: bench_helper listen <count> <port-file> | connect <port> <count> <ready-file>".into(),
            );
        }
    }
    Ok(())
}
