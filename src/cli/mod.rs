//! The command line (docs/cli.md): `promote` and its corectl path `p2p promote`, `copy`, the
//! service (`serve`, `pull`), and the tools around it (`status`, `rules check`, `publish`,
//! `verify`).
//! Exit status: 0 success (promoted or already present), 1 failure, 2 usage error.

mod send;
mod service;
mod verify;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config;
use crate::promote::{self, CopyJob};
use crate::registry::auth::{IdentityChoice, Secret};
use crate::registry::copy::Progress;
use crate::registry::{CopyOptions, CopyReport, ImageRef, Transport};

#[derive(Parser, Debug)]
#[command(
    name = "promoter",
    version,
    about = "Promotes container images through a path to production, exactly."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Copy IMAGE from {source-registry}/{source-stage} to {dest-registry}/{dest-stage}.
    Promote(PromoteArgs),
    /// corectl's path to `promote`: `promoter p2p promote` is a drop-in for `corectl p2p promote`.
    P2p {
        #[command(subcommand)]
        command: P2pCommand,
    },
    /// Copy one full reference to another with the same engine (like `skopeo copy --all --preserve-digests`).
    Copy(CopyArgs),
    /// Run the HTTP service (Cloud Run); listens on $PORT (default 8080).
    Serve,
    /// Handle events from a Pub/Sub subscription with StreamingPull, as the service does.
    Pull {
        /// projects/PROJECT/subscriptions/SUBSCRIPTION
        #[arg(long)]
        subscription: String,
        /// Also reconcile on this timer (e.g. 60s), as the deployment's scheduler does for the
        /// service: digests waiting on time are promoted once their time comes.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        reconcile_every: Option<Duration>,
    },
    /// Decide again every digest waiting for an alert to clear or for time, once (as the
    /// `reconcile` event does); prints the answer as JSON.
    Reconcile {
        /// Only digests waiting in this stage.
        #[arg(long)]
        stage: Option<String>,
        /// Only digests of this image (its name below the stage).
        #[arg(long)]
        image: Option<String>,
    },
    /// The whole pipeline (no argument), every version of an image (NAME), or where one digest
    /// is and why (REF: the stages that hold it, its signals, each gate's state).
    Status {
        /// Nothing, an image's NAME below the stages (`my-app`), or a reference in one of the
        /// pipeline's stages (REGISTRY/STAGE/NAME:TAG or @DIGEST).
        image: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Check the promotion attestation of IMAGE: exit 0 when one for its stage verifies with KEY.
    Verify {
        /// The image in its stage (REGISTRY/STAGE/NAME:TAG or @DIGEST).
        image: String,
        /// A PEM file (the PKCS#8 private key or its SPKI public key), or
        /// gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V
        #[arg(long)]
        key: String,
        /// The stage the attestation must be for [default: the image's stage in the rules]
        #[arg(long)]
        stage: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Validate a rules file (default: $PROMOTER_CONFIG, else the embedded default pipeline).
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Publish an event by hand, exactly as the README's `gcloud pubsub topics publish` does.
    Publish {
        /// test-passed, test-failed, soak-complete, alert-firing, alert-clear, approved, a signal
        /// the rules declare (or a type ending in .NAME)
        event_type: String,
        /// The image the event is about (a full reference; a repository for alert events).
        image: String,
        /// projects/PROJECT/topics/TOPIC [default: projects/$GOOGLE_CLOUD_PROJECT/topics/p2p-events]
        #[arg(long)]
        topic: Option<String>,
        /// The stage, for alert events naming a bare image.
        #[arg(long)]
        stage: Option<String>,
    },
    /// Hold promotions into STAGE until an unfreeze (publishes a `freeze` event).
    Freeze {
        stage: String,
        /// Why, for the people whose promotions wait.
        #[arg(long)]
        reason: Option<String>,
        /// projects/PROJECT/topics/TOPIC [default: projects/$GOOGLE_CLOUD_PROJECT/topics/p2p-events]
        #[arg(long)]
        topic: Option<String>,
    },
    /// Release promotions into STAGE held by a freeze (publishes an `unfreeze` event).
    Unfreeze {
        stage: String,
        #[arg(long)]
        reason: Option<String>,
        /// projects/PROJECT/topics/TOPIC [default: projects/$GOOGLE_CLOUD_PROJECT/topics/p2p-events]
        #[arg(long)]
        topic: Option<String>,
    },
    /// Approve IMAGE as yourself: sends `approved` to the service with your ID token.
    Approve {
        /// The image in its stage (REGISTRY/STAGE/NAME:TAG or @DIGEST).
        image: String,
        /// The service's URL (`gcloud run services describe promoter --format='value(status.url)'`).
        #[arg(long)]
        service: String,
        /// An ID token to present [env: PROMOTER_ID_TOKEN; default: from Application Default Credentials]
        #[arg(long, value_parser = secret)]
        token: Option<Secret>,
        /// The token's audience when asking Application Default Credentials [default: --service]
        #[arg(long)]
        audience: Option<String>,
    },
}

/// A command-line value that must never print.
fn secret(text: &str) -> Result<Secret, String> {
    Ok(Secret::new(text))
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Validate the rules and print the effective pipeline.
    Check {
        /// A rules file (YAML).
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum P2pCommand {
    /// Same as `promoter promote`.
    Promote(PromoteArgs),
}

#[derive(Args, Debug)]
struct PromoteArgs {
    /// The image name with its version: NAME:TAG, NAME@DIGEST or NAME:TAG@DIGEST.
    image: String,
    /// Registry of the source stage [env: SOURCE_REGISTRY]
    #[arg(long)]
    source_registry: Option<String>,
    /// Path of the source stage under the registry [env: SOURCE_STAGE]
    #[arg(long)]
    source_stage: Option<String>,
    /// Registry of the destination stage [env: DEST_REGISTRY, else REGISTRY]
    #[arg(long)]
    dest_registry: Option<String>,
    /// Path of the destination stage under the registry [env: DEST_STAGE]
    #[arg(long)]
    dest_stage: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
struct CopyArgs {
    /// Source reference, REGISTRY/PATH[:TAG][@DIGEST].
    source: String,
    /// Destination reference, REGISTRY/PATH[:TAG]. Without a tag, the source's tag is used.
    destination: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// Google credentials JSON for the source side instead of the ambient identity [env: SOURCE_AUTH_OVERRIDE]
    #[arg(long)]
    source_auth_override: Option<PathBuf>,
    /// Google credentials JSON for the destination side [env: DEST_AUTH_OVERRIDE]
    #[arg(long)]
    dest_auth_override: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Show what would be copied; write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// A mistake in how the command was called: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help/version to stdout (exit 0) and mistakes to stderr (exit 2).
            let _ = error.print();
            return ExitCode::from(error.exit_code().clamp(0, 255) as u8);
        }
    };
    // The service logs Cloud Logging JSON (set up by `serve` and `pull`); people get plain text.
    if !matches!(
        cli.command,
        Command::Serve | Command::Pull { .. } | Command::Reconcile { .. }
    ) {
        init_cli_logging();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}

/// Command-line runs log warnings and errors to stderr in plain text; `RUST_LOG` widens that.
fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(config::RUST_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve => service::serve().await,
        Command::Pull {
            subscription,
            reconcile_every,
        } => service::pull(&subscription, reconcile_every).await,
        Command::Reconcile { stage, image } => service::reconcile_once(stage, image).await,
        Command::Rules {
            command: RulesCommand::Check { file },
        } => rules_check(file),
        Command::Status { image, output } => status(image.as_deref(), output).await,
        Command::Verify {
            image,
            key,
            stage,
            output,
        } => return verify::verify(&image, &key, stage, output).await,
        Command::Publish {
            event_type,
            image,
            topic,
            stage,
        } => send::publish(&event_type, send::signal_data(&image, stage), topic).await,
        Command::Freeze {
            stage,
            reason,
            topic,
        } => {
            send::publish(
                crate::events::FREEZE,
                send::stage_data(&stage, reason),
                topic,
            )
            .await
        }
        Command::Unfreeze {
            stage,
            reason,
            topic,
        } => {
            send::publish(
                crate::events::UNFREEZE,
                send::stage_data(&stage, reason),
                topic,
            )
            .await
        }
        Command::Approve {
            image,
            service,
            token,
            audience,
        } => send::approve(&image, &service, token, audience).await,
        command => return run_copy(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn status(image: Option<&str>, output: Output) -> anyhow::Result<()> {
    let service = service::build_reader()?;
    match image {
        None => {
            let view = service.pipeline_view().await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string(&view)?),
                Output::Text => print!("{}", crate::status::overview_text(&view)),
            }
        }
        Some(name) if !crate::rules::names_registry(name) => {
            let (view, versions) = service.image_versions(name).await?;
            match output {
                Output::Json => {
                    let versions: serde_json::Map<String, serde_json::Value> = versions
                        .iter()
                        .map(|(stage, entries)| Ok((stage.clone(), serde_json::to_value(entries)?)))
                        .collect::<Result<_, serde_json::Error>>()?;
                    let mut json = serde_json::to_value(&view)?;
                    json["versions"] = serde_json::Value::Object(versions);
                    println!("{json}");
                }
                Output::Text => print!("{}", crate::status::versions_text(&view, &versions)),
            }
        }
        Some(reference) => {
            let report = crate::status::status(&service, reference).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string(&report)?),
                Output::Text => print!("{}", report.to_text()),
            }
        }
    }
    Ok(())
}

/// A duration as rules files write them: `90s`, `30m`, `1h30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::rules::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration (90s, 30m, 2h, 1h30m)"))
}

