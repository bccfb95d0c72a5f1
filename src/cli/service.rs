//! `promoter serve` and `promoter pull`: the service, from the environment (Cloud Run style).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{self, var};
use crate::evidence::StateRepository;
use crate::http::push_auth::{PushAuth, PushAuthMode};
use crate::http::{self, AppState, ack};
use crate::promote::Service;
use crate::publish::{self, EventPublisher};
use crate::pull::{Disposition, PullWorker, ReceivedMessage};
use crate::registry::Transport;
use crate::registry::auth::IdentityChoice;
use crate::rules::Pipeline;
use crate::{events, telemetry};

/// How long in-flight promotions may take to finish after SIGTERM. Cloud Run kills the instance
/// 10 s after SIGTERM; what is not done by then is redelivered by Pub/Sub.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(9);

/// The pipeline: `PROMOTER_CONFIG`'s rules file, else the embedded default from the environment.
pub fn load_pipeline() -> anyhow::Result<Pipeline> {
    pipeline_from(var(config::PROMOTER_CONFIG).map(std::path::PathBuf::from))
}

/// The pipeline of a rules file, else the embedded default from the environment.
pub fn pipeline_from(rules_file: Option<std::path::PathBuf>) -> anyhow::Result<Pipeline> {
    match rules_file {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading rules file {}", path.display()))?;
            Pipeline::from_yaml(&text).with_context(|| format!("rules file {}", path.display()))
        }
        None => Pipeline::embedded_default(var)
            .context("embedded default pipeline (set PROMOTER_CONFIG to use a rules file)"),
    }
}

/// Builds the orchestrator from the environment.
pub async fn build_service() -> anyhow::Result<Service> {
    let pipeline = load_pipeline()?;
    let transport = Transport::new(config::insecure_registries())?;
    let publisher = match var(config::PROMOTER_EVENTS_TOPIC) {
        Some(topic) => Some(
            EventPublisher::from_env(&topic)
                .await
                .with_context(|| format!("{} = {topic}", config::PROMOTER_EVENTS_TOPIC))?,
        ),
        None => None,
    };
    let state = state_repository(&pipeline)?;
    let attester = attester(&pipeline)?;
    Ok(Service::new(
        pipeline,
        transport,
        IdentityChoice::default(),
        publisher,
        publish::event_source(),
        state,
    )
    .with_attester(attester))
}

/// The attester `PROMOTER_ATTESTATION_KEY` asks for, read once here: a bad value, or a local
/// key that does not parse, stops start-up naming the variable. The policy it attests to is
/// the effective pipeline — exactly what `promoter rules check` prints, so anyone can recompute
/// its digest.
fn attester(pipeline: &Pipeline) -> anyhow::Result<Option<crate::attest::Attester>> {
    use sha2::Digest as _;
    let settings =
        crate::attest::Settings::from_env().map_err(|problem| anyhow::anyhow!(problem))?;
    let uri = match var(config::PROMOTER_CONFIG) {
        Some(path) => {
            let path = std::path::Path::new(&path);
            let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            format!("file://{}", absolute.display())
        }
        None => "promoter:embedded-default-pipeline".to_owned(),
    };
    let policy = crate::attest::Policy {
        uri,
        sha256: hex::encode(sha2::Sha256::digest(pipeline.describe().as_bytes())),
    };
    // Binary Authorization attests where the path ends: the stages no promotion leaves.
    let last_stages: Vec<String> = pipeline
        .stages()
        .iter()
        .filter(|stage| {
            pipeline
                .promotions_from(stage.name().as_str())
                .next()
                .is_none()
        })
        .map(|stage| stage.name().to_string())
        .collect();
    let attester =
        crate::attest::Attester::from_settings(&settings, publish::event_source(), policy)
            .with_context(|| {
                format!(
                    "{} (the promotion attestation key)",
                    config::PROMOTER_ATTESTATION_KEY
                )
            })?;
    Ok(attester.map(|attester| attester.with_binauthz_stages(last_stages)))
}

/// `PROMOTER_STATE_REPOSITORY`, else `{first stage's registry}/promoter-state`.
pub fn state_repository(pipeline: &Pipeline) -> anyhow::Result<StateRepository> {
    let text = match var(config::PROMOTER_STATE_REPOSITORY) {
        Some(text) => text,
        None => {
            let first = pipeline
                .stages()
                .first()
                .ok_or_else(|| anyhow::anyhow!("the pipeline has no stages"))?;
            format!("{}/promoter-state", first.registry())
        }
    };
    StateRepository::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config::PROMOTER_STATE_REPOSITORY))
}

fn push_auth_from_env() -> anyhow::Result<PushAuth> {
    let mode: PushAuthMode = var(config::PROMOTER_PUSH_AUTH)
        .unwrap_or_else(|| "cloud-run".into())
        .parse()?;
    let emails = var(config::PROMOTER_PUSH_SERVICE_ACCOUNTS)
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(PushAuth::new(
        mode,
        var(config::PROMOTER_PUSH_AUDIENCE),
        emails,
        var(config::PROMOTER_JWKS_URL),
    )?)
}

