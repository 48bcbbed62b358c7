//! The `mca` binary.

use clap::Parser;
use mca::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match cli.command {
        Command::Run(args) => {
            mca::telemetry::init(args.log_format);
            match runtime.block_on(mca::run::run(*args)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                // One line, in the configured format, saying what is wrong.
                Err(error) => {
                    tracing::error!("mca run failed: {error}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match runtime.block_on(mca::config::check(&file)) {
            Ok(summary) => {
                println!("{summary}");
                std::process::ExitCode::SUCCESS
            }
            Err(problems) => {
                for problem in problems {
                    eprintln!("{problem}");
                }
                std::process::ExitCode::FAILURE
            }
        },
    }
}
