output "service_url" {
  description = "URL of the Cloud Run service (IAM-authenticated; only the push identity and the approvers may invoke it)."
  value       = google_cloud_run_v2_service.promoter.uri
}

output "service_name" {
  description = "Name of the Cloud Run service (for gcloud run deploy and gcloud logging read)."
  value       = google_cloud_run_v2_service.promoter.name
}

output "service_account_email" {
  description = "Identity of the service: reads source-stage repositories, writes destination ones."
  value       = google_service_account.promoter.email
}

output "push_service_account_email" {
  description = "Identity that signs Pub/Sub pushes; with the approvers, the only run.invoker of the service."
  value       = google_service_account.push.email
}

output "push_audience" {
  description = "Audience of the push OIDC token (PROMOTER_PUSH_AUDIENCE); an approver's ID token needs it too (promoter approve --audience)."
  value       = local.push_audience
}

output "events_topic" {
  description = "Topic of inbound events (publish test-passed, soak-complete, ... here)."
  value       = google_pubsub_topic.events.id
}

output "promotions_topic" {
  description = "Topic of outcome events (promoted, promotion-rejected)."
  value       = google_pubsub_topic.promotions.id
}

output "dead_letter_topic" {
  description = "Topic of undeliverable events."
  value       = google_pubsub_topic.dead_letter.id
}

output "dead_letter_subscription" {
  description = "Pull subscription to inspect undeliverable events."
  value       = google_pubsub_subscription.dead_letter.id
}

output "events_push_subscription" {
  description = "Push subscription from the events topic to the service."
  value       = google_pubsub_subscription.push["events"].id
}

output "notification_channel" {
  description = "Cloud Monitoring notification channel to attach to alert policies."
  value       = google_monitoring_notification_channel.p2p_events.id
}

output "state_repository" {
  description = "Where promoter keeps its own indexes (PROMOTER_STATE_REPOSITORY)."
  value       = local.state_repository
}

output "reconcile_job" {
  description = "Cloud Scheduler job that publishes reconcile to the events topic (null when reconcile_schedule is \"\")."
  value       = one(google_cloud_scheduler_job.reconcile[*].id)
}

output "rules_secret" {
  description = "Secret Manager secret holding the rules file mounted at rules_path (null without rules_yaml)."
  value       = one(google_secret_manager_secret.rules[*].id)
}

output "rules_path" {
  description = "Where the service reads its rules file (PROMOTER_CONFIG; null without rules_yaml)."
  value       = local.rules ? local.rules_path : null
}

output "log_metrics" {
  description = "Log-based metric types: promotions (by from_stage, to_stage) and decisions (by decision)."
  value = {
    promotions = "logging.googleapis.com/user/${google_logging_metric.promotions.name}"
    decisions  = "logging.googleapis.com/user/${google_logging_metric.decisions.name}"
  }
}

output "dead_letter_alert_policy" {
  description = "Alert policy that opens an incident while the dead-letter subscription holds messages."
  value       = google_monitoring_alert_policy.dead_letters.name
}

output "dashboard" {
  description = "Cloud Monitoring dashboard of promotions, decisions and dead letters."
  value       = google_monitoring_dashboard.promoter.id
}
