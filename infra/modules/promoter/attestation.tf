# Promotion attestations (docs/attestations.md), optional:
#
#   attestations = true      a Cloud KMS key ring and key (EC_SIGN_P256_SHA256, the one algorithm
#                            promoter signs with); the service signs every promotion with it
#                            (PROMOTER_ATTESTATION_KEY = gcpkms://...). The service account may use
#                            the key to sign and read its public key, nothing else, on that key only.
#   binauthz     = true      also a Container Analysis note and a Binary Authorization attestor
#                            holding the key's public key; the service creates an attestation
#                            occurrence for each promotion (PROMOTER_BINAUTHZ_ATTESTOR), so a Binary
#                            Authorization policy can require "promoted by promoter" for prod.
#
# Grants, each on the narrowest resource that has IAM:
#   promoter-svc  roles/cloudkms.signer and roles/cloudkms.publicKeyViewer      the key
#                 roles/binaryauthorization.attestorsViewer                      the attestor (its note and key id)
#                 roles/containeranalysis.notes.attacher                         the note
#                 roles/containeranalysis.occurrences.editor                     the project: occurrences
#                   have no IAM of their own, they are created in a project (the one exception
#                   to "no project-level role", checked by infra/checks/policy.py)
#   deployers     roles/binaryauthorization.attestorsViewer                      the attestor

variable "attestations" {
  description = "Sign every promotion with a Cloud KMS key created here (PROMOTER_ATTESTATION_KEY)."
  type        = bool
  default     = false
}

variable "attestation_key_ring" {
  description = "Name of the Cloud KMS key ring created for the attestation key (in var.region)."
  type        = string
  default     = "promoter"
}

variable "attestation_key" {
  description = "Name of the Cloud KMS key (ASYMMETRIC_SIGN, EC_SIGN_P256_SHA256) that signs promotion attestations."
  type        = string
  default     = "promotion-attestations"
}

variable "attestation_key_protection_level" {
  description = "SOFTWARE or HSM."
  type        = string
  default     = "HSM"

  validation {
    condition     = contains(["SOFTWARE", "HSM"], var.attestation_key_protection_level)
    error_message = "attestation_key_protection_level must be SOFTWARE or HSM."
  }
}

variable "binauthz" {
  description = "Also create a Binary Authorization attestor (and its note) for the attestation key, and attest every promotion to it (PROMOTER_BINAUTHZ_ATTESTOR). Needs attestations = true."
  type        = bool
  default     = false

  validation {
    condition     = !var.binauthz || var.attestations
    error_message = "binauthz = true needs attestations = true: the attestor's key is the attestation key."
  }
}

variable "binauthz_attestor_id" {
  description = "Id of the Binary Authorization attestor and of its Container Analysis note."
  type        = string
  default     = "promoted-by-promoter"
}

variable "attestor_viewers" {
  description = "Members (e.g. serviceAccount:deployer@P.iam.gserviceaccount.com) granted roles/binaryauthorization.attestorsViewer on the attestor: the deployers whose Binary Authorization policy requires it."
  type        = list(string)
  default     = []
}

locals {
  attestation_apis = concat(
    var.attestations ? ["cloudkms.googleapis.com"] : [],
    var.binauthz ? ["binaryauthorization.googleapis.com", "containeranalysis.googleapis.com"] : [],
  )

  # The service's environment (set in main.tf's env list): empty when the feature is off, which
  # promoter reads as unset.
  attestation_key_env   = var.attestations ? "gcpkms://${google_kms_crypto_key.attestations[0].id}/cryptoKeyVersions/${data.google_kms_crypto_key_version.attestations[0].version}" : ""
  binauthz_attestor_env = var.binauthz ? google_binary_authorization_attestor.promoter[0].id : ""
}

resource "google_project_service" "attestation_apis" {
  for_each = var.enable_apis ? toset(local.attestation_apis) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_kms_key_ring" "attestations" {
  count = var.attestations ? 1 : 0

  project  = var.project_id
  name     = var.attestation_key_ring
  location = var.region

  depends_on = [google_project_service.attestation_apis]
}

