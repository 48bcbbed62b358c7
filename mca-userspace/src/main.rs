//! The `mca` binary.

use clap::Parser;
use mca::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run(args) => args.worker_threads,
        Command::CheckConfig { .. }
        | Command::Inject(_)
        | Command::Webhook(_)
        | Command::Operator(_)
        | Command::Crds => 1,
    };
    let runtime = runtime(threads).expect("starting the tokio runtime");
    match cli.command {
        Command::Run(args) => {
            let _telemetry = mca::telemetry::init(&args);
            match runtime.block_on(mca::run::run(*args)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                // One line, in the configured format, saying what is wrong.
                Err(error) => {
                    tracing::error!("mca run failed: {error}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Inject(args) => match mca::inject::run(&args.paths, &(&args.injection).into()) {
            Ok((manifests, report)) => {
                print!("{manifests}");
                for line in report {
                    eprintln!("{line}");
                }
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("mca inject: {error}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Webhook(args) => {
            let _telemetry = mca::telemetry::init_logs(args.log_format);
            let options = mca::webhook::Options {
                listen: args.listen,
                tls_cert: args.tls_cert.clone(),
                tls_key: args.tls_key.clone(),
            };
            match runtime.block_on(mca::webhook::run(options, (&args.injection).into())) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("mca webhook failed: {error}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Operator(args) => {
            let _telemetry = mca::telemetry::init_logs(args.log_format);
            let options = mca::operator::Options {
                published: args.config_secret.clone(),
                lease: (args.namespace.clone(), "mca-operator".to_owned()),
                identity: args.identity.clone(),
                webhook: args.webhook_service.as_ref().map(|service| {
                    mca::operator::webhook_tls::Webhook {
                        namespace: args.namespace.clone(),
                        service: service.clone(),
                        secret: format!("{service}-tls"),
                        configuration: args.webhook_configuration.clone(),
                    }
                }),
            };
            let ran = runtime.block_on(async {
                let client = kube::Client::try_default().await?;
                mca::operator::run(client, options).await
            });
            match ran {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("mca operator stopped: {error}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Crds => {
            print!("{}", mca::operator::crds_yaml());
            std::process::ExitCode::SUCCESS
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

/// One thread runs everything (the runtime's and the caller's); more is a pool of workers.
fn runtime(threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads.into());
        builder
    };
    builder.enable_all().build()
}
