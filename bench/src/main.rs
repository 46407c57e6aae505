//! The `herald-bench` binary: `herald-bench SCENARIO [OPTIONS]` or `herald-bench report …`.

use std::process::ExitCode;

use clap::Parser;
use herald_bench::BenchCommand;

// The same allocator as the server: the tool's own cost stays what the figures were taken with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator: Herald, NATS (WebSocket) and Socket.IO side by side (see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "herald-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(herald_bench::run(&cli.command).clamp(0, 255) as u8)
}
