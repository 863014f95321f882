//! `vellum`: the command-line tool for every party of a Vellum archive.
//!
//! The gateway (`serve`, `quickstart`), the capture client (`capture`), age identities
//! (`keys new`), sealing and opening (`seal`, `open`, flag-compatible with the age
//! CLI), checking log checkpoints and proofs (`verify`), benchmarks and an offline
//! end-to-end `demo`.

mod account;
mod admin;
mod admin_api;
mod admin_bundle;
mod admin_device;
mod auditor;
mod bench;
mod bench_capture;
mod bench_flood;
mod bench_search;
mod capture;
mod case_view;
mod demo;
mod epoch;
mod error;
mod escrow;
mod export;
mod files;
mod keys;
mod keys_api;
mod package;
mod quickstart;
mod sealing;
mod serve;
mod telemetry;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Kind;

/// mimalloc instead of the C library's allocator: allocation was an eighth of the
/// gateway's CPU time under capture load with the latter (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Vellum: a message archive whose gateway cannot read what it keeps.
#[derive(Debug, Parser)]
#[command(name = "vellum", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Age identities, and an auditor's keys at a gateway (register, fetch, share).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Seal a file to age recipients (like `age -e`).
    Seal(sealing::SealArgs),
    /// Open a sealed file with an identity file (like `age -d`).
    Open(sealing::OpenArgs),
    /// Check checkpoints and proofs of a Vellum log offline.
    #[command(subcommand)]
    Verify(verify::VerifyCommand),
    /// Measure the archive (see docs/performance.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the gateway configured by a TOML file (docs/operations.md).
    Serve {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Initialise an embedded deployment on first run, then serve it.
    Quickstart {
        /// The deployment's folder (reused when it exists).
        #[arg(long, value_name = "DIR", default_value = "vellum-data")]
        data: PathBuf,
        /// Address to listen on (default 127.0.0.1:8080, or the configured one).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// An auditor's work at a gateway: sign in, search, cases, fetch, open.
    #[command(subcommand)]
    Auditor(auditor::AuditorCommand),
    /// A records officer's decisions on auditors' access requests.
    #[command(subcommand)]
    Approver(auditor::ApproverCommand),
    /// Your own account at a gateway: replace a password, set up the second factor,
    /// sign out.
    #[command(subcommand)]
    Account(account::AccountCommand),
    /// Accounts and capture devices: enrollment bundles through a running gateway, accounts
    /// there or on a deployment's database, device bindings on the database.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// A new epoch identity, wrapped to the auditors and the escrow recipient, and its
    /// keyring statement (run on an auditor's machine).
    #[command(subcommand)]
    Epoch(EpochCommand),
    /// Sign keyring statements with the organisation key (whole or from shares), and
    /// publish them to a gateway.
    #[command(subcommand)]
    Keyring(KeyringCommand),
    /// Key escrow, offline: the key ceremony and M-of-N recovery.
    #[command(subcommand)]
    Escrow(escrow::EscrowCommand),
    /// Capture client: enroll a device, send messages, show the spool.
    #[command(subcommand)]
    Capture(capture::CaptureCommand),
    /// Run the whole capture path locally: keys, keyring, seal, sign, log, receipts, open.
    Demo {
        /// Folder to write the demo's files into (must not exist yet).
        #[arg(long, default_value = "demo-out")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Appends per second and latency of the storage path, clients excluded.
    Storage(bench::StorageArgs),
    /// Capture throughput over HTTP with and without a flood of logins.
    LoginFlood(bench_flood::FloodArgs),
    /// Verified capture receipts per second over HTTP against a gateway process, beside
    /// a naive baseline and the CPU floor.
    Capture(bench_capture::CaptureArgs),
    /// First-page latency of record search over a generated archive of millions.
    Search(bench_search::SearchArgs),
}

#[derive(Debug, Subcommand)]
enum EpochCommand {
    /// Make the next epoch's identity, its wrapped copies and its keyring statement.
    New(epoch::EpochArgs),
}

#[derive(Debug, Subcommand)]
enum KeyringCommand {
    /// Sign a keyring statement with the organisation key.
    Sign(epoch::SignArgs),
    /// Publish a signed keyring and its wrapped copies to a running gateway.
    Publish(keys_api::PublishArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate an X25519 age identity, written exactly as age-keygen writes one.
    New {
        /// Write the identity to this file (mode 0600; never overwritten). Default: stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    #[command(flatten)]
    Api(keys_api::KeysApiCommand),
}

/// The status of a process whose output pipe closed (as a SIGPIPE death reports it).
const CLOSED_PIPE: u8 = 141;

fn main() -> ExitCode {
    // `vellum … | head`: a print to a closed pipe ends the command quietly, never with
    // a panic message.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if message.is_some_and(|m| m.contains("Broken pipe")) {
            std::process::exit(i32::from(CLOSED_PIPE));
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Keys(KeysCommand::New { output }) => keys::new(output.as_deref()),
        Command::Seal(args) => sealing::seal(&args),
        Command::Open(args) => sealing::open(&args),
        Command::Verify(command) => verify::run(&command),
        Command::Bench(BenchCommand::Storage(args)) => bench::storage(&args),
        Command::Bench(BenchCommand::LoginFlood(args)) => bench_flood::login_flood(&args),
        Command::Bench(BenchCommand::Capture(args)) => bench_capture::capture(&args),
        Command::Bench(BenchCommand::Search(args)) => bench_search::search(&args),
        Command::Demo { dir } => demo::run(&dir),
        Command::Serve { config } => serve::Config::load(&config).and_then(serve::run),
        Command::Quickstart { data, listen } => quickstart::run(&data, listen),
        Command::Capture(command) => capture::run(&command),
        Command::Escrow(command) => escrow::run(&command),
        Command::Epoch(EpochCommand::New(args)) => epoch::new_epoch(&args),
        Command::Keyring(KeyringCommand::Sign(args)) => epoch::sign(&args),
        Command::Keyring(KeyringCommand::Publish(args)) => keys_api::publish(&args),
        Command::Keys(KeysCommand::Api(command)) => keys_api::run(&command),
        Command::Account(command) => account::run(&command),
        Command::Admin(command) => admin::run(&command),
        Command::Auditor(command) => auditor::run(&command),
        Command::Approver(command) => auditor::run_approver(&command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == Kind::Closed => ExitCode::from(CLOSED_PIPE),
        Err(err) => {
            eprintln!("vellum: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
