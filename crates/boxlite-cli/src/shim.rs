//! `boxlite-shim --home DIR --box ID [--channel-only]`: the per-box shim (owner of the
//! agent channel, and the box's monitor). All of its logic lives in
//! `boxlite::monitor`; this is only the process around it. Its log is the box's
//! `monitor.log` (stdout and stderr), written at info level.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "boxlite-shim",
    about = "Monitor one boxlite box (started by the runtime)"
)]
struct Args {
    #[arg(long, value_name = "DIR")]
    home: PathBuf,
    #[arg(long = "box", value_name = "ID")]
    id: String,
    /// Serve the agent channel only (an image build: no box row, no health checks).
    #[arg(long)]
    channel_only: bool,
}

fn main() -> ExitCode {
    // The shim relays every exec's environment and output: no core dumps, and no ptrace
    // or /proc/<pid>/mem by other processes of this user.
    // SAFETY: prctl with constant arguments; it affects only this process.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("boxlite-shim: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(boxlite::run_box_monitor(
        &args.home,
        &args.id,
        args.channel_only,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(box_id = %args.id, "monitor failed: {}", boxlite::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
