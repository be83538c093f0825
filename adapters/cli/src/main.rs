//! `qdn-relay`: run the relay on an embedded SQLite store, post signed test
//! webhooks to it, read a dispatch's status.
//!
//! ```text
//! qdn-relay serve     # QDN_TWILIO_NUMBER, RELAY_CHAIN, ... (see --help)
//! qdn-relay inject text --from +16195550100 --body "Need a dumpster"
//! qdn-relay status K7
//! ```

mod dev;
#[cfg(feature = "dynamo")]
mod dynamo;
mod inject;
mod policy;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// mimalloc instead of the system allocator: glibc's malloc returning
/// memory from its per-thread arenas (`madvise`, with TLB shootdowns to the
/// other cores) was about 5% of the server's CPU under load (BENCHMARKS.md,
/// "HTTP server").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A cascading SMS relay with escalation on a Twilio number.
#[derive(Parser, Debug)]
#[command(name = "qdn-relay", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the relay: Twilio webhooks, the dashboard routes, the sweeper.
    Serve(Box<serve::ServeArgs>),
    /// Post a correctly signed webhook to a running relay (like a text from
    /// a customer, a dispatcher's reply, or a status callback).
    Inject(inject::InjectArgs),
    /// Print a dispatch (by id, tag, or inbound MessageSid).
    Status(StatusArgs),
    /// Escalation policy files: `policy check FILE` validates one and
    /// previews who would be paged when.
    Policy(policy::PolicyArgs),
    /// DynamoDB store administration (create-table).
    #[cfg(feature = "dynamo")]
    Dynamo(dynamo::DynamoArgs),
}

/// Where a running relay is and how to talk to it.
#[derive(Args, Debug, Clone)]
struct Target {
    /// The relay's base URL (default: the dev file's, else http://127.0.0.1:8080).
    #[arg(long, env = "RELAY_URL", global = true)]
    url: Option<String>,
    /// The dev file a dry-run server wrote (tokens, line, chain).
    #[arg(long, env = "RELAY_DEV_FILE", default_value = dev::DEFAULT_DEV_FILE, global = true)]
    dev_file: PathBuf,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// A dispatch id, an open dispatch's tag (K7), a customer number, or an inbound MessageSid.
    job: String,
    #[command(flatten)]
    target: Target,
    /// The dashboard token (default: the dev file's).
    #[arg(long, env = "RELAY_DASHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the raw status JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Inject(args) => inject::run(args).await,
            Command::Status(args) => inject::status(args).await,
            Command::Policy(args) => policy::run(args),
            #[cfg(feature = "dynamo")]
            Command::Dynamo(args) => dynamo::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
