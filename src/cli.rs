//! The command line (PROTOCOL.md §9): `herald [serve] [--listen ADDR] [--config FILE] …` and
//! `herald config check|show`. Every serve flag has an environment variable; clap applies
//! "flag over variable", and [`ServeArgs::load_config`] puts both over the file.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::Auth;
use crate::config::{Checked, ClusterConfig, Config, ConfigError};

#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version,
    about = "Herald: a pub/sub server over WebSockets",
    long_about = None,
    // `herald --listen X` and `herald serve --listen X` both work, but not a mix of the two.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// The serve options when the server should start (`herald …` or `herald serve …`), or
    /// `None` for another subcommand.
    pub fn serve_args(&self) -> Option<&ServeArgs> {
        match &self.command {
            None => Some(&self.serve),
            Some(Command::Serve(args)) => Some(args),
            Some(Command::Config(_)) => None,
            Some(Command::Bench { .. }) => None,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the server (the default when no subcommand is given)
    Serve(ServeArgs),
    /// Configuration tools
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Load generator: Herald, NATS (WebSocket) and Socket.IO side by side (see BENCHMARKS.md);
    /// runs the `herald-bench` binary installed beside this one
    #[command(disable_help_flag = true)]
    Bench {
        /// Passed to `herald-bench` unchanged (`herald bench --help` lists them)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file; print errors with line numbers; exit non-zero on error
    Check {
        /// The TOML file to check
        file: PathBuf,
    },
    /// Print the effective configuration (file + environment + flags)
    Show(ServeArgs),
}

#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one) [default: 127.0.0.1:7400]
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Configuration file (TOML)
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the durable store (topics with `persist = true`); absent: in memory
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Redis URL for cluster mode: nodes sharing it share one topic space. Several
    /// (comma-separated or repeated) shard topics over that many Redis servers
    #[arg(long, env = "HERALD_REDIS", value_name = "URL", value_delimiter = ',')]
    pub redis: Vec<String>,
    /// Log output format
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines
    #[default]
    Text,
    /// One JSON object per line
    Json,
}

impl ServeArgs {
    /// The effective configuration: the file (if any), then environment variables and flags on
    /// top (clap has already let flags win over variables), and validates the result.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            // With `[auth]` compiled too, so that a bad key file or anonymous pattern is
            // reported at its line (at start and on SIGHUP), as `herald config check` does.
            Some(path) => checked_with_auth(path).into_result()?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = Some(dir.clone());
        }
        if !self.redis.is_empty() {
            config
                .cluster
                .get_or_insert_with(|| ClusterConfig { redis: Vec::new() })
                .redis = self.redis.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs `herald config …`, printing to stdout and stderr; returns the process exit code.
pub fn run_config_command(cmd: &ConfigCommand) -> i32 {
    run_config_command_to(cmd, &mut std::io::stdout(), &mut std::io::stderr())
}

/// [`run_config_command`] with the output streams given (for tests). `check` prints
/// `ok: FILE`, or every error as a line `error: …` (with the line number) in line order;
/// `show` prints the effective configuration as TOML. Returns 0 on success, 1 on a
/// configuration error.
pub fn run_config_command_to(cmd: &ConfigCommand, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let result = match cmd {
        ConfigCommand::Check { file } => {
            let errors = check_file(file);
            if !errors.is_empty() {
                for e in &errors {
                    let _ = writeln!(err, "error: {e}");
                }
                return 1;
            }
            Ok(format!("ok: {}\n", file.display()))
        }
        ConfigCommand::Show(args) => args.load_config().map(|config| config.to_toml()),
    };
    match result {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            0
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            1
        }
    }
}

/// Every error of a configuration file, as a server starting with it would meet them: the
/// file's own (syntax, keys, values, validation), then `[auth]` compiled (the key file read
/// and parsed, the anonymous patterns checked).
pub fn check_file(file: &std::path::Path) -> Vec<ConfigError> {
    checked_with_auth(file).errors
}

/// A configuration file checked, then its `[auth]` compiled, each error at its line.
fn checked_with_auth(file: &std::path::Path) -> Checked {
    let mut checked = Checked::file(file);
    let auth = checked.config.as_ref().and_then(|c| c.auth.clone());
    if let Some(auth) = auth {
        for (key, message) in Auth::config_problems(&auth) {
            checked.add(ConfigError::invalid(key, message));
        }
    }
    checked
}

/// Runs `herald bench ARGS…` as `herald-bench ARGS…`: the load generator is a crate of its own
/// (`bench/`), so the server does not carry it, and this alias keeps the command that
/// BENCHMARKS.md and older scripts give. Looks beside this executable first, then on `PATH`;
/// returns the tool's exit code.
pub fn run_bench_alias(args: &[OsString]) -> i32 {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("herald-bench")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from("herald-bench"));
    match std::process::Command::new(&program).args(args).status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "herald bench: the load generator is the herald-bench binary, which is neither \
                 beside this one nor on PATH; build it with `cargo build --release -p herald-bench`"
            );
            127
        }
        Err(e) => {
            eprintln!("herald bench: cannot run {}: {e}", program.display());
            1
        }
    }
}
