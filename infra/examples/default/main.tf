# Example root: promoter for one team's path to production.
#
#   cd infra/examples/default
#   cp terraform.tfvars.example terraform.tfvars   # edit
#   cp rules.yaml.example rules.yaml               # optional: a rules file (rules_file = "rules.yaml")
#   terraform init && terraform apply

terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

module "promoter" {
  source = "../../modules/promoter"

  project_id    = var.project_id
  region        = var.region
  registry      = var.registry
  prod_registry = var.prod_registry
  stage_paths   = var.stage_paths

  # The rules file, read from this directory (or an absolute path); "" keeps the embedded default.
  rules_yaml = var.rules_file == "" ? "" : file(startswith(var.rules_file, "/") ? var.rules_file : "${path.module}/${var.rules_file}")
  approvers  = var.approvers
  ingress    = var.ingress

  subscribe_cloud_builds      = var.subscribe_cloud_builds
  reconcile_schedule          = var.reconcile_schedule
  state_repository_id         = var.state_repository_id
  alert_notification_channels = var.alert_notification_channels

  # Promotion attestations signed with a Cloud KMS key, and a Binary Authorization attestor.
  attestations     = var.attestations
  binauthz         = var.binauthz
  attestor_viewers = var.attestor_viewers

  labels = { app = "promoter" }
}
