//! CLI -> logging -> runtime -> run | check | demo. Exit codes only.

#![allow(clippy::print_stdout, clippy::print_stderr)] // the binary's output

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use fulcrum::cli::{Cli, Command};
use fulcrum::config;

/// mimalloc instead of glibc's malloc: a connection's buffers and tasks are
/// freed and allocated again at every accept, and glibc takes them from its
/// bins the slow way (docs/performance-notebook.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let command = cli.command.clone().unwrap_or(Command::Run);
    let result = match command {
        Command::Check {
            diff,
            against,
            admin,
        } => return check(&cli, diff, against.as_deref(), admin),
        Command::Run => run(&cli),
        Command::Demo => runtime(0).and_then(|rt| {
            let result = rt.block_on(demo());
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
        // h2 warns once per misbehaving connection: a client could fill the
        // log at will. Those connections are counted in metrics instead.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn check(
    cli: &Cli,
    diff: bool,
    against: Option<&std::path::Path>,
    admin: Option<std::net::SocketAddr>,
) -> ExitCode {
    match config::load(&cli.config) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", config.summary());
            if !diff {
                return ExitCode::SUCCESS;
            }
            let running = match against {
                Some(path) => config::load(path)
                    .map(|c| (c, None))
                    .map_err(|e| e.errors().join("\n")),
                None => running_config(&config, admin).map(|(c, s)| (c, Some(s))),
            };
            match running {
                Ok((running, status)) => {
                    println!("changes a reload would make:");
                    print!("{}", fulcrum::diff::diff(&running, &config));
                    if let Some(status) = status {
                        print!("{}", fulcrum::diff::discovered(&status));
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("fulcrum: cannot get the running config to compare with: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            for line in error.errors() {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The config the running instance loaded, from its admin API at `admin`,
/// or at `admin.bind` of `config` (the candidate, which may have moved it:
/// then name the running one). Its relative paths are resolved from the
/// running config's own directory (`config_path` in /status), wherever the
/// candidate is. Also its /status document.
fn running_config(
    config: &config::Config,
    admin: Option<std::net::SocketAddr>,
) -> Result<(config::Config, serde_json::Value), String> {
    let mut addr = admin.or(config.admin.bind).ok_or(
        "admin.bind is \"\"; name the running instance's admin API with --admin, \
         or give the running config's path after --diff",
    )?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let token = config.admin.token.as_deref();
    let text = admin_get(addr, token, "/config").map_err(|e| {
        if admin.is_none() {
            format!(
                "{e} (if the running instance's admin API is elsewhere, name it with --admin ADDR)"
            )
        } else {
            e
        }
    })?;
    let status: serde_json::Value = serde_json::from_str(&admin_get(addr, token, "/status")?)
        .map_err(|e| format!("admin API at {addr}: /status: {e}"))?;
    let path = status["config_path"]
        .as_str()
        .map_or_else(|| config.path.clone(), std::path::PathBuf::from);
    let running = config::parse(&path, &text).map_err(|e| e.errors().join("\n"))?;
    Ok((running, status))
}

/// The body of `GET path` from the admin API at `addr`.
fn admin_get(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    path: &str,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .map_err(|e| format!("admin API at {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("malformed response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "admin API at {addr}: {path} answered {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_owned())
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
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // The main runtime accepts, and with one worker serves too; with more,
    // each worker thread has its own (`workers.rs`), started before the
    // endpoint pools are built.
    let rt = runtime(1)?;
    let threads = if workers > 1 {
        Some(fulcrum::workers::Workers::start(workers).context("cannot start the workers")?)
    } else {
        None
    };
    let result = rt.block_on(async {
        // Before binding: the listeners accept (and "listening" is logged)
        // before `serve` gets to wait for the signal.
        let shutdown = fulcrum::shutdown_signal();
        let mut proxy = fulcrum::Fulcrum::bind(config)?;
        if let Some(threads) = &threads {
            proxy = proxy.workers(std::sync::Arc::clone(threads));
        }
        proxy.serve(shutdown).await;
        Ok(())
    });
    if let Some(threads) = threads {
        threads.stop();
    }
    // A writer stuck on a blocked file (a full pipe, a hung disk) must not
    // keep the process from exiting once the drain is over.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// A current-thread runtime for `workers = 1` and for the main thread (the
/// workers have their own, `workers.rs`): no work-stealing bookkeeping
/// (docs/performance-notebook.md has the measurement). Blocking work (reloads) still
/// goes to the blocking pool. The demo (`workers = 0`) uses a multi-thread
/// runtime.
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if workers > 1 {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// `fulcrum demo`: runs the demo until SIGINT or SIGTERM, after printing
/// what to try.
async fn demo() -> anyhow::Result<()> {
    // Before binding, as in `run`: see `shutdown_signal`.
    let shutdown = fulcrum::shutdown_signal();
    let demo = fulcrum::demo::start().await?;
    let addr = demo.proxy_addr;
    let endpoints: Vec<String> = demo.endpoints.iter().map(ToString::to_string).collect();
    println!(
        "fulcrum demo: proxy on http://{addr}, endpoints {}",
        endpoints.join(", ")
    );
    println!();
    println!("Round robin across three endpoints (each answers with its name):");
    println!("  for i in 1 2 3 4 5 6; do curl -s http://{addr}/; done");
    println!("Smooth weighted round robin, weights 5:1:1 (alpha gets 5 of every 7):");
    println!("  for i in $(seq 7); do curl -s http://{addr}/weighted; done");
    println!("Consistent hashing on the x-user-id header: each user sticks to one endpoint:");
    println!(
        "  for u in alice bob carol dave; do for i in 1 2 3; do curl -s -H \"x-user-id: $u\" http://{addr}/sticky; done; done"
    );
    println!("HTTP/2 without TLS (prior knowledge):");
    println!("  curl -s --http2-prior-knowledge http://{addr}/");
    println!("A request no route matches is not possible here (the default route takes all);");
    println!("see config/examples/ for host and path routing.");
    println!();
    println!("Press Ctrl-C to stop.");
    demo.proxy.serve(shutdown).await;
    Ok(())
}
