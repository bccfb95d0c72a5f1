"""The checks bite: each mutation of a copy of the repository makes the matching check fail, and
the unmutated copy passes. Run through infra/checks/run (which puts hadolint and checkov on PATH).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATIC = HERE / "static.py"

# The environment variables infra/ and cloudbuild.yaml set today; a fake src/ holding exactly these
# literals makes the contract tests independent of the state of the real src/.
DEPLOYED_NAMES = [
    "PROMOTER_EVENTS_TOPIC",
    "PROMOTER_PUSH_AUTH",
    "PROMOTER_PUSH_AUDIENCE",
    "PROMOTER_PUSH_SERVICE_ACCOUNTS",
    "REGISTRY",
    "PROD_REGISTRY",
    "FAST_FEEDBACK_PATH",
    "EXTENDED_TEST_PATH",
    "PROD_PATH",
    "PROMOTER_STATE_REPOSITORY",
    "PROMOTER_ATTESTATION_KEY",
    "PROMOTER_BINAUTHZ_ATTESTOR",
    "SOURCE_REGISTRY",
    "SOURCE_STAGE",
    "DEST_STAGE",
]

MODULE = "infra/modules/promoter/main.tf"
ATTESTATION = "infra/modules/promoter/attestation.tf"


def copy_tree(dest: pathlib.Path, real_src: bool) -> pathlib.Path:
    for name in ("Dockerfile", ".dockerignore", "cloudbuild.yaml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(
        REPO / "infra", dest / "infra",
        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".terraform", "*.tfstate*"),
    )
    if real_src:
        shutil.copytree(REPO / "src", dest / "src")
    else:
        (dest / "src").mkdir()
        consts = "\n".join(f'pub const {n}: &str = "{n}";' for n in DEPLOYED_NAMES)
        (dest / "src" / "config.rs").write_text(consts + "\n")
    return dest


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the deployment files with a fake src/ that reads exactly DEPLOYED_NAMES."""
    return copy_tree(tmp_path, real_src=False)


def mutate(root: pathlib.Path, rel: str, old: str, new: str, count: int = 1) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, f"mutation target {old!r} not in {rel}: update the test"
    path.write_text(text.replace(old, new, count))


def append(root: pathlib.Path, rel: str, text: str) -> None:
    with open(root / rel, "a") as handle:
        handle.write(text)


def check(root: pathlib.Path, *only: str) -> tuple[int, str]:
    cmd = [sys.executable, str(STATIC), str(root)]
    if only:
        cmd += ["--only", ",".join(only)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def needs(tool: str):
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} not on PATH (run infra/checks/run)")


def fails(root: pathlib.Path, check_name: str, expect: str) -> str:
    rc, out = check(root, check_name)
    assert rc != 0, f"{check_name} should fail:\n{out}"
    assert expect in out, f"{check_name} failed, but not for {expect!r}:\n{out}"
    return out


# ---- unmutated -------------------------------------------------------------------------------

@needs("hadolint")
@needs("checkov")
def test_unmutated_tree_passes_every_check_against_the_real_src(tmp_path):
    root = copy_tree(tmp_path, real_src=True)
    rc, out = check(root)
    assert rc == 0, out


def test_unmutated_tree_passes_with_a_src_that_reads_the_deployed_names(tree):
    rc, out = check(tree, "hcl", "contract", "policy")
    assert rc == 0, out
    for name in DEPLOYED_NAMES:
        assert name in out


# ---- a role widened to project level ------------------------------------------------------------

PROJECT_GRANT = """
resource "google_project_iam_member" "widened" {
  project = var.project_id
  role    = "roles/artifactregistry.writer"
  member  = google_service_account.promoter.member
}
"""


def test_project_level_role_for_the_service_account_fails(tree):
    append(tree, MODULE, PROJECT_GRANT)
    assert check(tree, "hcl")[0] == 0  # the mutation itself is valid HCL
    fails(tree, "policy", "google_project_iam_member.widened")


def test_project_level_binding_in_the_example_root_fails(tree):
    append(tree, "infra/examples/default/main.tf", PROJECT_GRANT.replace("google_project_iam_member", "google_project_iam_binding").replace("member  =", "members = [").replace(".member\n", ".member]\n"))
    fails(tree, "policy", "iam-scope")


# ---- run.invoker beyond the push identity -----------------------------------------------------

