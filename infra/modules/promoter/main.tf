# promoter on Cloud Run, driven by CloudEvents over Pub/Sub push.
#
# Identities (see the README, "IAM"):
#   google_service_account.promoter  runs the service; reads source-stage repositories, writes
#                                    destination-stage repositories, administers its own state
#                                    repository (repository-level bindings only), publishes to
#                                    p2p-promotions (topic-level binding), reads the rules file's
#                                    secret when rules_yaml is set (secret-level binding).
#   google_service_account.push      signs the OIDC token of every push; holds roles/run.invoker
#                                    on the service (authoritative binding) ...
#   var.approvers                    ... with the approvers and nobody else: people who send
#                                    `approved` straight to the service (promoter accepts nothing
#                                    else from an identity that is not the push identity).
#   Pub/Sub service agent            publishes dead letters, acknowledges forwarded messages,
#                                    mints the push identity's tokens.
#   Monitoring notification agent    publishes alert incidents to p2p-events.
#   Google APIs service agent        publishes Cloud Scheduler's reconcile ticks to p2p-events.
# No project-, folder- or organisation-level role is granted by this module.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  ar_pattern = "^([a-z0-9-]+)-docker\\.pkg\\.dev/([^/]+)/([^/]+)"

  prod_registry = coalesce(var.prod_registry, var.registry)

  # The rules file (PROMOTER_CONFIG), when one is given: delivered as a Secret Manager secret
  # mounted into the container at rules_path. Its stages and promotions decide the grants below.
  rules            = var.rules_yaml != ""
  rules_mount_path = "/etc/promoter"
  rules_file_name  = "rules.yaml"
  rules_path       = "${local.rules_mount_path}/${local.rules_file_name}"
  rules_doc        = local.rules ? yamldecode(var.rules_yaml) : null
  rules_promotions = try(local.rules_doc.promotions, [])

  # The embedded default pipeline (docs/rules.md):
  #   fast-feedback -> extended-test -> prod
  default_stages = {
    "fast-feedback" = { registry = var.registry, path = var.stage_paths.fast_feedback, source = true, destination = false }
    "extended-test" = { registry = var.registry, path = var.stage_paths.extended_test, source = true, destination = true }
    "prod"          = { registry = local.prod_registry, path = var.stage_paths.prod, source = false, destination = true }
  }

  # The rules file's stages: a stage is a source when a promotion leaves it, a destination when
  # one enters it (a stage that is neither gets no grant).
  rules_stages = {
    for s in try(local.rules_doc.stages, []) : s.name => {
      registry    = s.registry
      path        = try(s.path, s.name)
      source      = contains([for p in local.rules_promotions : p.from], s.name)
      destination = contains([for p in local.rules_promotions : p.to], s.name)
    }
  }

  stages = local.rules ? local.rules_stages : local.default_stages

  # Artifact Registry repository of each stage: {location, project, repository}.
  stage_repositories = {
    for name, s in local.stages : name => {
      location   = regex(local.ar_pattern, s.registry)[0]
      project    = regex(local.ar_pattern, s.registry)[1]
      repository = regex(local.ar_pattern, s.registry)[2]
      source     = s.source
      dest       = s.destination
    }
  }

  # roles/artifactregistry.writer includes every read permission, so a repository that holds a
  # destination stage gets writer only; a repository that holds only source stages gets reader.
  writer_repositories = {
    for r in distinct([for s in values(local.stage_repositories) : { location = s.location, project = s.project, repository = s.repository } if s.dest]) :
    "${r.project}/${r.location}/${r.repository}" => r
  }
  reader_repositories = {
    for r in distinct([for s in values(local.stage_repositories) : { location = s.location, project = s.project, repository = s.repository } if s.source]) :
    "${r.project}/${r.location}/${r.repository}" => r
    if !contains(keys(local.writer_repositories), "${r.project}/${r.location}/${r.repository}")
  }

  push_audience = coalesce(var.push_audience, "promoter-push/projects/${var.project_id}/locations/${var.region}/services/${var.service_name}")

  pubsub_service_agent       = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  monitoring_notification_sa = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-monitoring-notification.iam.gserviceaccount.com"
  # Cloud Scheduler publishes a Pub/Sub target's messages "as a Google APIs service account"
  # (https://cloud.google.com/scheduler/docs/creating, "Pub/Sub target"): the project's Google
  # APIs service agent, PROJECT_NUMBER@cloudservices.gserviceaccount.com, not the Cloud Scheduler
  # service agent (service-PROJECT_NUMBER@gcp-sa-cloudscheduler).
  scheduler_publisher = "serviceAccount:${data.google_project.this.number}@cloudservices.gserviceaccount.com"

  # promoter's own indexes (alert state, waiting digests, promotions by stage), in the repository
  # created below: PROMOTER_STATE_REPOSITORY.
  state_repository = "${google_artifact_registry_repository.state.location}-docker.pkg.dev/${google_artifact_registry_repository.state.project}/${google_artifact_registry_repository.state.repository_id}"

  reconcile = var.reconcile_schedule != ""

  apis = concat(
    ["run.googleapis.com", "pubsub.googleapis.com", "artifactregistry.googleapis.com", "monitoring.googleapis.com", "logging.googleapis.com", "iam.googleapis.com", "cloudscheduler.googleapis.com"],
    local.rules ? ["secretmanager.googleapis.com"] : [],
  )
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# ---------------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------------

