variable "project_id" {
  description = "Project that hosts the promoter service, its service accounts and its Pub/Sub topics."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run service, e.g. europe-west2."
  type        = string
}

variable "service_name" {
  description = "Name of the Cloud Run service."
  type        = string
  default     = "promoter"
}

variable "image" {
  description = <<-EOT
    Container image of the first revision. Cloud Build deploys new revisions by digest afterwards
    (gcloud run deploy --image ...@sha256:...), and Terraform ignores later image changes.
  EOT
  type        = string
  default     = "us-docker.pkg.dev/cloudrun/container/hello"
}

variable "registry" {
  description = <<-EOT
    Registry of every stage (REGISTRY): an Artifact Registry path LOCATION-docker.pkg.dev/PROJECT/REPOSITORY[/prefix].
    An image in a stage is {registry}/{stage path}/{image}:{tag}.
  EOT
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]+-docker\\.pkg\\.dev/[^/]+/[^/]+(/.*)?$", var.registry))
    error_message = "registry must be an Artifact Registry path LOCATION-docker.pkg.dev/PROJECT/REPOSITORY[/prefix]."
  }
}

variable "prod_registry" {
  description = "Registry of the prod stage only (PROD_REGISTRY); null means the same as registry."
  type        = string
  default     = null

  validation {
    condition     = var.prod_registry == null || can(regex("^[a-z0-9-]+-docker\\.pkg\\.dev/[^/]+/[^/]+(/.*)?$", coalesce(var.prod_registry, "x")))
    error_message = "prod_registry must be an Artifact Registry path LOCATION-docker.pkg.dev/PROJECT/REPOSITORY[/prefix]."
  }
}

variable "stage_paths" {
  description = "Path of each stage under its registry (FAST_FEEDBACK_PATH, EXTENDED_TEST_PATH, PROD_PATH)."
  type = object({
    fast_feedback = optional(string, "fast-feedback")
    extended_test = optional(string, "extended-test")
    prod          = optional(string, "prod")
  })
  default = {}
}

variable "rules_yaml" {
  description = <<-EOT
    Content of a rules file (YAML: stages, promotions, images, signals, freezes, cloud_build), e.g.
    file("rules.yaml"). Stored as a Secret Manager secret that only the service's account may read,
    mounted at /etc/promoter/rules.yaml and named by PROMOTER_CONFIG; its stages and promotions
    decide the repository grants (reader on repositories only promoted from, writer on those
    promoted into). "" (the default) runs the embedded default pipeline built from registry,
    prod_registry and stage_paths, as before.
  EOT
  type        = string
  default     = ""
  nullable    = false

  validation {
    condition     = length(var.rules_yaml) <= 65536
    error_message = "rules_yaml is larger than 64 KiB, the most a Secret Manager secret version holds."
  }

  validation {
    condition = var.rules_yaml == "" || alltrue([
      for s in try(yamldecode(var.rules_yaml).stages, [{}]) :
      can(regex("^[a-z0-9-]+-docker\\.pkg\\.dev/[^/]+/[^/]+(/.*)?$", s.registry)) && can(s.name)
    ])
    error_message = "rules_yaml must be YAML whose stages each have a name and a registry that is an Artifact Registry path LOCATION-docker.pkg.dev/PROJECT/REPOSITORY[/prefix] (the module grants access per repository)."
  }
}

variable "approvers" {
  description = <<-EOT
    IAM members who may invoke the service to approve a digest (`promoter approve IMAGE --service URL`),
    e.g. ["user:alice@acme.com", "group:sre@acme.com"]. They get roles/run.invoker on the service only,
    beside the push identity. promoter accepts nothing but a direct `approved` from them, and counts it
    only when the verified email matches the promotion's approvers in the rules file.
  EOT
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for m in var.approvers : can(regex("^(user|group|serviceAccount|domain):[^\\s:]+$", m))])
    error_message = "approvers must be IAM members of the form user:EMAIL, group:EMAIL, serviceAccount:EMAIL or domain:DOMAIN; nothing public."
  }
}

