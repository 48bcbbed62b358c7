//! The `mca` binary.

use clap::Parser;
use mca::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    mca::run::forbid_dumps();
    let cli = Cli::parse();
    // The commands besides `run` need one thread at most.
    let runtime = || mca::run::runtime(1).expect("starting the tokio runtime");
    match cli.command {
        Command::Run(args) => mca::run::main(*args),
        Command::Inject(args) => {
            let asked = (&args.injection).into();
            let (settings, warning) =
                mca::inject::pod_security::admitted(&asked, args.pod_security);
            if let Some(warning) = warning {
                eprintln!("mca inject: {warning}");
            }
            match mca::inject::run(&args.paths, &settings) {
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
            }
        }
        Command::Webhook(args) => {
            let _telemetry = mca::telemetry::init_logs(args.log_format);
            let options = mca::webhook::Options {
                listen: args.listen,
                tls_cert: args.tls_cert.clone(),
                tls_key: args.tls_key.clone(),
            };
            match runtime().block_on(mca::webhook::run(options, (&args.injection).into())) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("mca webhook failed: {error}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Operator(args) => {
            let _telemetry = mca::telemetry::init_logs(args.log_format);
            let inventory = match inventory(&args) {
                Ok(inventory) => inventory,
                Err(error) => {
                    tracing::error!("mca operator: {error}");
                    return std::process::ExitCode::from(2);
                }
            };
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
                watch_credential_secrets: args.watch_credential_secrets,
                inventory,
            };
            let ran = runtime().block_on(async {
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
        Command::CheckConfig { file, restricted } => {
            let schema = if restricted {
                mca::config::Schema::Restricted
            } else {
                mca::config::Schema::Full
            };
            check_config(&file, schema)
        }
    }
}

/// `mca check-config`: the summary on stdout, or each problem on stderr.
fn check_config(file: &std::path::Path, schema: mca::config::Schema) -> std::process::ExitCode {
    let runtime = mca::run::runtime(1).expect("starting the tokio runtime");
    match runtime.block_on(mca::config::check(file, schema)) {
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
    }
}

/// The inventory `mca operator` was pointed at, with its provider file read and checked.
fn inventory(
    args: &mca::cli::OperatorArgs,
) -> Result<Option<mca::operator::inventory::members::Options>, String> {
    use mca::operator::inventory::{members::Options, provider::Providers};
    let file = &args.clusterprofile_provider_file;
    let namespaces = &args.clusterprofile_namespaces;
    let file = match (namespaces.is_empty(), file) {
        (true, None) => return Ok(None),
        (true, Some(_)) => {
            return Err("--clusterprofile-provider-file needs --clusterprofile-namespace".into());
        }
        (false, None) => {
            return Err("--clusterprofile-namespace needs --clusterprofile-provider-file".into());
        }
        (false, Some(file)) => file,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|error| format!("reading {}: {error}", file.display()))?;
    let providers =
        Providers::parse(&text).map_err(|error| format!("{}: {error}", file.display()))?;
    if args.clusterprofile_consumers.is_empty() {
        tracing::warn!(
            "no --clusterprofile-consumers: routes in no namespace may use the inventory's clusters"
        );
    }
    Ok(Some(Options {
        namespaces: namespaces.clone(),
        consumers: args.clusterprofile_consumers.clone(),
        providers,
    }))
}

/// mimalloc rather than the C library's allocator, as in `mca-sidecar` (which says why):
/// `mca run` is the same sidecar, and the webhook and operator allocate on every request too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