resource "google_service_account" "promoter" {
  project      = var.project_id
  account_id   = "${var.service_name}-svc"
  display_name = "promoter service (${var.service_name}): copies images between stages"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "${var.service_name}-push"
  display_name = "Pub/Sub push identity for ${var.service_name}: sole run.invoker"

  depends_on = [google_project_service.apis]
}

# Pub/Sub mints the OIDC tokens of the push identity.
resource "google_service_account_iam_member" "push_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent

  # The Pub/Sub service agent exists once the Pub/Sub API is enabled.
  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------------------------------------
# Artifact Registry: repository-level grants only
# ---------------------------------------------------------------------------------------------

resource "google_artifact_registry_repository_iam_member" "source_reader" {
  for_each = local.reader_repositories

  project    = each.value.project
  location   = each.value.location
  repository = each.value.repository
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.promoter.member
}

resource "google_artifact_registry_repository_iam_member" "destination_writer" {
  for_each = local.writer_repositories

  project    = each.value.project
  location   = each.value.location
  repository = each.value.repository
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.promoter.member
}

# promoter's own state: a repository of its own, so that the one identity allowed to delete in
# it (promoter deletes index entries that are obsolete) can delete nothing in the stages.
resource "google_artifact_registry_repository" "state" {
  #checkov:skip=CKV_GCP_84:Holds promoter's small index manifests (image references, digests, stage names), no secrets or workloads; Google-managed encryption at rest is sufficient here, as for the topics
  project       = var.project_id
  location      = var.region
  repository_id = var.state_repository_id
  format        = "DOCKER"
  description   = "promoter (${var.service_name}): its own indexes; promoter writes and deletes here, nobody else needs to"
  labels        = var.labels

  depends_on = [google_project_service.apis]
}

# roles/artifactregistry.writer cannot delete tags or versions; repoAdmin can, and is granted on
# this repository only (roles: https://cloud.google.com/iam/docs/roles-permissions/artifactregistry).
resource "google_artifact_registry_repository_iam_member" "state_admin" {
  project    = google_artifact_registry_repository.state.project
  location   = google_artifact_registry_repository.state.location
  repository = google_artifact_registry_repository.state.name
  role       = "roles/artifactregistry.repoAdmin"
  member     = google_service_account.promoter.member
}

