//! Serves the IMDS emulator on 127.0.0.1 until killed, printing its URL on the first line
//! (used by `scripts/bench-cloud.sh`). `--v1` serves in tokens-optional mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use guestward_imds_emulator::{Emulator, EmulatorConfig, TokenMode};
use std::io::Write;

#[tokio::main]
async fn main() {
    let v1 = std::env::args().any(|a| a == "--v1");
    let tokens = if v1 { TokenMode::Optional } else { TokenMode::Required };
    let emu = Emulator::start(EmulatorConfig { tokens, ..Default::default() }).await;
    println!("{}", emu.url());
    std::io::stdout().flush().unwrap();
    tokio::signal::ctrl_c().await.unwrap();
}
