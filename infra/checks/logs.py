#!/usr/bin/env python3
"""Observability checks: the log-based metrics, the dashboard and the dead-letter alert count
what the service really logs.

    logs.py [ROOT]      (ROOT: the repository root; default .)

  log-metrics  every google_logging_metric under infra/ scopes its filter to the service's Cloud
               Run logs (resource.type="cloud_run_revision", resource.labels.service_name); every
               jsonPayload.FIELD its filter and its label/value extractors name is a field of the
               lines captured from the real binary (samples/decision-log.jsonl, taken as Cloud
               Logging stores them: jsonPayload is the line without severity, time and the
               logging.googleapis.com/* keys) and a field the source still logs (a tracing macro
               under src/, in tracing-stackdriver's camelCase); its jsonPayload conditions match
               at least one captured line; every extracted field is in each line the filter
               matches; each extractor's label is declared in the metric descriptor.
  dashboard    each google_monitoring_dashboard's templatefile renders to JSON with the variables
               it is given; every logging.googleapis.com/user/ metric it charts is one defined
               here (by reference, not by a copied name) and every metric defined here is charted;
               it groups and names series only by labels the metric declares; logsPanel filters
               pass the jsonPayload test above.
  dead-letter  an alert policy watches pubsub.googleapis.com/subscription/num_undelivered_messages
               of the dead-letter subscription (> 0); no alert policy notifies the p2p-events
               channel, where promoter would read the incident as an alert event.

The samples are refreshed with infra/checks/capture-decision-log (PROMOTER_BIN=... ; it builds
nothing). Only the query-language subset used here is understood (terms joined by AND or
whitespace; =, !=, :, =~ with a string, a parenthesised OR of strings, or *); anything else is
reported rather than guessed.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import hclutil  # noqa: E402
from policy import literal_locals, locals_text, split_top, substitute  # noqa: E402

SAMPLES = pathlib.Path("infra/checks/samples/decision-log.jsonl")  # under ROOT
# Keys Cloud Logging lifts out of a structured line into the LogEntry (not in jsonPayload).
LIFTED = {"severity", "time", "timestamp", "timestampSeconds", "timestampNanos", "httpRequest"}
LIFTED_PREFIX = "logging.googleapis.com/"
USER_METRIC = "logging.googleapis.com/user/"
DEAD_LETTER_METRIC = "pubsub.googleapis.com/subscription/num_undelivered_messages"
DEAD_LETTER_SUBSCRIPTION = "google_pubsub_subscription.dead_letter."
EVENTS_CHANNEL = "google_monitoring_notification_channel.p2p_events"

VALUE = r'"(?:[^"\\]|\\.)*"|\((?:[^()"]|"(?:[^"\\]|\\.)*")*\)|[^\s()"]+'
FIELD = r'[A-Za-z_][\w]*(?:\.(?:[A-Za-z_][\w]*|"[^"]+"))*'
TERM = re.compile(rf"(?P<field>{FIELD})\s*(?P<op>=~|!~|!=|>=|<=|=|:|>|<)\s*(?P<value>{VALUE})")
EXTRACT = re.compile(r"^\s*(?:REGEXP_)?EXTRACT\(\s*(" + FIELD + r")\s*(?:,.*)?\)\s*$", re.S)


# ---- samples and source ----------------------------------------------------------------------

def payloads(path: pathlib.Path) -> list[dict]:
    """The captured lines as Cloud Logging's jsonPayload."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        out.append({k: v for k, v in entry.items() if k not in LIFTED and not k.startswith(LIFTED_PREFIX)})
    return out


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def macro_args(text: str, start: int) -> list[str]:
    """Top-level arguments of the macro call whose "(" is at text[start]."""
    return [a for a in split_top(text[start + 1 :]) if a]