def test_invoker_for_the_service_account_fails(tree):
    mutate(tree, MODULE, "members  = [google_service_account.push.member]",
           "members  = [google_service_account.push.member, google_service_account.promoter.member]")
    fails(tree, "policy", "google_service_account.promoter.member")


def test_public_invoker_fails(tree):
    mutate(tree, MODULE, "members  = [google_service_account.push.member]", 'members  = ["allUsers"]')
    out = fails(tree, "policy", "invoker")
    assert "allUsers" in out


def test_push_without_oidc_identity_fails(tree):
    mutate(tree, MODULE, "service_account_email = google_service_account.push.email",
           "service_account_email = google_service_account.promoter.email")
    fails(tree, "policy", "oidc_token")


# ---- the reconcile schedule: Cloud Scheduler's publisher, on the events topic only -------------

SCHEDULER_GRANT = 'resource "google_pubsub_topic_iam_member" "scheduler_publishes_reconcile" {'


def block_span(text: str, header: str) -> tuple[int, int]:
    """Start and end (after its closing line) of the top-level block that opens with header."""
    start = text.index(header)
    return start, text.index("\n}\n", start) + 3


def test_scheduler_publisher_widened_to_project_level_fails(tree):
    path = tree / MODULE
    text = path.read_text()
    start, end = block_span(text, SCHEDULER_GRANT)
    widened = text[start:end].replace("google_pubsub_topic_iam_member", "google_project_iam_member")
    widened = widened.replace("  topic   = google_pubsub_topic.events.name\n", "")
    text = text[:start] + widened + text[end:]
    path.write_text(text.replace("google_pubsub_topic_iam_member.scheduler_publishes_reconcile", "google_project_iam_member.scheduler_publishes_reconcile"))
    assert check(tree, "hcl")[0] == 0  # the mutation itself is valid HCL
    out = fails(tree, "policy", "iam-scope")
    assert "scheduler:" in out, out


def test_scheduler_publisher_on_another_topic_fails(tree):
    path = tree / MODULE
    text = path.read_text()
    start, end = block_span(text, SCHEDULER_GRANT)
    grant = text[start:end].replace("google_pubsub_topic.events.name", "google_pubsub_topic.promotions.name")
    path.write_text(text[:start] + grant + text[end:])
    fails(tree, "policy", "scheduler")


def test_scheduler_without_its_publisher_grant_fails(tree):
    path = tree / MODULE
    text = path.read_text()
    start, end = block_span(text, SCHEDULER_GRANT)
    text = text[:start] + text[end:]
    path.write_text(text.replace("    google_pubsub_topic_iam_member.scheduler_publishes_reconcile,\n", ""))
    assert check(tree, "hcl")[0] == 0
    fails(tree, "policy", "no google_pubsub_topic_iam_member grants roles/pubsub.publisher")


def test_scheduler_publishing_to_the_promotions_topic_fails(tree):
    mutate(tree, MODULE, "topic_name = google_pubsub_topic.events.id", "topic_name = google_pubsub_topic.promotions.id")
    fails(tree, "policy", "reconcile events go to the events topic")


def test_scheduler_message_with_an_event_id_fails(tree):
    # A fixed ce-id would make every tick the same event, deduplicated after the first.
    mutate(tree, MODULE, '"ce-type" = "reconcile"', '"ce-type" = "reconcile"\n      "ce-id"   = "tick"')
    fails(tree, "policy", "exactly ce-type")


# ---- promoter's state repository: repoAdmin there and nowhere else -------------------------------

STATE_GRANT = 'resource "google_artifact_registry_repository_iam_member" "state_admin" {'

PROJECT_STATE_GRANT = """resource "google_project_iam_member" "state_admin" {
  project = var.project_id
  role    = "roles/artifactregistry.repoAdmin"
  member  = google_service_account.promoter.member
}
"""


def test_repo_admin_on_a_stage_repository_fails(tree):
    mutate(tree, MODULE, '"roles/artifactregistry.writer"', '"roles/artifactregistry.repoAdmin"')
    fails(tree, "policy", "never on a stage repository")


def test_repo_admin_widened_to_project_level_fails(tree):
    path = tree / MODULE
    text = path.read_text()
    start, end = block_span(text, STATE_GRANT)
    text = text[:start] + PROJECT_STATE_GRANT + text[end:]
    path.write_text(text.replace("google_artifact_registry_repository_iam_member.state_admin", "google_project_iam_member.state_admin"))
    assert check(tree, "hcl")[0] == 0
    out = fails(tree, "policy", "iam-scope")
    assert "state-repository:" in out, out


