variable "project_id" {
  description = "Project of the promoter service and its topics."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run service."
  type        = string
  default     = "europe-west2"
}

variable "registry" {
  description = "Registry of the fast-feedback and extended-test stages, e.g. europe-west2-docker.pkg.dev/dev-proj/tenant/acme."
  type        = string
}

variable "prod_registry" {
  description = "Registry of the prod stage, e.g. europe-west2-docker.pkg.dev/prod-proj/tenant/acme (null: same as registry)."
  type        = string
  default     = null
}

variable "stage_paths" {
  description = "Stage paths under the registries."
  type = object({
    fast_feedback = optional(string, "fast-feedback")
    extended_test = optional(string, "extended-test")
    prod          = optional(string, "prod")
  })
  default = {}
}

variable "subscribe_cloud_builds" {
  description = "Push Cloud Build notifications (topic cloud-builds) to the service as test-passed signals."
  type        = bool
  default     = false
}

variable "reconcile_schedule" {
  description = "Cron schedule (UTC) of the reconcile event Cloud Scheduler publishes to the events topic; \"\" for none."
  type        = string
  default     = "* * * * *"
}

variable "state_repository_id" {
  description = "Id of the Artifact Registry repository created for promoter's own state (in project_id and region)."
  type        = string
  default     = "promoter-state"
}

variable "rules_file" {
  description = "Rules file to deploy (PROMOTER_CONFIG), relative to this directory or absolute, e.g. \"rules.yaml\" (start from rules.yaml.example); \"\" runs the embedded default pipeline."
  type        = string
  default     = ""
}

variable "approvers" {
  description = "IAM members who may send approvals to the service (roles/run.invoker on it), e.g. [\"user:alice@acme.com\", \"group:sre@acme.com\"]."
  type        = list(string)
  default     = []
}

variable "ingress" {
  description = "Cloud Run ingress; approvers outside the project's VPC networks need INGRESS_TRAFFIC_ALL."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
}

variable "alert_notification_channels" {
  description = "Notification channels (projects/P/notificationChannels/N) of the dead-letter backlog alert."
  type        = list(string)
  default     = []
}

variable "attestations" {
  description = "Sign every promotion (an in-toto statement in a DSSE envelope, stored as cosign stores attestations) with a Cloud KMS key created for it."
  type        = bool
  default     = false
}

variable "binauthz" {
  description = "Also create a Binary Authorization attestor for the attestation key and attest promotions into the last stage to it. Needs attestations = true."
  type        = bool
  default     = false
}

variable "attestor_viewers" {
  description = "Members granted roles/binaryauthorization.attestorsViewer on the attestor, e.g. the deployers whose Binary Authorization policy requires it."
  type        = list(string)
  default     = []
}