/// `promoter serve`: listens on `$PORT` until SIGTERM or Ctrl-C. `PORT=0` takes any free port;
/// the "serving" log line names the one bound.
pub async fn serve() -> anyhow::Result<()> {
    telemetry::init_service_logging(var(config::GOOGLE_CLOUD_PROJECT), telemetry::LogTo::Stdout);
    let port: u16 = match var(config::PORT) {
        Some(port) => port
            .parse()
            .with_context(|| format!("PORT={port} is not a port number"))?,
        None => 8080,
    };
    // Read once, here: a bad value stops the service before it listens, not at the first request.
    let read_timeout = var(config::PROMOTER_READ_TIMEOUT);
    let settings = http::ServeSettings::from_read_timeout(read_timeout.as_deref())
        .map_err(|problem| anyhow::anyhow!("{} = {problem}", config::PROMOTER_READ_TIMEOUT))?;
    let push_auth = push_auth_from_env()?;
    let service = build_service().await?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("cannot listen on port {port}"))?;
    // The port bound, not the one asked for: they differ for PORT=0, and whoever started the
    // process (the tests, bench/, scripts/demo) reads this line to learn where to connect.
    let port = listener
        .local_addr()
        .context("the address the service listens on")?
        .port();
    tracing::info!(
        port,
        push_auth = %push_auth.mode(),
        read_timeout_ms = u64::try_from(settings.read_timeout.as_millis()).unwrap_or(u64::MAX),
        "serving"
    );
    let state = AppState::new(Arc::new(service), Arc::new(push_auth));
    let publisher = state.service.publisher.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, state, settings, async move {
        let _ = stop_rx.await;
    }));
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(());
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(result) => result.context("server task")?.context("server")?,
        Err(_) => {
            tracing::warn!("in-flight requests did not finish in time; Pub/Sub will redeliver them")
        }
    }
    if let Some(publisher) = publisher {
        publisher.flush().await;
    }
    Ok(())
}

/// A service that only reads (`promoter status`): no publisher.
pub fn build_reader() -> anyhow::Result<Service> {
    let pipeline = load_pipeline()?;
    let transport = Transport::new(config::insecure_registries())?;
    let state = state_repository(&pipeline)?;
    Ok(Service::new(
        pipeline,
        transport,
        IdentityChoice::default(),
        None,
        publish::event_source(),
        state,
    ))
}

/// `promoter reconcile`: one reconcile, as the scheduled event would run it; the answer on
/// stdout as JSON. A transient failure exits 1 (run it again).
pub async fn reconcile_once(stage: Option<String>, image: Option<String>) -> anyhow::Result<()> {
    telemetry::init_service_logging(var(config::GOOGLE_CLOUD_PROJECT), telemetry::LogTo::Stderr);
    let service = build_service().await?;
    let request = manual_reconcile(stage, image);
    let answer = service.reconcile(&request).await;
    if let Some(publisher) = &service.publisher {
        publisher.flush().await;
    }
    let answer = answer?;
    println!("{}", serde_json::to_string(&answer)?);
    Ok(())
}

/// A reconcile asked from this process (the command line, or `pull`'s timer).
fn manual_reconcile(stage: Option<String>, image: Option<String>) -> events::Reconcile {
    events::Reconcile {
        event_id: format!("{:032x}", rand::random::<u128>()),
        event_source: publish::event_source(),
        event_type: events::RECONCILE.to_owned(),
        stage,
        image,
    }
}

/// `promoter pull --subscription ...`: the same handling as a StreamingPull worker, and with
/// `--reconcile-every` a reconcile on a timer beside it.
pub async fn pull(subscription: &str, reconcile_every: Option<Duration>) -> anyhow::Result<()> {
    telemetry::init_service_logging(var(config::GOOGLE_CLOUD_PROJECT), telemetry::LogTo::Stdout);
    let service = Arc::new(build_service().await?);
    let worker = PullWorker::from_env().await?;
    tracing::info!(subscription, "pulling");
    let timer = reconcile_every.map(|every| {
        let service = service.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let request = manual_reconcile(None, None);
                match service.reconcile(&request).await {
                    Ok(answer) => tracing::info!(
                        event_id = request.event_id,
                        decision = answer.decision.as_str(),
                        promoted = answer.promoted.as_ref().map_or(0, Vec::len),
                        waiting = answer.waiting.unwrap_or_default(),
                        reason = answer.reason,
                        "decision"
                    ),
                    Err(error) => tracing::warn!(event_id = request.event_id, reason = %error, "reconcile failed; the next tick tries again"),
                }
            }
        })
    });
    let handler_service = service.clone();
    let summary = worker
        .run(
            subscription,
            move |message: ReceivedMessage| {
                let service = handler_service.clone();
                async move { handle_pulled(&service, message).await }
            },
            shutdown_signal(),
        )
        .await;
    if let Some(timer) = timer {
        timer.abort();
    }
    let summary = summary?;
    tracing::info!(
        received = summary.received,
        acked = summary.acked,
        nacked = summary.nacked,
        "stopped pulling"
    );
    if let Some(publisher) = &service.publisher {
        publisher.flush().await;
    }
    Ok(())
}

async fn handle_pulled(service: &Service, message: ReceivedMessage) -> Disposition {
    let parsed = events::parse_pulled_message(
        &message.message_id,
        &message.subscription,
        message.publish_time,
        message.attributes,
        &message.data,
        service.vocabulary(),
    );
    ack::reply(&http::handle(service, parsed).await).disposition()
}

/// SIGTERM (Cloud Run stopping the instance) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