def test_artifact_registry_admin_anywhere_fails(tree):
    mutate(tree, MODULE, '"roles/artifactregistry.repoAdmin"', '"roles/artifactregistry.admin"')
    fails(tree, "policy", "is never needed")


def test_state_repository_not_set_on_the_service_fails(tree):
    path = tree / MODULE
    text = path.read_text()
    start = text.index('      env {\n        name  = "PROMOTER_STATE_REPOSITORY"')
    end = text.index("      }\n", start) + len("      }\n")
    path.write_text(text[:start] + text[end:])
    fails(tree, "policy", "PROMOTER_STATE_REPOSITORY is not set")


# ---- a variable renamed on one side only ------------------------------------------------------

def test_env_renamed_in_infra_only_fails(tree):
    mutate(tree, MODULE, '"PROMOTER_PUSH_AUDIENCE"', '"PROMOTER_PUSH_AUD"')
    fails(tree, "contract", "PROMOTER_PUSH_AUD,")


def test_env_renamed_in_cloudbuild_only_fails(tree):
    mutate(tree, "cloudbuild.yaml", "- SOURCE_STAGE=", "- SRC_STAGE=")
    fails(tree, "contract", "sets SRC_STAGE")


def test_env_added_to_gcloud_deploy_fails_when_the_binary_does_not_read_it(tree):
    mutate(tree, "cloudbuild.yaml", "--no-allow-unauthenticated \\",
           "--no-allow-unauthenticated --update-env-vars=PROMOTER_LOG_LEVEL=debug \\")
    fails(tree, "contract", "sets PROMOTER_LOG_LEVEL")


def test_env_renamed_in_the_binary_only_fails(tree):
    mutate(tree, "src/config.rs", '"PROD_PATH"', '"PROD_STAGE_PATH"')
    fails(tree, "contract", "sets PROD_PATH")


# ---- the image runs as root ----------------------------------------------------------------------

def test_user_root_fails_policy(tree):
    mutate(tree, "Dockerfile", "USER 65532:65532", "USER root")
    fails(tree, "policy", "dockerfile-user")


def test_user_line_removed_fails_policy(tree):
    mutate(tree, "Dockerfile", "USER 65532:65532\n", "")
    fails(tree, "policy", "no USER instruction")


def test_user_in_an_earlier_stage_only_fails_policy(tree):
    mutate(tree, "Dockerfile", "USER 65532:65532\n", "")
    mutate(tree, "Dockerfile", "WORKDIR /app\n", "WORKDIR /app\nUSER 65532:65532\n")
    fails(tree, "policy", "no USER instruction")


@needs("hadolint")
def test_user_root_fails_hadolint(tree):
    mutate(tree, "Dockerfile", "USER 65532:65532", "USER root")
    fails(tree, "hadolint", "DL3002")


@needs("checkov")
def test_user_root_fails_checkov(tree):
    mutate(tree, "Dockerfile", "USER 65532:65532", "USER root")
    fails(tree, "checkov", "CKV_DOCKER_8")


@needs("checkov")
def test_user_line_removed_fails_checkov(tree):
    mutate(tree, "Dockerfile", "USER 65532:65532\n", "")
    fails(tree, "checkov", "CKV_DOCKER_3")


# ---- other invariants ----------------------------------------------------------------------------

def test_checkov_skip_without_a_reason_fails(tree):
    path = tree / MODULE
    text = path.read_text()
    marker = "#checkov:skip=CKV_GCP_83:"
    start = text.index(marker)
    end = text.index("\n", start)
    path.write_text(text[:start] + "#checkov:skip=CKV_GCP_83" + text[end:])
    fails(tree, "policy", "without a written reason")


@needs("checkov")
def test_checkov_finding_without_a_skip_fails(tree):
    path = tree / MODULE
    lines = [l for l in path.read_text().splitlines(keepends=True) if "#checkov:skip=CKV_GCP_83" not in l]
    path.write_text("".join(lines))
    fails(tree, "checkov", "CKV_GCP_83")


