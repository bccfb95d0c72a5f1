#!/usr/bin/env python3
"""Policy checks that checkov does not make.

    policy.py [ROOT]      (ROOT: the repository root; default .)

  iam-scope        no project-, folder- or organisation-level IAM resource in infra/: every grant
                   is on a repository, topic, subscription, service account or the service.
  public           no allUsers / allAuthenticatedUsers member anywhere in infra/ (.tf and .tfvars
                   files, examples included).
  invoker          roles/run.invoker is granted to the push identity (google_service_account.push)
                   and otherwise only to members that come from var.approvers (which must carry a
                   validation), only on the service (google_cloud_run_v2_service_iam_*); every
                   member expression is taken apart (concat, lists, each.value of a for_each over
                   var.approvers): any other reference or literal fails. var.approvers holds no
                   other role.
  secrets          roles/secretmanager.secretAccessor, and no other Secret Manager role, only on a
                   secret this configuration creates (google_secret_manager_secret_iam_member),
                   only for the service's account (google_service_account.promoter).
  rules-file       when the service sets PROMOTER_CONFIG, the path is a file of a secret volume
                   mounted in the container (mount_path + item path), from a secret created here,
                   at a version Terraform pins (google_secret_manager_secret_version, not latest).
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
SERVICE_IDENTITY = "google_service_account.promoter."
INVOKER = "roles/run.invoker"
SERVICE_IAM_TYPES = {"google_cloud_run_v2_service_iam_binding", "google_cloud_run_v2_service_iam_member"}
APPROVERS = "var.approvers"
# A member expression that is the push identity.
PUSH_MEMBER = re.compile(r'^(google_service_account\.push\.member|"serviceAccount:\$\{google_service_account\.push\.email\}")$')
# Functions that only combine lists of members (their arguments are taken apart).
LIST_FUNCTIONS = {"concat", "distinct", "toset", "tolist", "sort", "compact", "flatten"}
SECRET = "google_secret_manager_secret."
SECRET_VERSION = "google_secret_manager_secret_version."
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
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


def split_top(text: str) -> list[str]:
    """text split at the commas outside brackets and strings, up to a closing bracket that
    opens nowhere in it (the end of a call whose arguments text starts with)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            current.append(c)
            if c == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
            current.append(c)
        elif c in "([{":
            depth += 1
            current.append(c)
        elif c in ")]}":
            if depth == 0:
                break
            depth -= 1
            current.append(c)
        elif c == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(c)
        i += 1
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def unwrap(expr: str) -> str:
    """An expression without the ${ } python-hcl2 puts around it."""
    e = expr.strip()
    if e.startswith("${") and e.endswith("}"):
        inner = e[2:-1]
        # only when those braces enclose the whole expression (not "${a}-${b}")
        depth = 0
        for c in inner:
            depth += c == "{"
            depth -= c == "}"
            if depth < 0:
                return e
        return inner.strip()
    return e


def member_terms(expr) -> list[str]:
    """The members an expression is made of: lists and list functions taken apart."""
    if isinstance(expr, list):
        return [t for item in expr for t in member_terms(item)]
    e = unwrap(str(expr))
    call = re.fullmatch(r"([a-z_]+)\((.*)\)", e, re.S)
    if call and call.group(1) in LIST_FUNCTIONS:
        return [t for arg in split_top(call.group(2)) for t in member_terms(arg)]
    if e.startswith("[") and e.endswith("]"):
        return [t for item in split_top(e[1:-1]) for t in member_terms(item)]
    return [e]


def members_of(body: dict) -> list[str]:
    terms: list[str] = []
    for name in ("member", "members"):
        if hclutil.attr(body, name) is not None:
            terms.extend(member_terms(hclutil.attr(body, name)))
    return terms


def from_approvers(term: str, body: dict) -> bool:
    """term is var.approvers, or each.value/each.key of a for_each over var.approvers alone."""
    if term == APPROVERS:
        return True
    if term in ("each.value", "each.key"):
        for_each = member_terms(hclutil.attr(body, "for_each", ""))
        return bool(for_each) and all(t == APPROVERS for t in for_each)
    return False


