#!/usr/bin/env python3
"""Policy checks that checkov does not make.

    policy.py [ROOT]      (ROOT: the repository root; default .)

  iam-scope        no project-, folder- or organisation-level IAM resource in infra/: every grant
                   is on a repository, topic, subscription, service account or the service.
  public           no allUsers / allAuthenticatedUsers member anywhere in infra/.
  invoker          roles/run.invoker is granted, and only to the push identity
                   (google_service_account.push).
  push             push subscriptions: OIDC token of the push identity, ack deadline 600 s,
                   exponential retry policy, dead-letter policy.
  cloud-run        request timeout >= the ack deadline, min instances 0, CPU only during requests.
  dockerfile-user  the final stage of the Dockerfile sets USER, and not to root / 0.
  skip-reasons     every `checkov:skip=CHECK` carries a written reason: `checkov:skip=CHECK:reason`.
  deploy           cloudbuild.yaml deploys Cloud Run by digest with --no-allow-unauthenticated.
  scheduler        each Cloud Scheduler job publishes to the events topic a message whose only
                   attribute is ce-type; the identity Cloud Scheduler publishes with (the Google
                   APIs service agent, PROJECT_NUMBER@cloudservices) holds roles/pubsub.publisher
                   on that topic, and nothing else anywhere.
  attestation      the attestation key is an ASYMMETRIC_SIGN key of EC_SIGN_P256_SHA256 (the one
                   algorithm promoter signs with); Cloud KMS roles only on that key
                   (google_kms_crypto_key_iam_member), only roles/cloudkms.signer,
                   roles/cloudkms.publicKeyViewer or roles/cloudkms.signerVerifier, only for the
                   service account; the attestor only ever grants attestorsViewer; the one
                   project-level grant allowed anywhere is roles/containeranalysis.occurrences.editor
                   to the service account (occurrences have no IAM of their own).
  state-repository roles/artifactregistry.repoAdmin (promoter deletes obsolete index entries) only
                   on a repository this configuration creates for promoter's state, never on a
                   stage repository; roles/artifactregistry.admin nowhere; the service is told
                   where that repository is (PROMOTER_STATE_REPOSITORY).
"""

from __future__ import annotations

import pathlib
import re
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import hclutil  # noqa: E402

PUSH_IDENTITY = "google_service_account.push."
BROAD_IAM = re.compile(r"^google_(project|folder|organization)_iam_")
IAM_RESOURCE = re.compile(r"_iam_(member|binding|policy)$")
ACK_DEADLINE = 600
EVENTS_TOPIC = "google_pubsub_topic.events."
# Cloud Scheduler publishes "as a Google APIs service account"
# (https://cloud.google.com/scheduler/docs/creating): PROJECT_NUMBER@cloudservices.gserviceaccount.com.
SCHEDULER_PUBLISHER = "@cloudservices.gserviceaccount.com"
STATE_REPOSITORY = "google_artifact_registry_repository."
REPO_ADMIN = "roles/artifactregistry.repoAdmin"
SERVICE_ACCOUNT = "google_service_account.promoter."
KMS_IAM = re.compile(r"^google_kms_.*_iam_")
KMS_ROLES = {"roles/cloudkms.signer", "roles/cloudkms.publicKeyViewer", "roles/cloudkms.signerVerifier"}
ATTESTOR_IAM = re.compile(r"^google_binary_authorization_attestor_iam_")
# Creating a Container Analysis occurrence needs containeranalysis.occurrences.create on the
# project that holds it: occurrences have no resource-level IAM.
OCCURRENCES_ROLE = "roles/containeranalysis.occurrences.editor"
AR_ADMIN = "roles/artifactregistry.admin"


def seconds(value) -> float | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(value))
    return float(match.group(1)) if match else None


def locals_text(root: pathlib.Path) -> dict[str, str]:
    """Every `locals` value under infra/, as text (a member is often `local.NAME`)."""
    values: dict[str, str] = {}
    for path in hclutil.tf_files(root):
        for block in hclutil.load(path).get("locals", []):
            for name, value in block.items():
                values[hclutil.unq(name)] = str(value)
    return values


def resolve(value, local_values: dict[str, str]) -> str:
    """A member or reference with `${local.NAME}` replaced by that local's text."""
    text = str(value)
    return re.sub(r"\$\{local\.([A-Za-z0-9_]+)\}", lambda m: local_values.get(m.group(1), m.group(0)), text)