fn rules_check(file: Option<PathBuf>) -> anyhow::Result<()> {
    let file = file.or_else(|| config::var(config::PROMOTER_CONFIG).map(PathBuf::from));
    print!("{}", service::pipeline_from(file)?.describe());
    Ok(())
}

async fn run_copy(command: Command) -> ExitCode {
    let (job, output) = match build_job(command) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let transport = match Transport::new(config::insecure_registries()) {
        Ok(transport) => transport,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    let progress = Arc::new(Progress::default());
    let ticker = (output == Output::Text && std::io::stderr().is_terminal())
        .then(|| spawn_progress(progress.clone()));
    let result = promote::copy(&transport, &job, progress).await;
    if let Some(ticker) = ticker {
        ticker.abort();
        eprint!("\r\x1b[2K");
    }
    match result {
        Ok(report) => {
            print_report(&report, output);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "error: promoting {} to {}: {error}",
                job.source, job.destination
            );
            ExitCode::from(1)
        }
    }
}

fn build_job(command: Command) -> Result<(CopyJob, Output), UsageError> {
    match command {
        Command::Promote(args)
        | Command::P2p {
            command: P2pCommand::Promote(args),
        } => promote_job(args),
        Command::Copy(args) => copy_job(args),
        _ => Err(UsageError("not a copy command".into())),
    }
}

