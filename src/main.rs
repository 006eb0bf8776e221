//! The `pgvigil` command: parse arguments, load the config, set up telemetry, run the daemon
//! until SIGINT or SIGTERM, reloading the config at SIGHUP.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pgvigil::Config;

/// Exit status for an unusable configuration (distinct from runtime failures).
const EXIT_CONFIG: u8 = 2;

/// glibc's malloc tuned for a long-running daemon, before any thread exists.
///
/// Every poll allocates and frees megabytes of short-lived buffers (the rows of
/// pg_stat_statements, the snapshot being built, `/metrics` bodies). With glibc's defaults a
/// freed mmap'd block raises the mmap threshold (up to 32 MB), so the next such buffers are
/// carved from the heap arenas instead and their pages are kept after free: resident memory
/// settles well above the live heap, and more so per target in a fleet. A fixed 128 KiB
/// threshold returns every large buffer to the kernel when it is dropped, a 128 KiB trim
/// threshold gives back the free top of the heap, and two arenas stop each worker and blocking
/// thread from keeping a pool of its own. Measured in BENCHMARKS.md ("Memory: glibc malloc
/// settings"). An operator's `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` malloc setting wins: those parameters are left alone.
///
/// Returns whether pgvigil set the trim threshold (the operator set none), and so also trims
/// the heap itself ([`start_trimming`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() -> bool {
    const SETTINGS: [(libc::c_int, libc::c_int, &str); 3] = [
        (libc::M_MMAP_THRESHOLD, 128 * 1024, "MALLOC_MMAP_THRESHOLD_"),
        (libc::M_TRIM_THRESHOLD, 128 * 1024, "MALLOC_TRIM_THRESHOLD_"),
        (libc::M_ARENA_MAX, 2, "MALLOC_ARENA_MAX"),
    ];
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if tunables.contains("glibc.malloc.") {
        return false;
    }
    let mut trims = false;
    for (param, value, var) in SETTINGS {
        if std::env::var_os(var).is_none() {
            // SAFETY: mallopt only sets an allocator parameter (it takes glibc's own lock and
            // returns 0 for a value it rejects, which leaves the default); no pointer is passed.
            unsafe { libc::mallopt(param, value) };
            trims |= param == libc::M_TRIM_THRESHOLD;
        }
    }
    trims
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() -> bool {
    false
}

/// How often the daemon hands glibc's free pages back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Every [`TRIM_EVERY`], `malloc_trim(0)` from a thread of its own (`pgvigil-trim`).
///
/// The trim threshold only gives back the free *top* of a heap. Freed memory in the middle
/// (the buffers of one poll, interleaved with snapshots that live on) stays resident until
/// something reuses it, and with hundreds of targets polling at different moments the free
/// holes add up to a good part of the resident memory. `malloc_trim` releases every whole
/// free page of every arena (`madvise(MADV_DONTNEED)`), walking the free chunks while it
/// holds each arena's lock (7–19 ms per call at 500 targets, so a thread allocating from
/// that arena meanwhile waits up to that long); pages given back and used again cost a page
/// fault.
/// Measured in BENCHMARKS.md (part 10). Started only when [`tune_malloc`] set the trim
/// threshold: an operator's `MALLOC_TRIM_THRESHOLD_` (or malloc `GLIBC_TUNABLES`) wins here too.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn start_trimming() {
    let trim = || {
        loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: malloc_trim takes each arena's lock itself and only returns free pages
            // to the kernel; no pointer is passed.
            unsafe { libc::malloc_trim(0) };
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("pgvigil-trim".into())
        .spawn(trim)
    {
        eprintln!("pgvigil: cannot start the malloc trim thread ({e}); memory is not trimmed");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn start_trimming() {}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "PostgreSQL observability sidecar: metrics, alerts and import-integrity checks"
)]
struct Cli {
    /// Config file (TOML), or a directory of *.toml fragments merged in name order. Without
    /// one, pgvigil watches the database named by DATABASE_URL or the libpq environment
    /// (PGHOST, PGPORT, PGUSER, PGDATABASE).
    #[arg(long, short, env = "PGVIGIL_CONFIG", global = true)]
    config: Option<PathBuf>,

    /// Listen address for /metrics and the API (host:port), overriding [server] listen.
    #[arg(long, env = "PGVIGIL_LISTEN", global = true)]
    listen: Option<std::net::SocketAddr>,