# ---------------------------------------------------------------------------------------------
# Pub/Sub topics
# ---------------------------------------------------------------------------------------------

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:Messages hold image references and digests only, no secrets; Google-managed encryption at rest is sufficient here
  project = var.project_id
  name    = var.events_topic_name
  labels  = var.labels

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "promotions" {
  #checkov:skip=CKV_GCP_83:Messages hold image references, digests and copy statistics only, no secrets; Google-managed encryption at rest is sufficient here
  project = var.project_id
  name    = var.promotions_topic_name
  labels  = var.labels

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Dead letters are copies of p2p-events messages (image references, digests), no secrets; Google-managed encryption at rest is sufficient here
  project = var.project_id
  name    = var.dead_letter_topic_name
  labels  = var.labels

  depends_on = [google_project_service.apis]
}

# Where operators read what could not be delivered (see README, "Dead letters").
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = var.dead_letter_topic_name
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = false
  labels                     = var.labels

  expiration_policy {
    ttl = ""
  }
}

# The service publishes promoted / promotion-rejected; topic-level grant.
resource "google_pubsub_topic_iam_member" "promoter_publishes_promotions" {
  project = var.project_id
  topic   = google_pubsub_topic.promotions.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.promoter.member
}

# Dead-lettering: the Pub/Sub service agent publishes to the dead-letter topic ...
resource "google_pubsub_topic_iam_member" "pubsub_agent_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

# ---------------------------------------------------------------------------------------------
# The rules file (optional): a secret of its own, read by the service's account only
# ---------------------------------------------------------------------------------------------