def variables(root: pathlib.Path) -> dict[str, dict]:
    """Every `variable` block under infra/modules/, by name."""
    found: dict[str, dict] = {}
    for path in hclutil.tf_files(root):
        if "modules" not in path.relative_to(root).parts:
            continue
        for block in hclutil.load(path).get("variable", []):
            for name, body in block.items():
                found[hclutil.unq(name)] = body
    return found


def literal_locals(local_values: dict[str, str]) -> dict[str, str]:
    """The locals whose value is a string literal (maybe built of other locals), as text."""
    out = {}
    for name, value in local_values.items():
        text = str(value)
        if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
            out[name] = text[1:-1]
    return out


def substitute(text: str, literals: dict[str, str]) -> str:
    """text with ${local.X} and bare local.X of string literals replaced by their text."""
    for _ in range(10):
        new = re.sub(r"\$\{local\.([A-Za-z0-9_]+)\}", lambda m: literals.get(m.group(1), m.group(0)), text)
        new = re.sub(r"(?<![\w{.])local\.([A-Za-z0-9_]+)\b",
                     lambda m: f'"{literals[m.group(1)]}"' if m.group(1) in literals else m.group(0), new)
        if new == text:
            break
        text = new
    return text


def absolute_paths(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w.:/])/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*", text))


def blocks_or_dynamic(body: dict, name: str) -> list[dict]:
    """Blocks called name, and the content of `dynamic "name"` blocks."""
    found = list(hclutil.blocks(body, name))
    for dyn in hclutil.blocks(body, "dynamic"):
        for key, value in dyn.items():
            if hclutil.unq(key) == name:
                for item in value if isinstance(value, list) else [value]:
                    found.extend(hclutil.blocks(item, "content"))
    return found


def check_rules_file(where: str, template: dict, local_values: dict[str, str]) -> list[str]:
    literals = literal_locals(local_values)
    errors: list[str] = []
    containers = hclutil.blocks(template, "containers")
    configs = [(c, e) for c in containers for e in hclutil.blocks(c, "env") if hclutil.attr(e, "name") == "PROMOTER_CONFIG"]
    if not configs:
        return []
    secret_items: dict[str, set[str]] = {}
    for volume in blocks_or_dynamic(template, "volumes"):
        name = substitute(str(hclutil.attr(volume, "name", "")), literals).strip('"')
        for secret in hclutil.blocks(volume, "secret"):
            if SECRET not in str(hclutil.attr(secret, "secret", "")):
                errors.append(f"rules-file: {where}: volume {name!r} mounts {hclutil.attr(secret, 'secret')!r}; the rules file comes from a secret this configuration creates ({SECRET}NAME)")
                continue
            for item in hclutil.blocks(secret, "items"):
                version = str(hclutil.attr(item, "version", ""))
                if SECRET_VERSION not in version:
                    errors.append(f"rules-file: {where}: volume {name!r} reads version {version!r}; pin the version Terraform writes ({SECRET_VERSION}NAME.version), so that a new rules file is a new revision and every instance reads the same rules")
                item_path = substitute(str(hclutil.attr(item, "path", "")), literals).strip('"')
                secret_items.setdefault(name, set()).add(item_path)
    for container, env in configs:
        value = substitute(str(hclutil.attr(env, "value", "")), literals)
        paths = absolute_paths(value)
        if len(paths) != 1:
            errors.append(f"rules-file: {where}: PROMOTER_CONFIG = {hclutil.attr(env, 'value')!r} names {sorted(paths) or 'no'} absolute path(s); it must name the one rules file")
            continue
        (path,) = paths
        files = set()
        for mount in blocks_or_dynamic(container, "volume_mounts"):
            name = substitute(str(hclutil.attr(mount, "name", "")), literals).strip('"')
            mount_path = substitute(str(hclutil.attr(mount, "mount_path", "")), literals).strip('"').rstrip("/")
            files.update(f"{mount_path}/{item}" for item in secret_items.get(name, ()))
        if path not in files:
            errors.append(f"rules-file: {where}: PROMOTER_CONFIG is {path}, but the container's secret volumes hold {sorted(files) or 'no file'}: the service would not start")
    return errors


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