    /// A Prometheus exporter-toolkit web config file (TLS, basic auth, headers), overriding
    /// [server] web_config_file.
    #[arg(
        long = "web.config.file",
        env = "PGVIGIL_WEB_CONFIG_FILE",
        global = true
    )]
    web_config_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate a config file and exit: 0 if it is valid, 2 with FILE:LINE:COL and the fix if not.
    CheckConfig {
        /// The config file (or directory of fragments) to check.
        file: PathBuf,
    },
    /// Connect as the configured role (every target and PgBouncer of --config, or DSN) and
    /// print, per collector and per database, what it can read and the GRANT (for a PgBouncer,
    /// the pgbouncer.ini line) each missing piece needs. Exit status 0 if nothing is missing,
    /// 1 if something is, 2 if a source cannot be reached or logged into, or the config is
    /// invalid.
    CheckPrivileges {
        /// A DSN to check instead of the config's targets.
        dsn: Option<String>,
    },
    /// One-shot schema-guard report: connect (every target and watched database of --config,
    /// or DSN), run every check (unused, duplicate and missing foreign-key indexes, sequences
    /// running out, ...) and print the findings by severity with the SQL to act on. Exit
    /// status 0, or 2 if a target cannot be reached or the config is invalid.
    Advise {
        /// A DSN to report on instead of the config's targets.
        dsn: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let trims = tune_malloc();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file, cli.web_config_file),
        Some(Command::CheckPrivileges { dsn }) => check_privileges(cli.config, dsn),
        Some(Command::Advise { dsn, json }) => advise(cli.config, dsn, json),
        Some(Command::Run) | None => {
            let source = pgvigil::app::ConfigSource {
                path: cli.config,
                listen: cli.listen,
                web_config_file: cli.web_config_file,
            };
            let config = match source.load() {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("pgvigil: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if trims {
                start_trimming();
            }
            match run(config, source) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgvigil: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check_config(file: &std::path::Path, web_config_file: Option<PathBuf>) -> ExitCode {
    match pgvigil::app::load(file) {
        Ok(mut config) => {
            if let Some(web) = web_config_file {
                if let Err(e) = config.server.web.set_config_file(web) {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
            // The one setting that can be checked only by trying: may pgvigil write there?
            if let Some(dir) = &config.alerts.state_dir {
                if let Err(e) = pgvigil::alert::persist::StateStore::new(dir).probe() {
                    eprintln!("{}: {e}", file.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
            // PgBouncer instances are targets too (their name is the `target` label).
            let names: Vec<&str> = config
                .targets
                .iter()
                .map(|t| t.name.as_str())
                .chain(config.pgbouncers.iter().map(|b| b.name.as_str()))
                .collect();
            println!(
                "{}: ok ({} target{}: {})",
                file.display(),
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The targets of a DSN (one, named `dsn`) or of the config; the error is printed.
fn targets(
    config: Option<PathBuf>,
    dsn: Option<String>,
) -> Result<Vec<pgvigil::config::TargetConfig>, ExitCode> {
    sources(config, dsn).map(|(targets, _)| targets)
}

/// The PostgreSQL targets and PgBouncer instances of `--config`, or the one target of `dsn`;
/// the error is printed.
fn sources(
    config: Option<PathBuf>,
    dsn: Option<String>,
) -> Result<
    (
        Vec<pgvigil::config::TargetConfig>,
        Vec<pgvigil::config::PgbouncerConfig>,
    ),
    ExitCode,
> {
    match dsn {
        Some(dsn) => {
            let env = pgvigil::config::LibpqEnv::from_process();
            match pgvigil::config::ConnectionSpec::parse(&dsn, &env) {
                Ok(spec) => Ok((
                    vec![pgvigil::config::TargetConfig::new("dsn", spec)],
                    Vec::new(),
                )),
                Err(e) => {
                    eprintln!("pgvigil: {e}");
                    Err(ExitCode::from(EXIT_CONFIG))
                }
            }
        }
        None => {
            let source = pgvigil::app::ConfigSource {
                path: config,
                listen: None,
                web_config_file: None,
            };
            match source.load() {
                Ok(config) => Ok((
                    config.targets.iter().map(|t| (*t).clone()).collect(),
                    config.pgbouncers.clone(),
                )),
                Err(e) => {
                    eprintln!("pgvigil: {e}");
                    Err(ExitCode::from(EXIT_CONFIG))
                }
            }
        }
    }
}

/// A runtime for the one-shot commands; the error is printed.
fn one_shot_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("pgvigil: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn advise(config: Option<PathBuf>, dsn: Option<String>, json: bool) -> ExitCode {
    let targets = match targets(config, dsn) {
        Ok(targets) => targets,
        Err(code) => return code,
    };
    let runtime = match one_shot_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let advice = runtime.block_on(pgvigil::advice::report::advise(&targets));
    if json {
        match serde_json::to_string_pretty(&advice) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("pgvigil: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", advice.text());
    }
    if advice.reached_everything() {
        ExitCode::SUCCESS
    } else {
        for t in &advice.targets {
            if let Some(e) = &t.error {
                eprintln!("pgvigil: target {}: {e}", t.target);
            }
        }
        ExitCode::from(EXIT_CONFIG)
    }
}

fn check_privileges(config: Option<PathBuf>, dsn: Option<String>) -> ExitCode {
    let (targets, bouncers) = match sources(config, dsn) {
        Ok(sources) => sources,
        Err(code) => return code,
    };
    let runtime = match one_shot_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // Every source is checked; the worst outcome is the exit status.
    let mut missing = false;
    let mut unreachable = false;
    let mut print = |result: Result<Vec<pgvigil::privileges::Check>, _>| match result {
        Ok(checks) => {
            for check in &checks {
                println!("  {}", check.line());
            }
            missing |= checks.iter().any(|c| c.missing.is_some());
        }
        Err(e) => {
            println!("  {e}");
            unreachable = true;
        }
    };
    for target in &targets {
        println!("target {} ({}):", target.name, target.connection.describe());
        print(runtime.block_on(pgvigil::privileges::check_target(target)));
    }
    for bouncer in &bouncers {
        println!(
            "pgbouncer {} ({}):",
            bouncer.name,
            bouncer.connection.describe()
        );
        print(runtime.block_on(pgvigil::privileges::pgbouncer::check_bouncer(bouncer)));
    }
    if unreachable {
        ExitCode::from(EXIT_CONFIG)
    } else if missing {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run(config: Config, source: pgvigil::app::ConfigSource) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let _telemetry = pgvigil::telemetry::init(&config.logging, &config.telemetry)?;
        let reloader = pgvigil::app::Reloader::new(source);
        reload_on_sighup(reloader.trigger());
        pgvigil::app::run_with(config, Some(reloader), shutdown_signal()).await?;
        Ok(())
    })
}

/// Reload the configuration at every SIGHUP (the daemon logs the outcome).
fn reload_on_sighup(trigger: pgvigil::app::ReloadTrigger) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload with POST /-/reload");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = trigger.reload().await;
        }
    });
    #[cfg(not(unix))]
    let _ = trigger;
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what systemd, Docker and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
