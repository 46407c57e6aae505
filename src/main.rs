//! The `herald` binary: parses the command line and runs the library.

use std::process::ExitCode;

use clap::Parser;
use herald::cli::{Cli, Command, LogFormat, ServeArgs, run_bench_alias, run_config_command};
use herald::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Config(cmd)) => ExitCode::from(run_config_command(&cmd).clamp(0, 255) as u8),
        Some(Command::Bench { args }) => ExitCode::from(run_bench_alias(&args).clamp(0, 255) as u8),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(args.log_format);
    raise_fd_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listen = config.listen;
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot start on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Listen for SIGHUP before announcing the address: until then a SIGHUP would still
        // have its default effect and end the process.
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hup) => {
                tokio::spawn(reload_on_sighup(hup, args.clone(), server.reload_handle()));
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; reloads are off"),
        }
        tracing::info!("listening on http://{}", server.local_addr());
        let handle = server.shutdown_handle();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            handle.shutdown();
        });
        match server.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("server failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Every connection is a file descriptor: take the hard limit on open files, not the soft
/// one (often 1024). See `herald::fd_limit`.
fn raise_fd_limit() {
    match herald::fd_limit::raise_to_hard() {
        Ok(r) if r.to > r.from => {
            tracing::info!("raised the open files limit from {} to {}", r.from, r.to)
        }
        Ok(r) => tracing::info!("open files limit {}", r.to),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// On every SIGHUP: loads the configuration again exactly as at start (file, then
/// environment, then flags) and applies it; a file that does not load is logged and changes
/// nothing.
#[cfg(unix)]
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    args: ServeArgs,
    reload: herald::ReloadHandle,
) {
    while hup.recv().await.is_some() {
        match &args.config {
            Some(file) => {
                tracing::info!(file = %file.display(), "SIGHUP: reloading the configuration")
            }
            None => tracing::info!("SIGHUP: no --config file; re-reading environment and flags"),
        }
        match args.load_config() {
            Ok(config) => {
                let _ = reload.reload(config);
            }
            Err(e) => reload.refused(&e),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
