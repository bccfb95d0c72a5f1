output "service_url" {
  description = "URL of the promoter service."
  value       = module.promoter.service_url
}

output "service_account_email" {
  description = "Identity of the service."
  value       = module.promoter.service_account_email
}

output "push_service_account_email" {
  description = "Identity of the Pub/Sub push (with the approvers, the only run.invoker)."
  value       = module.promoter.push_service_account_email
}

output "events_topic" {
  description = "Publish inbound events here."
  value       = module.promoter.events_topic
}

output "promotions_topic" {
  description = "Outcome events (promoted, promotion-rejected)."
  value       = module.promoter.promotions_topic
}

output "dead_letter_subscription" {
  description = "Inspect undeliverable events here."
  value       = module.promoter.dead_letter_subscription
}

output "notification_channel" {
  description = "Attach to alert policies for alert-based promotion."
  value       = module.promoter.notification_channel
}

output "state_repository" {
  description = "Where promoter keeps its own indexes (PROMOTER_STATE_REPOSITORY)."
  value       = module.promoter.state_repository
}

output "push_audience" {
  description = "Audience of push tokens, and of approvers' ID tokens (promoter approve --audience)."
  value       = module.promoter.push_audience
}

output "rules_path" {
  description = "Where the service reads the rules file (null: embedded default pipeline)."
  value       = module.promoter.rules_path
}

output "dashboard" {
  description = "Cloud Monitoring dashboard: promotions, decisions, dead letters."
  value       = module.promoter.dashboard
}

output "dead_letter_alert_policy" {
  description = "Alert policy on the dead-letter backlog."
  value       = module.promoter.dead_letter_alert_policy
}
