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
    "PROMOTER_CONFIG",
    "PROMOTER_ATTESTATION_KEY",
    "PROMOTER_BINAUTHZ_ATTESTOR",
    "SOURCE_REGISTRY",
    "SOURCE_STAGE",
    "DEST_STAGE",
]

MODULE = "infra/modules/promoter/main.tf"
VARIABLES = "infra/modules/promoter/variables.tf"
OBSERVABILITY = "infra/modules/promoter/observability.tf"
DASHBOARD = "infra/modules/promoter/dashboard.json"
SAMPLES = "infra/checks/samples/decision-log.jsonl"
RULES_EXAMPLE = "infra/examples/default/rules.yaml.example"
INVOKER_MEMBERS = "members  = concat([google_service_account.push.member], var.approvers)"
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


@pytest.fixture
def real_tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the deployment files with the real src/ (what logs and rules read it for)."""
    return copy_tree(tmp_path, real_src=True)


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
    mutate(tree, MODULE, INVOKER_MEMBERS,
           "members  = concat([google_service_account.push.member, google_service_account.promoter.member], var.approvers)")
    fails(tree, "policy", "google_service_account.promoter.member")


def test_public_invoker_fails(tree):
    mutate(tree, MODULE, INVOKER_MEMBERS, 'members  = ["allUsers"]')
    out = fails(tree, "policy", "invoker")
    assert "allUsers" in out


# ---- run.invoker for approvers: members from var.approvers only, on the service only ----------

def test_invoker_for_the_push_identity_alone_passes(tree):
    mutate(tree, MODULE, INVOKER_MEMBERS, "members  = [google_service_account.push.member]")
    rc, out = check(tree, "policy")
    assert rc == 0, out


def test_invoker_for_approvers_through_a_for_each_member_passes(tree):
    mutate(tree, MODULE, INVOKER_MEMBERS, "members  = [google_service_account.push.member]")
    append(tree, MODULE, """
resource "google_cloud_run_v2_service_iam_member" "approvers" {
  for_each = toset(var.approvers)

  project  = google_cloud_run_v2_service.promoter.project
  location = google_cloud_run_v2_service.promoter.location
  name     = google_cloud_run_v2_service.promoter.name
  role     = "roles/run.invoker"
  member   = each.value
}
""")
    rc, out = check(tree, "hcl", "policy")
    assert rc == 0, out


def test_invoker_for_a_literal_member_beside_the_approvers_fails(tree):
    mutate(tree, MODULE, INVOKER_MEMBERS,
           'members  = concat([google_service_account.push.member], var.approvers, ["user:eve@example.com"])')
    out = fails(tree, "policy", "invoker")
    assert "user:eve@example.com" in out, out


def test_invoker_for_another_variable_fails(tree):
    mutate(tree, MODULE, INVOKER_MEMBERS, "members  = concat([google_service_account.push.member], var.labels_members)")
    fails(tree, "policy", "grants roles/run.invoker to var.labels_members")


def test_invoker_for_each_over_another_list_fails(tree):
    append(tree, MODULE, """
resource "google_cloud_run_v2_service_iam_member" "others" {
  for_each = toset(concat(var.approvers, ["user:eve@example.com"]))

  project  = google_cloud_run_v2_service.promoter.project
  location = google_cloud_run_v2_service.promoter.location
  name     = google_cloud_run_v2_service.promoter.name
  role     = "roles/run.invoker"
  member   = each.value
}
""")
    fails(tree, "policy", "grants roles/run.invoker to each.value")


def test_approvers_as_project_level_invokers_fail(tree):
    append(tree, MODULE, """
resource "google_project_iam_member" "approvers" {
  for_each = toset(var.approvers)
  project  = var.project_id
  role     = "roles/run.invoker"
  member   = each.value
}
""")
    out = fails(tree, "policy", "iam-scope")
    assert "roles/run.invoker only on the service" in out, out


def test_approvers_with_another_role_fail(tree):
    append(tree, MODULE, """