/// A flag, else its variable, else a usage error naming both.
fn required(
    flag: Option<String>,
    flag_name: &str,
    variables: &[&str],
) -> Result<String, UsageError> {
    flag.filter(|v| !v.trim().is_empty())
        .or_else(|| variables.iter().find_map(|name| config::var(name)))
        .ok_or_else(|| {
            UsageError(format!(
                "missing --{flag_name}: pass the flag or set {}",
                variables.join(" or ")
            ))
        })
}

fn promote_job(args: PromoteArgs) -> Result<(CopyJob, Output), UsageError> {
    let source_registry = required(
        args.source_registry,
        "source-registry",
        &[config::SOURCE_REGISTRY],
    )?;
    let source_stage = required(args.source_stage, "source-stage", &[config::SOURCE_STAGE])?;
    let dest_registry = required(
        args.dest_registry,
        "dest-registry",
        &[config::DEST_REGISTRY, config::REGISTRY],
    )?;
    let dest_stage = required(args.dest_stage, "dest-stage", &[config::DEST_STAGE])?;
    let join = |registry: &str, stage: &str| {
        format!(
            "{}/{}/{}",
            registry.trim_end_matches('/'),
            stage.trim_matches('/'),
            args.image
        )
    };
    let source = parse_image(&join(&source_registry, &source_stage))?;
    if source.tag.is_none() && source.digest.is_none() {
        return Err(UsageError(format!(
            "image {:?} has no version: give NAME:TAG or NAME@DIGEST",
            args.image
        )));
    }
    let destination = parse_image(&join(&dest_registry, &dest_stage))?;
    // The destination is named by the source's version: its tag (the digest is checked at the source).
    let destination = ImageRef {
        digest: None,
        ..destination
    };
    let output = args.common.output;
    Ok((job(source, destination, args.common), output))
}