def check_secret_grant(where: str, rtype: str, role: str, body: dict, terms: list[str]) -> list[str]:
    errors = []
    if role != SECRET_ACCESSOR:
        errors.append(f"secrets: {where}: {role}: the service only reads its rules file; {SECRET_ACCESSOR} is the one Secret Manager role it needs")
    secret = str(hclutil.attr(body, "secret_id", ""))
    if rtype != "google_secret_manager_secret_iam_member" or SECRET not in secret:
        errors.append(f"secrets: {where}: Secret Manager roles only on a secret this configuration creates (google_secret_manager_secret_iam_member, secret_id = {SECRET}NAME...), not {rtype} {secret or ''}".rstrip())
    for term in terms:
        if term != SERVICE_IDENTITY + "member":
            errors.append(f"secrets: {where}: grants {role} to {term}; only the service's account ({SERVICE_IDENTITY}member) reads the rules file")
    return errors


def check_terraform(root: pathlib.Path) -> list[str]:
    errors: list[str] = []
    invoker_grants = 0
    approver_grants = 0
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
            terms = members_of(body)
            if role == INVOKER:
                if not terms:
                    errors.append(f"invoker: {where}: roles/run.invoker grant without a member")
                if rtype not in SERVICE_IAM_TYPES:
                    errors.append(f"invoker: {where}: roles/run.invoker only on the service ({', '.join(sorted(SERVICE_IAM_TYPES))}), not through {rtype}")
                for term in terms:
                    if PUSH_MEMBER.match(term):
                        invoker_grants += 1
                    elif from_approvers(term, body):
                        approver_grants += 1
                    else:
                        errors.append(f"invoker: {where}: grants roles/run.invoker to {term}; only the push identity ({PUSH_IDENTITY.rstrip('.')}) and members from {APPROVERS} may invoke the service")
            elif any(from_approvers(term, body) or APPROVERS in term for term in terms):
                errors.append(f"invoker: {where}: grants {role} to {APPROVERS}; approvers need roles/run.invoker on the service and nothing else")
            if str(role).startswith("roles/secretmanager."):
                errors.extend(check_secret_grant(where, rtype, role, body, terms))
            if rtype.endswith("_iam_policy"):
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

    tfvars = sorted(p for p in (root / "infra").rglob("*.tfvars*") if ".terraform" not in p.parts)
    for path in list(hclutil.tf_files(root)) + tfvars:
        text = path.read_text(encoding="utf-8")
        for public in ("allUsers", "allAuthenticatedUsers"):
            if re.search(rf'"{public}"', text):
                errors.append(f"public: {public} appears in {path.relative_to(root)}: nothing here may be public")

    if approver_grants:
        approvers = variables(root).get("approvers")
        checks = [hclutil.attr(v, "condition", "") for v in hclutil.blocks(approvers or {}, "validation")]
        if approvers is None:
            errors.append(f"invoker: roles/run.invoker goes to {APPROVERS}, but no module declares variable \"approvers\"")
        elif not any(APPROVERS in str(c) and "regex(" in str(c) for c in checks):
            errors.append(f"invoker: roles/run.invoker goes to {APPROVERS}: variable \"approvers\" needs a validation that admits only named members (a regex over each member: user:, group:, ...), so that nothing public is ever granted")

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
        errors.extend(check_rules_file(where, template, local_values))
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
    print("policy: iam-scope, public, invoker, push, cloud-run, dockerfile-user, skip-reasons, deploy, scheduler, state-repository, secrets, rules-file, attestation: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