resource "google_pubsub_topic_iam_member" "approvers_publish" {
  for_each = toset(var.approvers)
  project  = var.project_id
  topic    = google_pubsub_topic.events.name
  role     = "roles/pubsub.publisher"
  member   = each.value
}
""")
    fails(tree, "policy", "approvers need roles/run.invoker on the service and nothing else")


def test_approvers_without_a_validation_fail(tree):
    path = tree / VARIABLES
    text = path.read_text()
    start = text.index('variable "approvers" {')
    v_start = text.index("  validation {", start)
    v_end = text.index("  }\n", text.index("error_message", v_start)) + len("  }\n")
    path.write_text(text[:v_start] + text[v_end:])
    assert check(tree, "hcl")[0] == 0
    fails(tree, "policy", 'variable "approvers" needs a validation')


def test_public_member_in_an_example_tfvars_fails(tree):
    append(tree, "infra/examples/default/terraform.tfvars.example", '\napprovers = ["allUsers"]\n')
    fails(tree, "policy", "terraform.tfvars.example: nothing here may be public")


# ---- the rules file: a secret read by the service's account only, mounted where PROMOTER_CONFIG says

SECRET_GRANT = 'resource "google_secret_manager_secret_iam_member" "promoter_reads_rules" {'


def test_secret_accessor_for_the_push_identity_fails(tree):
    path = tree / MODULE
    text = path.read_text()
    start, end = block_span(text, SECRET_GRANT)
    grant = text[start:end].replace("google_service_account.promoter.member", "google_service_account.push.member")
    path.write_text(text[:start] + grant + text[end:])
    fails(tree, "policy", "only the service's account")


def test_secret_admin_role_fails(tree):
    mutate(tree, MODULE, '"roles/secretmanager.secretAccessor"', '"roles/secretmanager.admin"')
    fails(tree, "policy", "is the one Secret Manager role it needs")


def test_secret_accessor_widened_to_project_level_fails(tree):
    append(tree, MODULE, """
