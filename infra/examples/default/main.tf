# Example root: promoter for one team's path to production.
#
#   cd infra/examples/default
#   cp terraform.tfvars.example terraform.tfvars   # edit
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

  subscribe_cloud_builds = var.subscribe_cloud_builds
  reconcile_schedule     = var.reconcile_schedule
  state_repository_id    = var.state_repository_id
  labels                 = { app = "promoter" }
}