# Secret Manager is the store Cloud Run mounts as a file. The rules file is configuration, not a
# credential: it is kept here so that the service reads it as a file, from a version that
# Terraform pins in the revision (a new rules file is a new revision, rolled out like an image).
# Encryption: Google-managed (no customer_managed_encryption in replication). The rules file holds
# stage names, registry paths, signal names and approvers' email patterns, no credential, as for
# the topics and the state repository (checkov 3.3.30 has no Secret Manager CMEK check to skip).
resource "google_secret_manager_secret" "rules" {
  count = local.rules ? 1 : 0

  project   = var.project_id
  secret_id = "${var.service_name}-rules"
  labels    = var.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# A new content replaces the version (secret_data forces a new one). The new version exists
# before the revision that reads it, and the old one is left in place (ABANDON), so the revision
# still running, and any earlier revision traffic is moved back to, can still start. The secret,
# with every version, goes when the module is destroyed.
resource "google_secret_manager_secret_version" "rules" {
  count = local.rules ? 1 : 0

  secret          = google_secret_manager_secret.rules[0].id
  secret_data     = var.rules_yaml
  deletion_policy = "ABANDON"

  lifecycle {
    create_before_destroy = true
  }
}

# On this one secret, for the service's account only (never at project level).
resource "google_secret_manager_secret_iam_member" "promoter_reads_rules" {
  count = local.rules ? 1 : 0

  project   = google_secret_manager_secret.rules[0].project
  secret_id = google_secret_manager_secret.rules[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.promoter.member
}

# ---------------------------------------------------------------------------------------------
# Cloud Run service
# ---------------------------------------------------------------------------------------------

resource "google_cloud_run_v2_service" "promoter" {
  project             = var.project_id
  name                = var.service_name
  location            = var.region
  ingress             = var.ingress
  deletion_protection = var.deletion_protection
  labels              = var.labels

  # Pub/Sub signs push tokens for this audience; Cloud Run accepts it besides the service URL.
  custom_audiences = [local.push_audience]

  template {
    service_account                  = google_service_account.promoter.email
    timeout                          = "600s" # >= the push subscription's ack deadline
    max_instance_request_concurrency = 20

    scaling {
      min_instance_count = 0
      max_instance_count = var.max_instances
    }

    # The rules file, as rules_path (PROMOTER_CONFIG), from the version this apply wrote.
    dynamic "volumes" {
      for_each = local.rules ? ["rules"] : []
      content {
        name = "rules"
        secret {
          secret       = google_secret_manager_secret.rules[0].secret_id
          default_mode = 292 # 0444: the container runs as a non-root user
          items {
            version = google_secret_manager_secret_version.rules[0].version
            path    = local.rules_file_name
          }
        }
      }
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        cpu_idle          = true # CPU only while a request is being handled
        startup_cpu_boost = true
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
      }

      # Configuration (docs/configuration.md). Every name here must be one the binary reads
      # (infra/checks/contract.py enforces it).
      env {
        name  = "PROMOTER_EVENTS_TOPIC"
        value = google_pubsub_topic.promotions.id
      }
      env {
        name  = "PROMOTER_PUSH_AUTH"
        value = "cloud-run"
      }
      env {
        name  = "PROMOTER_PUSH_AUDIENCE"
        value = local.push_audience
      }
      env {
        name  = "PROMOTER_PUSH_SERVICE_ACCOUNTS"
        value = google_service_account.push.email
      }
      env {
        name  = "REGISTRY"
        value = var.registry
      }
      env {
        name  = "PROD_REGISTRY"
        value = local.prod_registry
      }
      env {
        name  = "FAST_FEEDBACK_PATH"
        value = var.stage_paths.fast_feedback
      }
      env {
        name  = "EXTENDED_TEST_PATH"
        value = var.stage_paths.extended_test
      }
      env {
        name  = "PROD_PATH"
        value = var.stage_paths.prod
      }
      env {
        name  = "PROMOTER_STATE_REPOSITORY"
        value = local.state_repository
      }
      # Promotion attestations (attestation.tf): empty, so unset, while they are off.
      env {
        name  = "PROMOTER_ATTESTATION_KEY"
        value = local.attestation_key_env
      }
      env {
        name  = "PROMOTER_BINAUTHZ_ATTESTOR"
        value = local.binauthz_attestor_env
      }

      # The rules file; "" (what the binary reads as unset) runs the embedded default pipeline
      # from REGISTRY, PROD_REGISTRY and *_PATH above, which a rules file replaces.
      env {
        name  = "PROMOTER_CONFIG"
        value = local.rules ? local.rules_path : ""
      }

      dynamic "volume_mounts" {
        for_each = local.rules ? ["rules"] : []
        content {
          name       = "rules"
          mount_path = local.rules_mount_path
        }
      }

      startup_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 2
        failure_threshold = 15
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds = 30
      }
    }
  }

  lifecycle {
    # Cloud Build deploys new revisions by digest; Terraform owns everything else.
    ignore_changes = [
      template[0].containers[0].image,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_artifact_registry_repository_iam_member.source_reader,
    google_artifact_registry_repository_iam_member.destination_writer,
    google_artifact_registry_repository_iam_member.state_admin,
    google_pubsub_topic_iam_member.promoter_publishes_promotions,
    # Cloud Run checks at deployment that the service's account can read the mounted secret.
    google_secret_manager_secret_iam_member.promoter_reads_rules,
  ]
}

# The push identity and the approvers, and nobody else, may invoke the service (authoritative
# for this role). promoter answers an identity that is not the push identity only for a direct
# `approved`, and counts it only when the rules name the approver (promotion `approvers`).
resource "google_cloud_run_v2_service_iam_binding" "invoker" {
  project  = google_cloud_run_v2_service.promoter.project
  location = google_cloud_run_v2_service.promoter.location
  name     = google_cloud_run_v2_service.promoter.name
  role     = "roles/run.invoker"
  members  = concat([google_service_account.push.member], var.approvers)
}

# Approvers call the service from their own machines: with internal-only ingress Cloud Run
# refuses them before IAM is consulted. A warning, not an error: approving from inside the VPC
# (or through a load balancer) is possible.
check "approvers_can_reach_the_service" {
  assert {
    condition     = length(var.approvers) == 0 || var.ingress != "INGRESS_TRAFFIC_INTERNAL_ONLY"
    error_message = "approvers are set, but ingress is INGRESS_TRAFFIC_INTERNAL_ONLY: `promoter approve` from outside the project's VPC networks is refused by Cloud Run ingress. Set ingress = \"INGRESS_TRAFFIC_ALL\" (run.invoker still decides who may call) or approve from inside the VPC."
  }
}

# ---------------------------------------------------------------------------------------------
# Push subscriptions
# ---------------------------------------------------------------------------------------------

# What the service is pushed from: p2p-events always; Cloud Build notifications optionally
# (status SUCCESS -> test-passed for each built digest). Both take the same push settings.
locals {
  push_sources = merge(
    {
      events = {
        name  = "${var.events_topic_name}-${var.service_name}-push"
        topic = google_pubsub_topic.events.id
      }
    },
    var.subscribe_cloud_builds ? {
      cloud-builds = {
        name  = "cloud-builds-${var.service_name}-push"
        topic = "projects/${var.project_id}/topics/cloud-builds"
      }
    } : {},
  )
}

resource "google_pubsub_subscription" "push" {
  for_each = local.push_sources

  project = var.project_id
  name    = each.value.name
  topic   = each.value.topic
  labels  = var.labels

  ack_deadline_seconds       = 600
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = google_cloud_run_v2_service.promoter.uri

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.push_audience
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_binding.invoker,
    google_service_account_iam_member.push_token_creator,
    google_pubsub_topic_iam_member.pubsub_agent_publishes_dead_letters,
  ]
}