def logged_by_source(root: pathlib.Path) -> tuple[set[str], set[str]]:
    """(fields, messages) of every tracing event macro under src/, fields in camelCase."""
    fields: set[str] = set()
    messages: set[str] = set()
    for path in (root / "src").rglob("*.rs"):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"tracing::(?:trace|debug|info|warn|error)!\s*\(", text):
            args = macro_args(text, match.end() - 1)
            for arg in args:
                named = re.match(r"^[%?]?([a-z_][a-z0-9_]*)\s*(?:=|$)", arg)
                if named and not arg.startswith('"'):
                    fields.add(camel(named.group(1)))
            if args and re.fullmatch(r'"(?:[^"\\]|\\.)*"', args[-1]):
                messages.add(json.loads(args[-1]))
    if messages:
        fields.add("message")
    return fields, messages


# ---- the query subset --------------------------------------------------------------------------

def hcl_string(value) -> str:
    """An HCL string attribute's text with its escapes undone."""
    return re.sub(r'\\(["\\])', r"\1", str(value))


def parse_filter(text: str) -> tuple[list[tuple[str, str, str]], str | None]:
    """([(field, op, value)], unsupported rest or None) of a filter of AND-joined terms."""
    terms = []
    rest = []
    pos = 0
    for match in TERM.finditer(text):
        rest.append(text[pos:match.start()])
        terms.append((match.group("field"), match.group("op"), match.group("value")))
        pos = match.end()
    rest.append(text[pos:])
    leftover = re.sub(r"\bAND\b", " ", " ".join(rest)).strip()
    return terms, (leftover or None)


def payload_path(field: str) -> list[str] | None:
    parts = re.findall(r'[A-Za-z_]\w*|"[^"]+"', field)
    if not parts or parts[0] != "jsonPayload":
        return None
    return [p.strip('"') for p in parts[1:]]


def lookup(payload: dict, path: list[str]):
    value = payload
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None, False
        value = value[part]
    return value, True


def strings_of(value: str) -> list[str] | None:
    value = value.strip()
    if value.startswith("("):
        items = [i.strip() for i in re.split(r"\bOR\b", value[1:-1])]
        return [json.loads(i) if i.startswith('"') else i for i in items]
    if value.startswith('"'):
        return [json.loads(value)]
    return [value]


def holds(payload: dict, path: list[str], op: str, value: str) -> bool:
    found, present = lookup(payload, path)
    if op == ":" and value == "*":
        return present
    if not present:
        return op in ("!=", "!~")
    text = found if isinstance(found, str) else json.dumps(found)
    wanted = strings_of(value) or []
    if op == "=":
        return text in wanted
    if op == "!=":
        return text not in wanted
    if op == ":":
        return any(w.lower() in text.lower() for w in wanted)
    if op == "=~":
        return any(re.search(w, text) for w in wanted)
    if op == "!~":
        return not any(re.search(w, text) for w in wanted)
    raise ValueError(op)


def check_payload_filter(where: str, text: str, lines: list[dict], source: set[str], messages: set[str],
                         extracted: list[str]) -> list[str]:
    """The jsonPayload test of one filter (and the fields extracted from what it matches)."""
    errors = []
    terms, rest = parse_filter(text)
    if rest:
        errors.append(f"log-metrics: {where}: cannot read {rest!r} in filter {text!r} (only AND-joined FIELD OP VALUE terms are checked)")
        return errors
    conditions = []
    for field, op, value in terms:
        path = payload_path(field)
        if path is None:
            continue
        if op not in ("=", "!=", ":", "=~", "!~"):
            errors.append(f"log-metrics: {where}: operator {op} on {field} is not checked here")
            continue
        conditions.append((field, path, op, value))
    for field in [c[0] for c in conditions] + extracted:
        path = payload_path(field) or []
        name = path[0] if path else field
        if not any(lookup(line, path)[1] for line in lines):
            errors.append(f"log-metrics: {where}: {field}: no captured line of the service has it (fields: {', '.join(sorted({k for l in lines for k in l}))})")
        if name not in source:
            errors.append(f"log-metrics: {where}: {field}: no tracing macro under src/ logs a field {name!r} (tracing-stackdriver writes snake_case fields in camelCase)")
    for field, path, op, value in conditions:
        if path == ["message"] and op == "=":
            for wanted in strings_of(value) or []:
                if wanted not in messages:
                    errors.append(f"log-metrics: {where}: {field}={value}: no tracing macro under src/ logs the message {wanted!r}")
    if errors:
        return errors
    matched = [line for line in lines if all(holds(line, path, op, value) for _, path, op, value in conditions)]
    if conditions and not matched:
        wanted = " AND ".join(f"{f}{op}{v}" for f, _, op, v in conditions)
        errors.append(f"log-metrics: {where}: {wanted} matches none of the captured lines of the service")
    for field in extracted:
        path = payload_path(field) or []
        missing = [line.get("message") for line in matched if not lookup(line, path)[1]]
        if missing:
            errors.append(f"log-metrics: {where}: {field} is extracted, but lines the filter matches lack it (messages {sorted(set(map(str, missing)))})")
    return errors