@needs("checkov")
def test_state_repository_without_its_checkov_skip_fails(tree):
    path = tree / MODULE
    lines = [l for l in path.read_text().splitlines(keepends=True) if "#checkov:skip=CKV_GCP_84" not in l]
    path.write_text("".join(lines))
    fails(tree, "checkov", "CKV_GCP_84")


def test_ack_deadline_other_than_600_fails(tree):
    mutate(tree, MODULE, "ack_deadline_seconds       = 600", "ack_deadline_seconds       = 60")
    fails(tree, "policy", "ack_deadline_seconds")


def test_request_timeout_below_the_ack_deadline_fails(tree):
    mutate(tree, MODULE, 'timeout                          = "600s"', 'timeout                          = "300s"')
    fails(tree, "policy", "template.timeout")


def test_cpu_always_allocated_fails(tree):
    mutate(tree, MODULE, "cpu_idle          = true", "cpu_idle          = false")
    fails(tree, "policy", "cpu_idle")


def test_push_without_dead_letter_policy_fails(tree):
    path = tree / MODULE
    text = path.read_text()
    start = text.index("  dead_letter_policy {")
    end = text.index("}\n", start) + 2
    path.write_text(text[:start] + text[end:])
    fails(tree, "policy", "dead_letter_policy")


def test_public_deploy_fails(tree):
    mutate(tree, "cloudbuild.yaml", "--no-allow-unauthenticated", "--allow-unauthenticated")
    fails(tree, "policy", "--no-allow-unauthenticated")


def test_deploy_by_tag_fails(tree):
    mutate(tree, "cloudbuild.yaml", 'promoter@$$(cat /workspace/digest)" \\\n          --no-allow',
           'promoter:${_VERSION}" \\\n          --no-allow')
    fails(tree, "policy", "by digest")


def test_unparsable_terraform_fails(tree):
    append(tree, MODULE, '\nresource "google_pubsub_topic" "broken" {\n  name = \n')
    fails(tree, "hcl", "does not parse")


# ---- attestations: the key, its grants, the attestor, the one project-level exception ---------

def test_occurrences_editor_for_another_member_fails(tree):
    mutate(tree, ATTESTATION, """  role    = "roles/containeranalysis.occurrences.editor"
  member  = google_service_account.promoter.member""", """  role    = "roles/containeranalysis.occurrences.editor"
  member  = google_service_account.push.member""")
    fails(tree, "policy", "google_project_iam_member.promoter_creates_occurrences")


def test_a_wider_project_role_for_occurrences_fails(tree):
    mutate(tree, ATTESTATION, '"roles/containeranalysis.occurrences.editor"', '"roles/containeranalysis.admin"')
    fails(tree, "policy", "iam-scope")


def test_kms_admin_on_the_key_fails(tree):
    mutate(tree, ATTESTATION, '"roles/cloudkms.signer"', '"roles/cloudkms.admin"')
    fails(tree, "policy", "attestation")


def test_kms_role_on_the_key_ring_fails(tree):
    append(tree, ATTESTATION, """
resource "google_kms_key_ring_iam_member" "widened" {
  key_ring_id = google_kms_key_ring.attestations[0].id
  role        = "roles/cloudkms.signer"
  member      = google_service_account.promoter.member
}
""")
    assert check(tree, "hcl")[0] == 0
    fails(tree, "policy", "google_kms_key_ring_iam_member.widened")


def test_signing_for_the_push_identity_fails(tree):
    mutate(tree, ATTESTATION, """  role          = "roles/cloudkms.signer" # cloudkms.cryptoKeyVersions.useToSign
  member        = google_service_account.promoter.member""", """  role          = "roles/cloudkms.signer" # cloudkms.cryptoKeyVersions.useToSign
  member        = google_service_account.push.member""")
    fails(tree, "policy", "only the service account")


def test_an_attestation_key_of_another_algorithm_fails(tree):
    mutate(tree, ATTESTATION, '"EC_SIGN_P256_SHA256"\n', '"RSA_SIGN_PSS_2048_SHA256"\n')
    fails(tree, "policy", "EC_SIGN_P256_SHA256")


def test_attestor_editor_for_deployers_fails(tree):
    mutate(tree, ATTESTATION, """  role     = "roles/binaryauthorization.attestorsViewer"
  member   = each.value""", """  role     = "roles/binaryauthorization.attestorsEditor"
  member   = each.value""")
    fails(tree, "policy", "attestorsEditor")