resource "google_project_iam_member" "secrets" {
  project = var.project_id
  role    = "roles/secretmanager.secretAccessor"
  member  = google_service_account.promoter.member
}
""")
    out = fails(tree, "policy", "iam-scope")
    assert "secrets:" in out, out


def test_secret_accessor_on_a_secret_from_elsewhere_fails(tree):
    mutate(tree, MODULE, "  secret_id = google_secret_manager_secret.rules[0].secret_id\n",
           '  secret_id = "projects/other/secrets/everything"\n')
    fails(tree, "policy", "only on a secret this configuration creates")


def test_rules_mounted_elsewhere_than_promoter_config_fails(tree):
    mutate(tree, MODULE, "mount_path = local.rules_mount_path", 'mount_path = "/etc/rules"')
    fails(tree, "policy", "PROMOTER_CONFIG is /etc/promoter/rules.yaml")


def test_rules_item_under_another_name_fails(tree):
    mutate(tree, MODULE, "path    = local.rules_file_name", 'path    = "promoter.yaml"')
    fails(tree, "policy", "/etc/promoter/promoter.yaml")


def test_rules_secret_at_latest_fails(tree):
    mutate(tree, MODULE, "version = google_secret_manager_secret_version.rules[0].version", 'version = "latest"')
    fails(tree, "policy", "pin the version Terraform writes")


def test_rules_from_a_secret_of_elsewhere_fails(tree):
    mutate(tree, MODULE, "secret       = google_secret_manager_secret.rules[0].secret_id", 'secret       = "projects/other/secrets/rules"')
    fails(tree, "policy", "from a secret this configuration creates")


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


# ---- observability: metrics, dashboard and alert name what the service really logs --------------

def test_the_committed_sample_is_the_service_s_decision_lines():
    sys.path.insert(0, str(HERE))
    import logs

    lines = logs.payloads(REPO / SAMPLES)
    decisions = {line["decision"] for line in lines if "decision" in line}
    # one line per kind of answer, captured from the real binary
    assert {"promoted", "already-promoted", "pending", "recorded", "rejected", "ignored", "reconciled", "retry"} <= decisions
    promoted = next(line for line in lines if line.get("decision") == "promoted")
    assert promoted["message"] == "decision"
    for field in ("eventId", "eventType", "image", "digest", "fromStage", "toStage", "reason", "skipped", "superseded"):
        assert field in promoted, field
    # what Cloud Logging lifts out of the line is not in jsonPayload
    assert "severity" not in promoted and "logging.googleapis.com/trace" not in promoted


def test_log_metric_label_on_a_field_the_service_does_not_log_fails(real_tree):
    mutate(real_tree, OBSERVABILITY, "EXTRACT(jsonPayload.fromStage)", "EXTRACT(jsonPayload.from_stage)")
    out = fails(real_tree, "logs", "jsonPayload.from_stage: no captured line of the service has it")
    assert "no tracing macro under src/ logs a field 'from_stage'" in out, out


def test_log_metric_filter_on_a_decision_the_service_never_logs_fails(real_tree):
    mutate(real_tree, OBSERVABILITY, 'jsonPayload.message=\\"promotion\\""',
           'jsonPayload.message=\\"promotion\\" AND jsonPayload.decision=\\"promoted\\""')
    fails(real_tree, "logs", "matches none of the captured lines")


def test_log_metric_filter_on_a_message_the_service_never_logs_fails(real_tree):
    mutate(real_tree, OBSERVABILITY, 'jsonPayload.message=\\"decision\\"', 'jsonPayload.message=\\"decided\\"')
    fails(real_tree, "logs", "no tracing macro under src/ logs the message 'decided'")


def test_log_metric_filter_on_an_unknown_field_fails(real_tree):
    mutate(real_tree, OBSERVABILITY, "jsonPayload.decision:*", "jsonPayload.outcome:*")
    fails(real_tree, "logs", "jsonPayload.outcome: no captured line")


def test_log_metric_extracting_a_field_some_matched_lines_lack_fails(real_tree):
    # decisions{} counts "event ignored" lines too, which carry no toStage
    mutate(real_tree, OBSERVABILITY, "decision = \"EXTRACT(jsonPayload.decision)\"", "decision = \"EXTRACT(jsonPayload.toStage)\"")
    fails(real_tree, "logs", "jsonPayload.toStage is extracted, but lines the filter matches lack it")


def test_log_metric_over_every_service_s_logs_fails(real_tree):
    mutate(real_tree, OBSERVABILITY, ' AND resource.labels.service_name=\\"${var.service_name}\\""', '"')
    fails(real_tree, "logs", "must keep to the service's logs")


def test_log_metric_label_declared_but_not_extracted_fails(real_tree):
    mutate(real_tree, OBSERVABILITY, '    to_stage   = "EXTRACT(jsonPayload.toStage)"\n', "")
    fails(real_tree, "logs", "label to_stage is declared but never extracted")


def test_a_sample_without_the_field_fails(real_tree):
    # the check reads the evidence: a capture in which the service logged no fromStage
    mutate(real_tree, SAMPLES, '"fromStage":', '"sourceStage":', count=-1)
    fails(real_tree, "logs", "jsonPayload.fromStage: no captured line of the service has it")


def test_the_source_no_longer_logging_the_field_fails(real_tree):
    mutate(real_tree, "src/http/mod.rs", "from_stage = answer.from_stage", "source_stage = answer.from_stage")
    mutate(real_tree, "src/promote/execute.rs", "from_stage = %promotion.from()", "source_stage = %promotion.from()")
    fails(real_tree, "logs", "no tracing macro under src/ logs a field 'fromStage'")


def test_dashboard_charting_an_undefined_metric_fails(real_tree):
    mutate(real_tree, OBSERVABILITY, "decisions_metric         = google_logging_metric.decisions.name",
           "decisions_metric         = google_logging_metric.decision_count.name")
    out = fails(real_tree, "logs", "charts google_logging_metric.decision_count, which is not defined")
    assert "google_logging_metric.decisions is defined but not charted" in out, out


def test_dashboard_with_a_copied_metric_name_fails(real_tree):
    mutate(real_tree, DASHBOARD, "logging.googleapis.com/user/${promotions_metric}", "logging.googleapis.com/user/promoter/promotions")
    fails(real_tree, "logs", "name a metric of this configuration by reference")


def test_dashboard_grouping_by_an_undeclared_label_fails(real_tree):
    mutate(real_tree, DASHBOARD, '"groupByFields": ["metric.label.\\"decision\\""]', '"groupByFields": ["metric.label.\\"kind\\""]')
    fails(real_tree, "logs", "a label it does not declare")


def test_dashboard_placeholder_not_passed_fails(real_tree):
    mutate(real_tree, DASHBOARD, "${dead_letter_alert_policy}", "${alert_policy}")
    fails(real_tree, "logs", "uses ${alert_policy}, which the templatefile call does not pass")


def test_dashboard_that_is_not_json_fails(real_tree):
    mutate(real_tree, DASHBOARD, '"columns": 48,', '"columns": 48')
    fails(real_tree, "logs", "does not render to JSON")


def test_dashboard_logs_panel_on_an_unlogged_decision_fails(real_tree):
    mutate(real_tree, DASHBOARD, '(\\"rejected\\" OR \\"retry\\")', '(\\"rejected\\" OR \\"failed\\")')
    # "rejected" still matches; a value that matches nothing at all does not
    rc, _ = check(real_tree, "logs")
    assert rc == 0
    mutate(real_tree, DASHBOARD, '(\\"rejected\\" OR \\"failed\\")', '(\\"failed\\" OR \\"broken\\")')
    fails(real_tree, "logs", "matches none of the captured lines")


def test_dead_letter_alert_on_another_subscription_fails(real_tree):
    mutate(real_tree, OBSERVABILITY, "subscription_id=\\\"${google_pubsub_subscription.dead_letter.name}",
           "subscription_id=\\\"${google_pubsub_subscription.push[\"events\"].name}")
    fails(real_tree, "logs", "watches pubsub.googleapis.com/subscription/num_undelivered_messages of another subscription")


def test_dead_letter_alert_removed_fails(real_tree):
    path = real_tree / OBSERVABILITY
    text = path.read_text()
    start, end = block_span(text, 'resource "google_monitoring_alert_policy" "dead_letters" {')
    text = text[:start] + text[end:]
    path.write_text(text.replace("    dead_letter_alert_policy = google_monitoring_alert_policy.dead_letters.name\n", ""))
    mutate(real_tree, DASHBOARD, '"alertChart": { "name": "${dead_letter_alert_policy}" }', '"text": { "content": "no alert" }')
    assert check(real_tree, "hcl")[0] == 0
    fails(real_tree, "logs", "no google_monitoring_alert_policy watches")


def test_dead_letter_alert_notifying_the_events_channel_fails(real_tree):
    mutate(real_tree, OBSERVABILITY, "notification_channels = var.alert_notification_channels",
           "notification_channels = concat(var.alert_notification_channels, [google_monitoring_notification_channel.p2p_events.id])")
    fails(real_tree, "logs", "promoter would take the incident for an alert event")


# ---- the example rules file --------------------------------------------------------------------------

def test_rules_example_with_an_unknown_key_fails(real_tree):
    mutate(real_tree, RULES_EXAMPLE, "    soak: 24h", "    soak_time: 24h")
    fails(real_tree, "rules", "unknown key 'soak_time'")


def test_rules_example_with_an_undeclared_signal_fails(real_tree):
    mutate(real_tree, RULES_EXAMPLE, "require: [nft-passed, approved]", "require: [nft-pased, approved]")
    fails(real_tree, "rules", "'nft-pased' is neither built in")


def test_rules_example_promoting_to_an_unknown_stage_fails(real_tree):
    mutate(real_tree, RULES_EXAMPLE, "    to: prod\n", "    to: production\n")
    fails(real_tree, "rules", "promotions[1].to 'production' is not a stage")


def test_rules_example_outside_artifact_registry_fails(real_tree):
    mutate(real_tree, RULES_EXAMPLE, "registry: europe-west2-docker.pkg.dev/prod-proj/tenant/acme", "registry: ghcr.io/acme")
    fails(real_tree, "rules", "is not an Artifact Registry path")


def promoter_binary() -> pathlib.Path | None:
    import os

    candidate = os.environ.get("PROMOTER_BIN") or str(REPO / "target" / "debug" / "promoter")
    path = pathlib.Path(candidate)
    return path if path.is_file() and os.access(path, os.X_OK) else None


@pytest.mark.skipif(promoter_binary() is None, reason="no built promoter binary (PROMOTER_BIN or target/debug/promoter)")
def test_rules_example_is_accepted_by_the_binary():
    proc = subprocess.run([str(promoter_binary()), "rules", "check", str(REPO / RULES_EXAMPLE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for text in ("nft-passed", "approved", "weekend", "nft-suite", "alice@acme.com"):
        assert text in proc.stdout, proc.stdout


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