def check_scheduler(where: str, body: dict) -> list[str]:
    errors = []
    targets = hclutil.blocks(body, "pubsub_target")
    if not targets:
        return [f"scheduler: {where}: only Pub/Sub targets are expected here (pubsub_target to the events topic)"]
    target = targets[0]
    if EVENTS_TOPIC not in str(hclutil.attr(target, "topic_name", "")):
        errors.append(f"scheduler: {where}: publishes to {hclutil.attr(target, 'topic_name')!r}; reconcile events go to the events topic ({EVENTS_TOPIC.rstrip('.')})")
    attributes = hclutil.attr(target, "attributes") or {}
    names = {hclutil.unq(k) for k in attributes} if isinstance(attributes, dict) else set()
    if names != {"ce-type"}:
        errors.append(f"scheduler: {where}: message attributes are {sorted(names)}; exactly ce-type is expected (promoter then takes the Pub/Sub message id as the event id, so every tick is a new event)")
    return errors


def check_terraform(root: pathlib.Path) -> list[str]:
    errors: list[str] = []
    invoker_grants = 0
    ack_deadlines: list[int] = []
    services = []
    local_values = locals_text(root)
    scheduler_jobs = 0
    scheduler_grants = 0

    for path, rtype, rname, body in hclutil.resources(root):
        where = f"{path.relative_to(root)}: {rtype}.{rname}"

        if rtype == "google_cloud_scheduler_job":
            scheduler_jobs += 1
            errors.extend(check_scheduler(where, body))

        if BROAD_IAM.match(rtype):
            member = str(hclutil.attr(body, "member", ""))
            occurrences = (rtype == "google_project_iam_member" and hclutil.attr(body, "role") == OCCURRENCES_ROLE
                           and SERVICE_ACCOUNT in member)
            if not occurrences:
                errors.append(f"iam-scope: {where}: project/folder/organisation-level IAM is forbidden; grant on the repository, topic or service instead (the one exception: {OCCURRENCES_ROLE} to the service account, for Binary Authorization occurrences)")

        if KMS_IAM.match(rtype):
            role = hclutil.attr(body, "role")
            member = str(hclutil.attr(body, "member", hclutil.attr(body, "members", "")))
            if rtype != "google_kms_crypto_key_iam_member":
                errors.append(f"attestation: {where}: Cloud KMS roles go on the attestation key itself (google_kms_crypto_key_iam_member), never on a key ring or project")
            if role not in KMS_ROLES:
                errors.append(f"attestation: {where}: grants {role}; promoter needs only {', '.join(sorted(KMS_ROLES))} (sign, read the public key)")
            if SERVICE_ACCOUNT not in member:
                errors.append(f"attestation: {where}: grants {role} to {member}; only the service account ({SERVICE_ACCOUNT.rstrip('.')}) signs attestations")

        if ATTESTOR_IAM.match(rtype) and hclutil.attr(body, "role") != "roles/binaryauthorization.attestorsViewer":
            errors.append(f"attestation: {where}: grants {hclutil.attr(body, 'role')} on the attestor; only roles/binaryauthorization.attestorsViewer is needed (who may change the attestor may admit any image)")

        if rtype == "google_kms_crypto_key":
            template = (hclutil.blocks(body, "version_template") or [{}])[0]
            if hclutil.attr(body, "purpose") != "ASYMMETRIC_SIGN" or hclutil.attr(template, "algorithm") != "EC_SIGN_P256_SHA256":
                errors.append(f"attestation: {where}: the attestation key must be purpose ASYMMETRIC_SIGN with version_template.algorithm EC_SIGN_P256_SHA256 (promoter signs ECDSA P-256 SHA-256 only), is {hclutil.attr(body, 'purpose')!r} / {hclutil.attr(template, 'algorithm')!r}")

        if IAM_RESOURCE.search(rtype):
            role = hclutil.attr(body, "role")
            members = []
            if hclutil.attr(body, "member") is not None:
                members.append(str(hclutil.attr(body, "member")))
            if hclutil.attr(body, "members") is not None:
                value = hclutil.attr(body, "members")
                members.extend(str(m) for m in (value if isinstance(value, list) else [value]))
            resolved = [resolve(m, local_values) for m in members]
            if any(SCHEDULER_PUBLISHER in m for m in resolved):
                topic = str(hclutil.attr(body, "topic", ""))
                if rtype == "google_pubsub_topic_iam_member" and role == "roles/pubsub.publisher" and EVENTS_TOPIC in topic:
                    scheduler_grants += 1
                else:
                    errors.append(f"scheduler: {where}: grants {role} to the identity Cloud Scheduler publishes with; it needs roles/pubsub.publisher on the events topic (google_pubsub_topic_iam_member) and nothing else")
            if role in (REPO_ADMIN, AR_ADMIN):
                repository = str(hclutil.attr(body, "repository", ""))
                if role == AR_ADMIN:
                    errors.append(f"state-repository: {where}: {AR_ADMIN} (create and delete repositories) is never needed; promoter's state needs {REPO_ADMIN} on its own repository")
                elif rtype != "google_artifact_registry_repository_iam_member" or not repository.startswith("${" + STATE_REPOSITORY):
                    errors.append(f"state-repository: {where}: {REPO_ADMIN} may delete images; grant it only on the state repository this configuration creates ({STATE_REPOSITORY}NAME), never on a stage repository ({repository or 'no repository'})")
            if role == "roles/run.invoker":
                invoker_grants += 1
                for member in members:
                    if PUSH_IDENTITY not in member:
                        errors.append(f"invoker: {where}: grants roles/run.invoker to {member}; only the push identity ({PUSH_IDENTITY.rstrip('.')}) may invoke the service")
                if not members:
                    errors.append(f"invoker: {where}: roles/run.invoker grant without a member")
            elif rtype.endswith("_iam_policy"):
                errors.append(f"invoker: {where}: authoritative IAM policies are not allowed here (they hide who holds run.invoker)")

        if rtype == "google_pubsub_subscription" and hclutil.blocks(body, "push_config"):
            push = hclutil.blocks(body, "push_config")[0]
            oidc = hclutil.blocks(push, "oidc_token")
            if not oidc or PUSH_IDENTITY not in str(hclutil.attr(oidc[0], "service_account_email", "")):
                errors.append(f"push: {where}: push_config must carry an oidc_token of the push identity")
            elif hclutil.attr(oidc[0], "audience") in (None, ""):
                errors.append(f"push: {where}: oidc_token needs an explicit audience (PROMOTER_PUSH_AUDIENCE)")
            ack = hclutil.attr(body, "ack_deadline_seconds")
            if ack != ACK_DEADLINE:
                errors.append(f"push: {where}: ack_deadline_seconds is {ack!r}, must be {ACK_DEADLINE}")
            else:
                ack_deadlines.append(ack)
            retry = hclutil.blocks(body, "retry_policy")
            if not retry or hclutil.attr(retry[0], "minimum_backoff") is None or hclutil.attr(retry[0], "maximum_backoff") is None:
                errors.append(f"push: {where}: needs retry_policy with minimum_backoff and maximum_backoff (exponential backoff)")
            dlq = hclutil.blocks(body, "dead_letter_policy")
            if not dlq or hclutil.attr(dlq[0], "dead_letter_topic") is None:
                errors.append(f"push: {where}: needs a dead_letter_policy")

        if rtype == "google_cloud_run_v2_service":
            services.append((where, body))

    text = "\n".join(p.read_text(encoding="utf-8") for p in hclutil.tf_files(root))
    for public in ("allUsers", "allAuthenticatedUsers"):
        if re.search(rf'"{public}"', text):
            errors.append(f"public: {public} appears in infra/: nothing here may be public")

    if scheduler_jobs and not scheduler_grants:
        errors.append("scheduler: a Cloud Scheduler job publishes to the events topic, but no google_pubsub_topic_iam_member grants roles/pubsub.publisher there to the identity it publishes with (PROJECT_NUMBER@cloudservices.gserviceaccount.com)")

    if invoker_grants == 0:
        errors.append("invoker: no roles/run.invoker grant for the push identity: Pub/Sub could not deliver")

    if not services:
        errors.append("cloud-run: no google_cloud_run_v2_service in infra/")
    for where, body in services:
        template = (hclutil.blocks(body, "template") or [{}])[0]
        timeout = seconds(hclutil.attr(template, "timeout", ""))
        needed = max(ack_deadlines or [ACK_DEADLINE])
        if timeout is None or timeout < needed:
            errors.append(f"cloud-run: {where}: template.timeout must be >= the ack deadline ({needed}s), is {hclutil.attr(template, 'timeout')!r}")
        scaling = (hclutil.blocks(template, "scaling") or [{}])[0]
        if hclutil.attr(scaling, "min_instance_count") != 0:
            errors.append(f"cloud-run: {where}: scaling.min_instance_count must be 0")
        for container in hclutil.blocks(template, "containers"):
            resources = (hclutil.blocks(container, "resources") or [{}])[0]
            if hclutil.attr(resources, "cpu_idle") is not True:
                errors.append(f"cloud-run: {where}: containers.resources.cpu_idle must be true (CPU only during requests)")
            state = [e for e in hclutil.blocks(container, "env") if hclutil.attr(e, "name") == "PROMOTER_STATE_REPOSITORY"]
            if not state:
                errors.append(f"state-repository: {where}: PROMOTER_STATE_REPOSITORY is not set: promoter would keep its state beside the first stage, where it may not delete")
    return errors


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\r?\n", " ", text)
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(None, 1)
        out.append((parts[0].upper(), parts[1] if len(parts) > 1 else ""))
    return out