def scoped(text: str) -> list[str]:
    """What is missing for the filter to keep to the service's Cloud Run logs."""
    terms, _ = parse_filter(text)
    problems = []
    if not any(f == "resource.type" and op == "=" and strings_of(v) == ["cloud_run_revision"] for f, op, v in terms):
        problems.append('resource.type="cloud_run_revision"')
    if not any(f in ("resource.labels.service_name", 'resource.labels."service_name"') and op == "=" and ("var.service_name" in v or "google_cloud_run_v2_service." in v) for f, op, v in terms):
        problems.append('resource.labels.service_name="${var.service_name}"')
    return problems


# ---- the resources ------------------------------------------------------------------------------

def metric_labels(body: dict) -> set[str]:
    labels = set()
    for descriptor in hclutil.blocks(body, "metric_descriptor"):
        for label in hclutil.blocks(descriptor, "labels"):
            labels.add(str(hclutil.attr(label, "key")))
    return labels


def check_metrics(root: pathlib.Path, lines: list[dict], source: set[str], messages: set[str]) -> tuple[list[str], dict]:
    errors: list[str] = []
    literals = literal_locals(locals_text(root))
    metrics: dict[str, set[str]] = {}
    for path, rtype, rname, body in hclutil.resources(root):
        if rtype != "google_logging_metric":
            continue
        where = f"{path.relative_to(root)}: {rtype}.{rname}"
        metrics[rname] = metric_labels(body)
        text = hcl_string(substitute(str(hclutil.attr(body, "filter", "")), literals))
        for problem in scoped(text):
            errors.append(f"log-metrics: {where}: the filter must keep to the service's logs: add {problem}")
        extracted = []
        extractors = hclutil.attr(body, "label_extractors") or {}
        for label, expression in (extractors.items() if isinstance(extractors, dict) else []):
            label = hclutil.unq(label)
            found = EXTRACT.match(hcl_string(hclutil.unq(expression)))
            if not found:
                errors.append(f"log-metrics: {where}: label {label}: {expression!r} is not EXTRACT(field) or REGEXP_EXTRACT(field, re)")
                continue
            extracted.append(found.group(1))
            if label not in metrics[rname]:
                errors.append(f"log-metrics: {where}: label {label} is extracted but not declared in metric_descriptor.labels")
        for label in metrics[rname] - {hclutil.unq(k) for k in (extractors if isinstance(extractors, dict) else {})}:
            errors.append(f"log-metrics: {where}: label {label} is declared but never extracted")
        value = hclutil.attr(body, "value_extractor")
        if value:
            found = EXTRACT.match(hcl_string(value))
            if found:
                extracted.append(found.group(1))
            else:
                errors.append(f"log-metrics: {where}: value_extractor {value!r} is not EXTRACT(field) or REGEXP_EXTRACT(field, re)")
        errors.extend(check_payload_filter(where, text, lines, source, messages, extracted))
    if not metrics:
        errors.append("log-metrics: no google_logging_metric under infra/")
    return errors, metrics