fn copy_job(args: CopyArgs) -> Result<(CopyJob, Output), UsageError> {
    let source = parse_image(&args.source)?;
    if source.tag.is_none() && source.digest.is_none() {
        return Err(UsageError(format!(
            "source {:?} has no tag or digest",
            args.source
        )));
    }
    let destination = parse_image(&args.destination)?;
    if destination.digest.is_some() {
        return Err(UsageError(format!(
            "destination {:?} names a digest: the digest is the source's; give a repository or a tag",
            args.destination
        )));
    }
    let destination = ImageRef {
        tag: destination.tag.or_else(|| source.tag.clone()),
        ..destination
    };
    let output = args.common.output;
    Ok((job(source, destination, args.common), output))
}

fn parse_image(text: &str) -> Result<ImageRef, UsageError> {
    ImageRef::try_from(text).map_err(|e| UsageError(format!("bad image reference {text:?}: {e}")))
}

fn job(source: ImageRef, destination: ImageRef, common: CommonArgs) -> CopyJob {
    let identity = |override_flag: Option<PathBuf>,
                    override_variable: &str,
                    token_variable: &str| IdentityChoice {
        access_token: config::var(token_variable).map(Secret::new),
        override_file: override_flag.or_else(|| config::var(override_variable).map(PathBuf::from)),
    };
    CopyJob {
        source,
        destination,
        source_identity: identity(
            common.source_auth_override,
            config::SOURCE_AUTH_OVERRIDE,
            config::SOURCE_ACCESS_TOKEN,
        ),
        destination_identity: identity(
            common.dest_auth_override,
            config::DEST_AUTH_OVERRIDE,
            config::DEST_ACCESS_TOKEN,
        ),
        options: CopyOptions {
            dry_run: common.dry_run,
            ..CopyOptions::default()
        },
    }
}

fn spawn_progress(progress: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(250));
        loop {
            interval.tick().await;
            let done = progress.blobs_done.load(Ordering::Relaxed);
            let total = progress.blobs_total.load(Ordering::Relaxed);
            let megabytes = progress.bytes_copied.load(Ordering::Relaxed) as f64 / 1_048_576.0;
            eprint!("\r\x1b[2K{done}/{total} blobs, {megabytes:.1} MiB copied");
        }
    })
}

fn print_report(report: &CopyReport, output: Output) {
    match output {
        Output::Json => match serde_json::to_string(report) {
            Ok(json) => println!("{json}"),
            Err(error) => eprintln!("error: cannot print the report: {error}"),
        },
        Output::Text => {
            let verb = match (report.dry_run, report.already_present) {
                (_, true) => "already present",
                (true, false) => "would promote",
                (false, false) => "promoted",
            };
            println!("{verb}: {} -> {}", report.source, report.destination);
            println!("  digest     {} ({})", report.digest, report.media_type);
            println!(
                "  manifests  {}   blobs {} (copied {}, mounted {}, skipped {})",
                report.manifests,
                report.blobs_total,
                report.blobs_copied,
                report.blobs_mounted,
                report.blobs_skipped
            );
            println!(
                "  bytes      {}   referrers {}   {} ms",
                report.bytes_copied, report.referrers_copied, report.duration_ms
            );
        }
    }
}