def check_dockerfile(root: pathlib.Path) -> list[str]:
    path = root / "Dockerfile"
    if not path.exists():
        return ["dockerfile-user: Dockerfile is missing"]
    instructions = dockerfile_instructions(path.read_text(encoding="utf-8"))
    starts = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    if not starts:
        return ["dockerfile-user: Dockerfile has no FROM"]
    final = instructions[starts[-1]:]
    users = [arg.strip() for op, arg in final if op == "USER"]
    if not users:
        return ["dockerfile-user: the final stage has no USER instruction: it must run as a non-root user (e.g. USER 65532:65532)"]
    user = users[-1].split(":", 1)[0].strip()
    if user in ("", "root", "0") or user.startswith("$"):
        return [f"dockerfile-user: the final stage runs as {users[-1]!r}: it must be a fixed non-root user"]
    return []


SKIP = re.compile(r"checkov:skip=([A-Za-z0-9_]+)(?::(.*))?")


def check_skip_reasons(root: pathlib.Path) -> list[str]:
    errors = []
    files = list(hclutil.tf_files(root)) + [root / "Dockerfile"]
    for path in files:
        if not path.exists():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in SKIP.finditer(line):
                reason = (match.group(2) or "").strip()
                if len(reason) < 10:
                    errors.append(f"skip-reasons: {path.relative_to(root)}:{number}: checkov skip of {match.group(1)} without a written reason (checkov:skip={match.group(1)}:<why>)")
    return errors