PLACEHOLDER = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_call(expression: str) -> tuple[str, dict[str, str]] | None:
    call = re.search(r'templatefile\(\s*"\$\{path\.module\}/([^"]+)"\s*,\s*\{(.*)\}\s*\)', expression, re.S)
    if not call:
        return None
    args = {}
    for part in re.split(r",\s*|\n", call.group(2)):
        kv = re.match(r"\s*([A-Za-z_]\w*)\s*=\s*(.+?)\s*$", part)
        if kv:
            args[kv.group(1)] = kv.group(2)
    return call.group(1), args


def walk(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, k)
        yield key, value
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, key)
    else:
        yield key, value


def check_dashboards(root: pathlib.Path, metrics: dict[str, set[str]], lines: list[dict], source: set[str], messages: set[str]) -> list[str]:
    errors: list[str] = []
    dashboards = 0
    for path, rtype, rname, body in hclutil.resources(root):
        if rtype != "google_monitoring_dashboard":
            continue
        dashboards += 1
        where = f"{path.relative_to(root)}: {rtype}.{rname}"
        expression = str(hclutil.attr(body, "dashboard_json", ""))
        call = template_call(expression)
        if not call:
            errors.append(f"dashboard: {where}: dashboard_json must be templatefile(\"${{path.module}}/FILE\", {{...}}) so that metric names are references")
            continue
        file_name, args = call
        template = (path.parent / file_name).read_text(encoding="utf-8")
        wanted = set(PLACEHOLDER.findall(template))
        for name in sorted(wanted - set(args)):
            errors.append(f"dashboard: {where}: {file_name} uses ${{{name}}}, which the templatefile call does not pass")
        tokens = {}
        for name, arg in args.items():
            ref = re.fullmatch(r"google_logging_metric\.([A-Za-z0-9_-]+)\.name", arg)
            if ref:
                tokens[name] = f"@metric:{ref.group(1)}@"
            elif arg == "var.service_name":
                tokens[name] = "${var.service_name}"  # what scoped() looks for
            else:
                tokens[name] = f"@{name}@"
        rendered = PLACEHOLDER.sub(lambda m: tokens.get(m.group(1), m.group(0)), template).replace("$${", "${")
        try:
            doc = json.loads(rendered)
        except json.JSONDecodeError as err:
            errors.append(f"dashboard: {where}: {file_name} does not render to JSON: {err}")
            continue
        charted: set[str] = set()
        for key, value in walk(doc):
            if isinstance(value, dict) and "timeSeriesFilter" in value:
                tsf = value["timeSeriesFilter"]
                flt = tsf.get("filter", "")
                for found in re.finditer(re.escape(USER_METRIC) + r'([^"\s]*)', flt):
                    ref = re.fullmatch(r"@metric:([A-Za-z0-9_-]+)@", found.group(1))
                    if not ref:
                        errors.append(f"dashboard: {where}: charts {USER_METRIC}{found.group(1)}; name a metric of this configuration by reference (google_logging_metric.NAME.name)")
                        continue
                    metric = ref.group(1)
                    if metric not in metrics:
                        errors.append(f"dashboard: {where}: charts google_logging_metric.{metric}, which is not defined")
                        continue
                    charted.add(metric)
                    groups = (tsf.get("aggregation") or {}).get("groupByFields") or []
                    for group in groups:
                        label = re.fullmatch(r'metric\.labels?\."?([A-Za-z0-9_]+)"?', group)
                        if label and label.group(1) not in metrics[metric]:
                            errors.append(f"dashboard: {where}: groups google_logging_metric.{metric} by {group}, a label it does not declare ({sorted(metrics[metric])})")
            if isinstance(value, dict) and "legendTemplate" in value:
                refs = re.findall(r"@metric:([A-Za-z0-9_-]+)@", json.dumps(value))
                for label in re.findall(r"\$\{metric\.labels?\.([A-Za-z0-9_]+)\}", value["legendTemplate"]):
                    for metric in refs:
                        if metric in metrics and label not in metrics[metric]:
                            errors.append(f"dashboard: {where}: legend names metric label {label}, which google_logging_metric.{metric} does not declare")
            if key == "logsPanel" and isinstance(value, dict):
                flt = value.get("filter", "")
                for problem in scoped(flt):
                    errors.append(f"dashboard: {where}: logsPanel filter must keep to the service's logs: add {problem}")
                errors.extend(e.replace("log-metrics:", "dashboard:", 1) for e in check_payload_filter(f"{where} (logsPanel)", flt, lines, source, messages, []))
        for metric in sorted(set(metrics) - charted):
            errors.append(f"dashboard: {where}: google_logging_metric.{metric} is defined but not charted")
    if not dashboards:
        errors.append("dashboard: no google_monitoring_dashboard under infra/")
    return errors


