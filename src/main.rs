//! The `ccr-syncer` binary: parse flags, load the config, set up logging,
//! write the pid file, then run the service until SIGINT or SIGTERM; or
//! `ccr-syncer secret-key generate PATH`, which writes a new key file; or
//! `ccr-syncer ctl …`, the command-line client.

use ccr_syncer::config::{Config, ServiceArgs};
use ccr_syncer::{app, logging};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Parser)]
#[command(
    name = "ccr-syncer",
    version,
    about = "Cross-cluster replication for MySQL-protocol databases"
)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The other roles, each with its own command line.
#[derive(Debug, Subcommand)]
enum Command {
    /// A command-line client of a running service: create, list, status,
    /// progress, pause, resume, skip, resync, verify, repair, delete, watch, stat.
    Ctl(Box<ccr_syncer::ctl::CtlArgs>),
    /// The Galera minder: dbserver, arbitrator, notify, command, config
    /// (see doc/minder.md).
    Minder(Box<ccr_syncer::minder::MinderArgs>),
    /// The node agent of one machine, driven by the cluster manager
    /// (`POST /`, seed 000; token from CCR_AGENT_TOKEN).
    Agent(Box<ccr_syncer::agent::AgentArgs>),
    /// Manage the key file that encrypts the store's passwords.
    SecretKey {
        #[command(subcommand)]
        action: SecretKeyAction,
    },
}

#[derive(Debug, Subcommand)]
enum SecretKeyAction {
    /// Writes 32 random bytes to PATH (mode 0600); refuses to overwrite a file.
    Generate { path: PathBuf },
}

fn main() -> ExitCode {
    // Before any thread exists.
    ccr_syncer::config::cap_driver_buffers();
    ccr_syncer::config::cap_malloc_arenas();
    let mut cli = Cli::parse();
    if let Some(Command::Minder(args)) = cli.command.take_if(|c| matches!(c, Command::Minder(_))) {
        let _ = ccr_syncer::logging::init("info", None);
        return ccr_syncer::minder::main(*args);
    }
    if let Some(Command::Agent(args)) = cli.command.take_if(|c| matches!(c, Command::Agent(_))) {
        let _ = ccr_syncer::logging::init("info", None);
        return ccr_syncer::agent::main(*args);
    }
    if matches!(cli.command, Some(Command::Ctl(_))) {
        if let Some(Command::Ctl(args)) = cli.command.take() {
            return ccr_syncer::ctl::main(*args);
        }
    }
    if let Some(Command::SecretKey {
        action: SecretKeyAction::Generate { path },
    }) = &cli.command
    {
        return match ccr_syncer::secret::generate_key_file(path) {
            Ok(()) => {
                println!("wrote a new key to {} (mode 0600); keep a copy: the store's passwords cannot be read without it", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ccr-syncer: {e}");
                ExitCode::from(2)
            }
        };
    }
    let config = match Config::load(&cli.service) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ccr-syncer: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = logging::init(&config.log_level, config.log_dir.as_deref()) {
        eprintln!("ccr-syncer: cannot open the log: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ccr-syncer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("ccr-syncer: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", config.host, config.port))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    let pid_file = config.pid_file.clone();
    if let Some(path) = &pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
    }
    let result = app::run(config, listener, shutdown)
        .await
        .map_err(|e| e.to_string());
    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    result
}