# ... and acknowledges, on each source subscription, the messages it forwards there.
resource "google_pubsub_subscription_iam_member" "pubsub_agent_subscribes" {
  for_each = google_pubsub_subscription.push

  project      = var.project_id
  subscription = each.value.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# ---------------------------------------------------------------------------------------------
# Alert-based promotion: Cloud Monitoring incidents -> p2p-events
# ---------------------------------------------------------------------------------------------

# Attach this channel to an alert policy whose user_labels carry promoter_image and
# promoter_stage: an incident that opens is alert-firing, one that closes is alert-clear.
resource "google_monitoring_notification_channel" "p2p_events" {
  project      = var.project_id
  display_name = "promoter: ${var.events_topic_name}"
  type         = "pubsub"
  description  = "Alert incidents for ${var.service_name} (alert-firing / alert-clear)"
  user_labels  = var.labels

  labels = {
    topic = google_pubsub_topic.events.id
  }
}

resource "google_pubsub_topic_iam_member" "monitoring_publishes_events" {
  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = local.monitoring_notification_sa

  # Cloud Monitoring creates its notification service agent with the first Pub/Sub channel.
  depends_on = [google_monitoring_notification_channel.p2p_events]
}

# ---------------------------------------------------------------------------------------------
# Reconciliation: a reconcile event on p2p-events every minute
# ---------------------------------------------------------------------------------------------

# Pub/Sub has no delayed delivery, so what waits on time (soak periods, gates whose evidence may
# have arrived out of order) is looked at again on a tick. The message carries only ce-type:
# promoter takes a hand-published message's Pub/Sub message id as its event id, so each tick is
# a new event, and it arrives through the same push subscription (retries, dead letters) as
# every other event.
resource "google_cloud_scheduler_job" "reconcile" {
  count = local.reconcile ? 1 : 0

  project     = var.project_id
  region      = var.region
  name        = "${var.service_name}-reconcile"
  description = "promoter (${var.service_name}): publishes a reconcile event to ${var.events_topic_name}"
  schedule    = var.reconcile_schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.events.id
    data       = base64encode("{}")
    attributes = {
      "ce-type" = "reconcile"
    }
  }

  depends_on = [
    google_project_service.apis,
    google_pubsub_topic_iam_member.scheduler_publishes_reconcile,
  ]
}

# The identity Cloud Scheduler publishes with (local.scheduler_publisher) may publish to this one
# topic. Projects that still give that agent roles/editor would not need it; projects that took
# Editor away (as least privilege asks) do.
resource "google_pubsub_topic_iam_member" "scheduler_publishes_reconcile" {
  count = local.reconcile ? 1 : 0

  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = local.scheduler_publisher
}
