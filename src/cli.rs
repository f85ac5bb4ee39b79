//! The command line (SPEC §1).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// fulcrum: a Layer-7 HTTP reverse proxy and load balancer.
#[derive(Debug, Parser)]
#[command(name = "fulcrum", version, about)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        short = 'c',
        long = "config",
        env = "FULCRUM_CONFIG",
        default_value = "config/fulcrum.toml",
        global = true
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the config and print a summary; exit 1 with every error if invalid.
    Check {
        /// Also print what a reload would change against the running
        /// instance's config (fetched from its admin API, GET /config), or
        /// against RUNNING_CONFIG when given.
        #[arg(long)]
        diff: bool,
        /// The config to compare against instead of the running instance's.
        #[arg(value_name = "RUNNING_CONFIG", requires = "diff")]
        against: Option<PathBuf>,
        /// The running instance's admin API, when the candidate's
        /// `admin.bind` is not where it listens (a candidate that moves it).
        #[arg(long, value_name = "ADDR", requires = "diff")]
        admin: Option<std::net::SocketAddr>,
    },
    /// Start three demo endpoints on loopback and a proxy in front of them.
    Demo,
}