resource "google_kms_crypto_key" "attestations" {
  # checkov:skip=CKV_GCP_43:asymmetric signing keys cannot rotate automatically (Cloud KMS rotates symmetric keys only); a new version is a new key id in promoter and the attestor
  count = var.attestations ? 1 : 0

  name     = var.attestation_key
  key_ring = google_kms_key_ring.attestations[0].id
  purpose  = "ASYMMETRIC_SIGN"
  labels   = var.labels

  version_template {
    algorithm        = "EC_SIGN_P256_SHA256"
    protection_level = var.attestation_key_protection_level
  }

  lifecycle {
    # Attestations signed with it stay verifiable only while its public key exists.
    prevent_destroy = true
  }
}

# The key's first version: its name is the key id in every attestation and the attestor's key id.
data "google_kms_crypto_key_version" "attestations" {
  count = var.attestations ? 1 : 0

  crypto_key = google_kms_crypto_key.attestations[0].id
}

resource "google_kms_crypto_key_iam_member" "promoter_signs" {
  count = var.attestations ? 1 : 0

  crypto_key_id = google_kms_crypto_key.attestations[0].id
  role          = "roles/cloudkms.signer" # cloudkms.cryptoKeyVersions.useToSign
  member        = google_service_account.promoter.member
}

resource "google_kms_crypto_key_iam_member" "promoter_reads_public_key" {
  count = var.attestations ? 1 : 0

  crypto_key_id = google_kms_crypto_key.attestations[0].id
  role          = "roles/cloudkms.publicKeyViewer" # cloudkms.cryptoKeyVersions.viewPublicKey
  member        = google_service_account.promoter.member
}

resource "google_container_analysis_note" "promoter" {
  count = var.binauthz ? 1 : 0

  project = var.project_id
  name    = var.binauthz_attestor_id

  attestation_authority {
    hint {
      human_readable_name = "Promoted by promoter"
    }
  }

  depends_on = [google_project_service.attestation_apis]
}

resource "google_binary_authorization_attestor" "promoter" {
  count = var.binauthz ? 1 : 0

  project     = var.project_id
  name        = var.binauthz_attestor_id
  description = "Images promoted by promoter"

  attestation_authority_note {
    note_reference = google_container_analysis_note.promoter[0].name

    public_keys {
      # //cloudkms.googleapis.com/v1/projects/.../cryptoKeyVersions/1: the id promoter names
      # in each occurrence's signature.
      id = data.google_kms_crypto_key_version.attestations[0].id

      pkix_public_key {
        public_key_pem      = data.google_kms_crypto_key_version.attestations[0].public_key[0].pem
        signature_algorithm = data.google_kms_crypto_key_version.attestations[0].public_key[0].algorithm
      }
    }
  }
}

resource "google_binary_authorization_attestor_iam_member" "promoter_reads_attestor" {
  count = var.binauthz ? 1 : 0

  project  = var.project_id
  attestor = google_binary_authorization_attestor.promoter[0].name
  role     = "roles/binaryauthorization.attestorsViewer"
  member   = google_service_account.promoter.member
}

resource "google_binary_authorization_attestor_iam_member" "deployers" {
  for_each = var.binauthz ? toset(var.attestor_viewers) : toset([])

  project  = var.project_id
  attestor = google_binary_authorization_attestor.promoter[0].name
  role     = "roles/binaryauthorization.attestorsViewer"
  member   = each.value
}

resource "google_container_analysis_note_iam_member" "promoter_attaches" {
  count = var.binauthz ? 1 : 0

  project = var.project_id
  note    = google_container_analysis_note.promoter[0].name
  role    = "roles/containeranalysis.notes.attacher"
  member  = google_service_account.promoter.member
}

# Occurrences have no IAM of their own: containeranalysis.occurrences.create is granted on the
# project that holds them. This is the only project-level grant of the module.
resource "google_project_iam_member" "promoter_creates_occurrences" {
  count = var.binauthz ? 1 : 0

  project = var.project_id
  role    = "roles/containeranalysis.occurrences.editor"
  member  = google_service_account.promoter.member
}

output "attestation_key" {
  description = "The key version that signs promotion attestations (promoter verify --key ...), when attestations = true."
  value       = local.attestation_key_env
}

output "binauthz_attestor" {
  description = "The Binary Authorization attestor to require in the prod policy, when binauthz = true."
  value       = local.binauthz_attestor_env
}