def check_alerts(root: pathlib.Path) -> list[str]:
    errors: list[str] = []
    watched = False
    for path, rtype, rname, body in hclutil.resources(root):
        if rtype != "google_monitoring_alert_policy":
            continue
        where = f"{path.relative_to(root)}: {rtype}.{rname}"
        channels = str(hclutil.attr(body, "notification_channels", ""))
        if EVENTS_CHANNEL in channels:
            errors.append(f"dead-letter: {where}: notifies {EVENTS_CHANNEL}: promoter would take the incident for an alert event; notify people (var.alert_notification_channels)")
        for condition in hclutil.blocks(body, "conditions"):
            for threshold in hclutil.blocks(condition, "condition_threshold"):
                flt = hcl_string(hclutil.attr(threshold, "filter", ""))
                if DEAD_LETTER_METRIC not in flt:
                    continue
                if DEAD_LETTER_SUBSCRIPTION not in flt:
                    errors.append(f"dead-letter: {where}: watches {DEAD_LETTER_METRIC} of another subscription; the backlog to watch is {DEAD_LETTER_SUBSCRIPTION}name")
                    continue
                if hclutil.attr(threshold, "comparison") != "COMPARISON_GT" or hclutil.attr(threshold, "threshold_value") not in (0, 0.0, "0"):
                    errors.append(f"dead-letter: {where}: must open when the dead-letter backlog is > 0 (COMPARISON_GT, threshold_value 0)")
                    continue
                watched = True
    if not watched:
        errors.append(f"dead-letter: no google_monitoring_alert_policy watches {DEAD_LETTER_METRIC} of the dead-letter subscription (> 0)")
    return errors


def main(argv: list[str]) -> int:
    root = pathlib.Path(argv[1] if len(argv) > 1 else ".").resolve()
    samples = pathlib.Path(argv[2]) if len(argv) > 2 else root / SAMPLES
    errors: list[str] = []
    if not samples.exists():
        print(f"logs: {samples} is missing (capture it: infra/checks/capture-decision-log)")
        return 1
    lines = payloads(samples)
    if not any(line.get("message") == "decision" for line in lines):
        errors.append(f"log-metrics: {samples} holds no decision line")
    source, messages = logged_by_source(root)
    if not source:
        errors.append(f"log-metrics: no tracing macro found under {root / 'src'}")
    metric_errors, metrics = check_metrics(root, lines, source, messages)
    errors += metric_errors
    errors += check_dashboards(root, metrics, lines, source, messages)
    errors += check_alerts(root)
    for error in errors:
        print(f"logs: {error}")
    if errors:
        print(f"logs: FAILED ({len(errors)} problem(s))")
        return 1
    print(f"logs: log-metrics ({', '.join(sorted(metrics))}), dashboard, dead-letter: ok, against {len(lines)} captured lines")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