variable "alert_notification_channels" {
  description = <<-EOT
    Cloud Monitoring notification channels (ids, projects/P/notificationChannels/N) of the dead-letter
    backlog alert, e.g. an e-mail or chat channel of the team. [] creates the alert without notifying
    anyone (it still shows as an incident). Never the p2p-events channel: promoter would read the
    incident as an alert event.
  EOT
  type        = list(string)
  default     = []
  nullable    = false
}

variable "events_topic_name" {
  description = "Topic that carries inbound events (test-passed, soak-complete, alert-firing, ...)."
  type        = string
  default     = "p2p-events"
}

variable "promotions_topic_name" {
  description = "Topic where promoter publishes promoted / promotion-rejected (PROMOTER_EVENTS_TOPIC)."
  type        = string
  default     = "p2p-promotions"
}

variable "dead_letter_topic_name" {
  description = "Topic that receives events the service could not handle after max_delivery_attempts."
  type        = string
  default     = "p2p-events-dead-letter"
}

variable "max_delivery_attempts" {
  description = "Deliveries of one message before it goes to the dead-letter topic (5-100)."
  type        = number
  default     = 10
}

variable "push_audience" {
  description = <<-EOT
    Audience of the OIDC token Pub/Sub attaches to each push. It is set on the subscription, accepted
    by Cloud Run as a custom audience, and checked by promoter (PROMOTER_PUSH_AUDIENCE). null derives
    a fixed string from project, region and service name (no dependency on the service URL).
  EOT
  type        = string
  default     = null
}

variable "ingress" {
  description = <<-EOT
    Cloud Run ingress. INGRESS_TRAFFIC_INTERNAL_ONLY admits Pub/Sub push from the same project;
    use INGRESS_TRAFFIC_ALL if callers outside the project (or its VPC-SC perimeter) post CloudEvents directly.
  EOT
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be one of INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY, INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "max_instances" {
  description = "Upper bound of Cloud Run instances."
  type        = number
  default     = 5
}

variable "cpu" {
  description = "CPU limit of one instance."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory limit of one instance (copies stream with bounded memory)."
  type        = string
  default     = "512Mi"
}

variable "subscribe_cloud_builds" {
  description = <<-EOT
    Also push Cloud Build notifications (topic cloud-builds, which must already exist) to the service:
    a successful build counts as test-passed for every image digest it built.
  EOT
  type        = bool
  default     = false
}

variable "reconcile_schedule" {
  description = <<-EOT
    Cron schedule (UTC) of the Cloud Scheduler job that publishes a reconcile event to the events
    topic, so that gates waiting on time are decided again. Default: every minute. "" creates no job.
  EOT
  type        = string
  default     = "* * * * *"

  validation {
    condition     = var.reconcile_schedule == "" || can(regex("^\\S+(\\s+\\S+){4}$", trimspace(var.reconcile_schedule)))
    error_message = "reconcile_schedule must be a five-field cron schedule (e.g. \"* * * * *\") or \"\" for none."
  }
}

variable "state_repository_id" {
  description = <<-EOT
    Id of the Artifact Registry repository (DOCKER, in project_id and region) the module creates for
    promoter's own indexes (PROMOTER_STATE_REPOSITORY). Only the service's account may write and
    delete there.
  EOT
  type        = string
  default     = "promoter-state"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.state_repository_id))
    error_message = "state_repository_id must be lower-case letters, digits and hyphens, start with a letter and be at most 63 characters."
  }
}

variable "enable_apis" {
  description = "Enable the APIs the module uses (run, pubsub, artifactregistry, monitoring, logging, iam, cloudscheduler; secretmanager when rules_yaml is set)."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the Cloud Run service against terraform destroy."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels put on every labelled resource."
  type        = map(string)
  default     = {}
}
