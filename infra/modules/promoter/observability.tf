# Observability: log-based metrics from promoter's log lines, a dead-letter backlog alert and a
# dashboard that charts them.
#
# promoter logs one Cloud Logging JSON line per decision (src/http/mod.rs, log_decision):
#   {"severity":"INFO","message":"decision","eventId":..,"eventType":..,"image":..,"digest":..,
#    "fromStage":..,"toStage":..,"decision":"promoted|already-promoted|pending|recorded|rejected|
#    ignored|reconciled","reason":..,"skipped":N,"superseded":N,"durationMs":N,
#    "logging.googleapis.com/trace":..}
# plus lines with a "decision" but another message: "event ignored" (not a promoter event),
# "malformed event" (rejected) and "transient failure; ..." (decision "retry", redelivered).
# Each promotion, whichever event decided it (a signal, a reconcile, an unfreeze), has a line of
# its own (src/promote/execute.rs):
#   {"message":"promotion","image":..,"digest":..,"fromStage":..,"toStage":..,"eventId":..,
#    "eventType":..,"copyMs":N,"blobsCopied":N,"blobsMounted":N,"bytesCopied":N,"referrersCopied":N}
# Cloud Logging keeps every key but severity, time and logging.googleapis.com/* in jsonPayload.
# infra/checks/logs.py checks every jsonPayload field named below against lines captured from
# the real binary (infra/checks/samples/decision-log.jsonl).

locals {
  # The service's own container logs.
  service_logs = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${var.service_name}\""
}

# One count per digest promoted, by stage pair, whatever decided it.
resource "google_logging_metric" "promotions" {
  project     = var.project_id
  name        = "${var.service_name}/promotions"
  description = "promoter (${var.service_name}): promotions, by from_stage and to_stage."
  filter      = "${local.service_logs} AND jsonPayload.message=\"promotion\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "promoter promotions"

    labels {
      key         = "from_stage"
      value_type  = "STRING"
      description = "Stage the digest was promoted from."
    }
    labels {
      key         = "to_stage"
      value_type  = "STRING"
      description = "Stage the digest was promoted into."
    }
  }

  label_extractors = {
    from_stage = "EXTRACT(jsonPayload.fromStage)"
    to_stage   = "EXTRACT(jsonPayload.toStage)"
  }

  depends_on = [google_project_service.apis]
}

# Every line that carries a decision, by its kind: promoted, already-promoted, pending, recorded,
# rejected, ignored, reconciled, and retry (a transient failure, answered 503 and redelivered).
resource "google_logging_metric" "decisions" {
  project     = var.project_id
  name        = "${var.service_name}/decisions"
  description = "promoter (${var.service_name}): decisions by kind (jsonPayload.decision), retries included."
  filter      = "${local.service_logs} AND jsonPayload.decision:*"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "promoter decisions"

    labels {
      key         = "decision"
      value_type  = "STRING"
      description = "promoted, already-promoted, pending, recorded, rejected, ignored, reconciled or retry."
    }
  }

  label_extractors = {
    decision = "EXTRACT(jsonPayload.decision)"
  }

  depends_on = [google_project_service.apis]
}

# How long deciding took, the copy included, by kind of decision: a promotion's latency is its
# signal's `promoted` decision. Buckets from 1 ms doubling to about 4.6 hours.
resource "google_logging_metric" "decision_latency" {
  project     = var.project_id
  name        = "${var.service_name}/decision_latency"
  description = "promoter (${var.service_name}): time to decide an event, copy included, by decision."
  filter      = "${local.service_logs} AND jsonPayload.message=\"decision\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "promoter decision latency"

    labels {
      key         = "decision"
      value_type  = "STRING"
      description = "promoted, already-promoted, pending, recorded, rejected, reconciled, ..."
    }
  }

  value_extractor = "EXTRACT(jsonPayload.durationMs)"
  label_extractors = {
    decision = "EXTRACT(jsonPayload.decision)"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 24
      growth_factor      = 2
      scale              = 1
    }
  }

  depends_on = [google_project_service.apis]
}

# Anything in the dead-letter subscription is an event promoter never decided: it failed
# max_delivery_attempts deliveries (503s while a registry or Pub/Sub was down, or 401/403 from
# push authentication). Nothing else reads that subscription, so any backlog needs a person.
resource "google_monitoring_alert_policy" "dead_letters" {
  project      = var.project_id
  display_name = "promoter (${var.service_name}): dead letters in ${var.dead_letter_topic_name}"
  combiner     = "OR"
  severity     = "WARNING"
  user_labels  = var.labels

  conditions {
    display_name = "undelivered messages in subscription ${var.dead_letter_topic_name} > 0"

    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letter.name}\" AND metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  # Never the p2p-events channel (google_monitoring_notification_channel.p2p_events): promoter
  # would read this incident as an alert event (infra/checks/logs.py refuses it).
  notification_channels = var.alert_notification_channels

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      Events on `${var.events_topic_name}` that promoter could not take after ${var.max_delivery_attempts}
      deliveries are waiting in the subscription `${google_pubsub_subscription.dead_letter.name}`.
      Look at them (`gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter.name} --limit=10 --format=json`),
      and at the service's warnings for the cause (a registry or Pub/Sub unavailable: 503; push
      authentication: 401/403). Once it is fixed, publish each message again to `${var.events_topic_name}`
      and acknowledge it here. See the README, "Logs, outcomes and dead letters".
    EOT
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_dashboard" "promoter" {
  project = var.project_id
  dashboard_json = templatefile("${path.module}/dashboard.json", {
    service_name             = var.service_name
    promotions_metric        = google_logging_metric.promotions.name
    decisions_metric         = google_logging_metric.decisions.name
    decision_latency_metric  = google_logging_metric.decision_latency.name
    dead_letter_subscription = google_pubsub_subscription.dead_letter.name
    dead_letter_alert_policy = google_monitoring_alert_policy.dead_letters.name
  })

  depends_on = [google_project_service.apis]
}