def check_cloudbuild(root: pathlib.Path) -> list[str]:
    path = root / "cloudbuild.yaml"
    if not path.exists():
        return ["deploy: cloudbuild.yaml is missing"]
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    errors = []
    deploys = 0
    for index, step in enumerate(doc.get("steps") or []):
        args = step.get("args") or []
        text = " ".join(str(a) for a in (args if isinstance(args, list) else [args]))
        text += " " + str(step.get("script") or "")
        text = re.sub(r"\\\s*\n", " ", text)
        where = f"cloudbuild.yaml: step {step.get('id', index)!s}"
        if re.search(r"\brun\s+deploy\b", text) or (str(step.get("entrypoint", "")) == "gcloud" and "deploy" in text):
            deploys += 1
            if "--no-allow-unauthenticated" not in text:
                errors.append(f"deploy: {where}: gcloud run deploy needs --no-allow-unauthenticated")
            if re.search(r"--allow-unauthenticated\b", text):
                errors.append(f"deploy: {where}: --allow-unauthenticated makes the service public")
            image = re.search(r"--image(?:=|\s+)(\S+)", text)
            if not image or "@" not in image.group(1):
                errors.append(f"deploy: {where}: deploy by digest (--image=...@sha256:...)")
    if deploys == 0:
        errors.append("deploy: cloudbuild.yaml has no gcloud run deploy step")
    return errors


def main(argv: list[str]) -> int:
    root = pathlib.Path(argv[1] if len(argv) > 1 else ".").resolve()
    errors = check_terraform(root) + check_dockerfile(root) + check_skip_reasons(root) + check_cloudbuild(root)
    for error in errors:
        print(f"policy: {error}")
    if errors:
        print(f"policy: FAILED ({len(errors)} problem(s))")
        return 1
    print("policy: iam-scope, public, invoker, push, cloud-run, dockerfile-user, skip-reasons, deploy, scheduler, state-repository, attestation: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
