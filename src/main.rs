//! CLI -> logging -> runtime -> run | check | demo. Exit codes only.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use fulcrum::cli::{Cli, Command};
use fulcrum::config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let command = cli.command.unwrap_or(Command::Run);
    let result = match command {
        Command::Check => return check(&cli),
        Command::Run => run(&cli),
        Command::Demo => runtime(0).and_then(|rt| {
            let result = rt.block_on(fulcrum::demo::run());
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fulcrum: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FULCRUM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn check(cli: &Cli) -> ExitCode {
    match config::load(&cli.config) {
        Ok(config) => {
            print!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(error) => {
            for line in error.errors() {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = match config::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            for line in error.errors() {
                eprintln!("{line}");
            }
            anyhow::bail!("{} is not valid; nothing started", cli.config.display());
        }
    };
    let rt = runtime(config.server.workers)?;
    let result = rt.block_on(async move {
        let proxy = fulcrum::Fulcrum::bind(config)?;
        proxy.serve(fulcrum::shutdown_signal()).await;
        Ok(())
    });
    // A writer stuck on a blocked file (a full pipe, a hung disk) must not
    // keep the process from exiting once the drain is over.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the runtime")
}
