"""Operations checks for template.yaml (issue 19, section 4), run by check_template.py.

Each check returns a one-line detail or raises Failure; `ops_checks(tpl, root)` lists
them as (name, callable) pairs. The names are documented in check_template.py's docstring.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from check_template import (
    Failure,
    as_list,
    env_vars,
    function_timeout,
    ref_target,
    resolve_number,
    resources,
    sqs_event_sources,
    statements,
)

ECR_PULL = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability")
SQS_DEFAULT_RETENTION = 345600.0  # 4 days


def _resources(tpl: dict) -> dict:
    return tpl.get("Resources") or {}


def dead_letter_queues(tpl: dict) -> dict[str, list[str]]:
    """DLQ logical id -> the logical ids of the queues that redrive to it."""
    out: dict[str, list[str]] = {}
    for name, _res, props in resources(tpl, "AWS::SQS::Queue"):
        rp = props.get("RedrivePolicy")
        if isinstance(rp, dict):
            target = ref_target(rp.get("deadLetterTargetArn"))
            if target:
                out.setdefault(target, []).append(name)
    return out


def _need_dlqs(tpl: dict) -> dict[str, list[str]]:
    dlqs = dead_letter_queues(tpl)
    if not dlqs:
        raise Failure("no queue has a RedrivePolicy naming a dead-letter queue")
    return dlqs


def check_dlq_retained(tpl: dict) -> str:
    bad = []
    for dlq in sorted(_need_dlqs(tpl)):
        res = _resources(tpl).get(dlq) or {}
        for key in ("DeletionPolicy", "UpdateReplacePolicy"):
            if res.get(key) != "Retain":
                bad.append(f"{dlq}.{key} is {res.get(key)!r}, not 'Retain'")
    if bad:
        raise Failure("; ".join(bad))
    return f"{sorted(dead_letter_queues(tpl))} retained on delete and replace"


def check_dlq_redrive_allow(tpl: dict) -> str:
    bad = []
    for dlq, sources in sorted(_need_dlqs(tpl).items()):
        props = (_resources(tpl).get(dlq) or {}).get("Properties") or {}
        rap = props.get("RedriveAllowPolicy")
        if not isinstance(rap, dict):
            bad.append(f"{dlq} has no RedriveAllowPolicy")
            continue
        if rap.get("redrivePermission") != "byQueue":
            bad.append(f"{dlq}: redrivePermission is {rap.get('redrivePermission')!r}, not 'byQueue'")
            continue
        arns = as_list(rap.get("sourceQueueArns"))
        if not arns or len(arns) > 10:
            bad.append(f"{dlq}: sourceQueueArns must name 1 to 10 queues")
            continue
        for src in sources:
            if not any(_arn_names_queue(tpl, arn, src) for arn in arns):
                bad.append(f"{dlq}: sourceQueueArns does not name its source {src}")
    if bad:
        raise Failure("; ".join(bad))
    return "each DLQ allows only its own sources"


def _arn_names_queue(tpl: dict, arn: Any, queue: str) -> bool:
    """Whether `arn` (GetAtt, or a Sub ending in the queue's QueueName) is `queue`'s ARN."""
    if ref_target(arn) == queue:
        return True
    qprops = (_resources(tpl).get(queue) or {}).get("Properties") or {}
    name = qprops.get("QueueName")
    text = arn.get("Fn::Sub") if isinstance(arn, dict) else arn
    name_text = name.get("Fn::Sub") if isinstance(name, dict) else name
    return isinstance(text, str) and isinstance(name_text, str) and text.endswith(":" + name_text)


def check_dlq_retention(tpl: dict) -> str:
    bad, ok = [], []
    for dlq, sources in sorted(_need_dlqs(tpl).items()):
        props = (_resources(tpl).get(dlq) or {}).get("Properties") or {}
        dret = resolve_number(tpl, props.get("MessageRetentionPeriod", SQS_DEFAULT_RETENTION), f"{dlq}.MessageRetentionPeriod")
        for src in sources:
            sprops = (_resources(tpl).get(src) or {}).get("Properties") or {}
            sret = resolve_number(tpl, sprops.get("MessageRetentionPeriod", SQS_DEFAULT_RETENTION), f"{src}.MessageRetentionPeriod")
            if dret <= sret:
                bad.append(f"{dlq} keeps {dret:.0f}s <= its source {src}'s {sret:.0f}s")
            else:
                ok.append(f"{dlq} {dret:.0f}s > {src} {sret:.0f}s")
    if bad:
        raise Failure("; ".join(bad))
    return ", ".join(ok)


def _worst_case(tpl: dict, v: Any, what: str) -> float:
    """A number, or a Ref to a parameter: its MaxValue (else its Default)."""
    if isinstance(v, dict) and set(v) == {"Ref"}:
        p = (tpl.get("Parameters") or {}).get(v["Ref"])
        if isinstance(p, dict) and "MaxValue" in p:
            return float(p["MaxValue"])
    return resolve_number(tpl, v, what)


def check_visibility_with_window(tpl: dict) -> str:
    queues = {n: p for n, _r, p in resources(tpl, "AWS::SQS::Queue")}
    bad, ok = [], []
    for where, props, q, fname in sqs_event_sources(tpl):
        if q not in queues or not fname:
            bad.append(f"{where}: cannot tell its queue/function")
            continue
        vis = resolve_number(tpl, queues[q].get("VisibilityTimeout", 30), f"{q}.VisibilityTimeout")
        tmo = function_timeout(tpl, fname)
        win = _worst_case(tpl, props.get("MaximumBatchingWindowInSeconds", 0), f"{where}.MaximumBatchingWindowInSeconds")
        need = 6 * tmo + win
        (bad if vis < need else ok).append(f"{q} {vis:g}s vs 6 x {tmo:g}s + {win:g}s = {need:g}s")
    if not ok and not bad:
        raise Failure("no SQS event source found")
    if bad:
        raise Failure("VisibilityTimeout too short: " + "; ".join(bad))
    return ", ".join(ok)


def check_tracing(tpl: dict) -> str:
    glob = ((tpl.get("Globals") or {}).get("Function") or {}).get("Tracing")
    fns = list(resources(tpl, "AWS::Serverless::Function"))
    if not fns:
        raise Failure("no AWS::Serverless::Function")
    bad = [n for n, _r, p in fns if p.get("Tracing", glob) != "Active"]
    if bad:
        raise Failure(f"functions without Tracing: Active: {bad}")
    return f"{len(fns)} function(s) traced"


def check_ecr_scoped(tpl: dict) -> str:
    found, bad = 0, []
    for where, st in statements(tpl):
        acts = [a for a in as_list(st.get("Action")) if a in ECR_PULL]
        if st.get("Effect") != "Allow" or not acts:
            continue
        found += 1
        for r in as_list(st.get("Resource")):
            text = r.get("Fn::Sub") if isinstance(r, dict) else r
            if isinstance(text, list):
                text = text[0]
            if not isinstance(text, str) or text.strip() == "*" or text.rstrip().endswith("repository/*"):
                bad.append(f"{where}: {acts} on {r!r}")
    if not found:
        return "no ECR pull statement"
    if bad:
        raise Failure("ECR pulls not scoped to one repository: " + "; ".join(bad))
    return f"{found} ECR pull statement(s) scoped to a repository"


def check_scaled_service_no_desired_count(tpl: dict) -> str:
    found, bad = 0, []
    for name, _res, props in resources(tpl, "AWS::ApplicationAutoScaling::ScalableTarget"):
        if props.get("ScalableDimension") != "ecs:service:DesiredCount":
            continue
        rid = props.get("ResourceId")
        text = rid.get("Fn::Sub") if isinstance(rid, dict) else rid
        services = re.findall(r"\$\{([A-Za-z0-9]+)\.Name\}", text if isinstance(text, str) else "")
        if not services:
            bad.append(f"{name}: cannot tell the ECS service from ResourceId {rid!r}")
        for svc in services:
            found += 1
            sprops = (_resources(tpl).get(svc) or {}).get("Properties") or {}
            if "DesiredCount" in sprops:
                bad.append(f"{svc} sets DesiredCount, which {name} manages (each update resets it)")
    if bad:
        raise Failure("; ".join(bad))
    return f"{found} scaled service(s) without DesiredCount" if found else "no scaled ECS service"


def code_ttl_attribute(root: str) -> str:
    path = os.path.join(root, "crates", "sqs-worker-dynamodb", "src", "lib.rs")
    with open(path, encoding="utf-8") as f:
        m = re.search(r'pub const EXPIRES_AT: &str = "([^"]+)";', f.read())
    if not m:
        raise Failure(f"no `pub const EXPIRES_AT` in {path}")
    return m.group(1)


def check_ttl_attribute(tpl: dict, root: str) -> str:
    want = code_ttl_attribute(root)
    tables = list(resources(tpl, "AWS::DynamoDB::Table"))
    if not tables:
        raise Failure("no DynamoDB table")
    bad = [
        f"{n}: TTL on {((p.get('TimeToLiveSpecification') or {}).get('AttributeName'))!r}"
        for n, _r, p in tables
        if (p.get("TimeToLiveSpecification") or {}).get("AttributeName") != want
    ]
    if bad:
        raise Failure(f"the code writes the TTL in {want!r}: " + "; ".join(bad))
    return f"TTL attribute {want!r}, as the code writes it"


def emf_namespace(root: str) -> str:
    path = os.path.join(root, "crates", "sqs-worker-core", "src", "runner", "observe", "emf.rs")
    with open(path, encoding="utf-8") as f:
        m = re.search(r'pub const DEFAULT_NAMESPACE: &str = "([^"]+)";', f.read())
    if not m:
        raise Failure(f"no DEFAULT_NAMESPACE in {path}")
    return m.group(1)


def _namespace(tpl: dict, v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"Ref"}:
        p = (tpl.get("Parameters") or {}).get(v["Ref"])
        return p.get("Default") if isinstance(p, dict) else None
    return v


def _notifies_topic(props: dict) -> bool:
    text = str(props.get("AlarmActions"))
    return "AlarmTopicArn" in text


def _function_metrics_env(tpl: dict) -> list[tuple[str, Any, Any]]:
    """(function, SQS_WORKER_METRICS_NAMESPACE, SQS_WORKER_SERVICE) of each function."""
    out = []
    for name, _res, p in resources(tpl, "AWS::Serverless::Function"):
        env = ((p.get("Environment") or {}).get("Variables") or {})
        out.append((name, env.get("SQS_WORKER_METRICS_NAMESPACE"), env.get("SQS_WORKER_SERVICE")))
    return out


def _emf_metric_matches_functions(tpl: dict, name: str, m: dict, ns: str) -> list[str]:
    """An alarm's EMF metric must read the namespace and service the functions write."""
    bad = []
    dims = {d.get("Name"): d.get("Value") for d in as_list(m.get("Dimensions")) if isinstance(d, dict)}
    for fn, fn_ns, fn_service in _function_metrics_env(tpl):
        written = fn_ns if fn_ns is not None else ns
        if m.get("Namespace") != written and _namespace(tpl, m.get("Namespace")) != _namespace(tpl, written):
            bad.append(f"{name}: namespace {m.get('Namespace')!r}, but {fn} writes {written!r}")
        if dims.get("service") == {"Ref": fn} and fn_service is not None:
            bad.append(f"{name}: service is {fn}'s name, but {fn} sets SQS_WORKER_SERVICE")
    return bad


def check_alarms(tpl: dict, root: str) -> str:
    dlqs = set(_need_dlqs(tpl))
    sources = {s for srcs in dead_letter_queues(tpl).values() for s in srcs}
    ns = emf_namespace(root)
    have = {"dlq-depth": False, "age": False, "settlement": False, "circuit": False}
    bad = []
    for name, _res, p in resources(tpl, "AWS::CloudWatch::Alarm"):
        dims = {d.get("Name"): ref_target(d.get("Value")) for d in as_list(p.get("Dimensions")) if isinstance(d, dict)}
        kind = None
        if p.get("MetricName") == "ApproximateNumberOfMessagesVisible" and dims.get("QueueName") in dlqs:
            kind = "dlq-depth"
            if not (p.get("ComparisonOperator") == "GreaterThanThreshold" and float(p.get("Threshold", -1)) == 0):
                bad.append(f"{name}: must fire on DLQ depth > 0")
        elif p.get("MetricName") == "ApproximateAgeOfOldestMessage" and dims.get("QueueName") in sources:
            kind = "age"
            if not isinstance(p.get("Threshold"), dict):
                bad.append(f"{name}: the age threshold must be a parameter")
        elif p.get("MetricName") == "sqs_worker_circuit_state":
            kind = "circuit"
            bad.extend(_circuit_alarm(tpl, name, p, ns))
        else:
            stats = [m.get("MetricStat", {}).get("Metric", {}) for m in as_list(p.get("Metrics")) if isinstance(m, dict)]
            emf = [m for m in stats if m.get("MetricName") == "sqs_worker_settlement_failures_total"]
            if emf:
                kind = "settlement"
                for m in emf:
                    if _namespace(tpl, m.get("Namespace")) != ns:
                        bad.append(f"{name}: namespace {m.get('Namespace')!r} is not the EMF namespace {ns!r}")
                    bad.extend(_emf_metric_matches_functions(tpl, name, m, ns))
                    names = {d.get("Name") for d in as_list(m.get("Dimensions")) if isinstance(d, dict)}
                    if names != {"service", "action"}:
                        bad.append(f"{name}: EMF dimensions are service and action, not {sorted(names)}")
        if kind:
            have[kind] = True
            if not _notifies_topic(p):
                bad.append(f"{name}: AlarmActions do not notify the AlarmTopicArn parameter")
    missing = [k for k, v in have.items() if not v]
    if missing:
        bad.append(f"missing alarms: {missing}")
    if "AlarmTopicArn" not in (tpl.get("Parameters") or {}):
        bad.append("no AlarmTopicArn parameter")
    if bad:
        raise Failure("; ".join(bad))
    return "DLQ depth, oldest age, settlement-failure and circuit-breaker alarms notify AlarmTopicArn"


def _circuit_alarm(tpl: dict, name: str, p: dict, ns: str) -> list[str]:
    """The breaker alarm: on the EMF gauge of functions that turn the breaker on,
    firing at >= 1 (open or half-open), not on a single minute."""
    bad = []
    if _namespace(tpl, p.get("Namespace")) != ns:
        bad.append(f"{name}: namespace {p.get('Namespace')!r} is not the EMF namespace {ns!r}")
    bad.extend(_emf_metric_matches_functions(tpl, name, p, ns))
    if not (p.get("ComparisonOperator") == "GreaterThanOrEqualToThreshold" and float(p.get("Threshold", -1)) == 1):
        bad.append(f"{name}: must fire on sqs_worker_circuit_state >= 1")
    if int(p.get("EvaluationPeriods", 1)) < 3:
        bad.append(f"{name}: fires on fewer than 3 periods (a breaker open for one cool-down is normal)")
    for d in as_list(p.get("Dimensions")):
        fn = ref_target(d.get("Value")) if isinstance(d, dict) and d.get("Name") == "service" else None
        if fn:
            env = env_vars(((tpl.get("Resources") or {}).get(fn) or {}).get("Properties") or {})
            if str(env.get("SQS_WORKER_CIRCUIT_BREAKER", "")).lower() != "true":
                bad.append(f"{name}: {fn} does not set SQS_WORKER_CIRCUIT_BREAKER=true, so the gauge never exists")
    return bad


def check_dashboard(tpl: dict) -> str:
    boards = list(resources(tpl, "AWS::CloudWatch::Dashboard"))
    if not boards:
        raise Failure("no AWS::CloudWatch::Dashboard")
    body = str(boards[0][2].get("DashboardBody"))
    need = {
        "depth": "ApproximateNumberOfMessagesVisible",
        "age": "ApproximateAgeOfOldestMessage",
        "throughput": "NumberOfMessagesDeleted",
        "failures by kind": "sqs_worker_messages_failed_total",
        "handler duration": "sqs_worker_handler_duration_seconds",
        "p50": '"p50"',
        "p99": '"p99"',
    }
    missing = [k for k, v in need.items() if v not in body]
    if missing:
        raise Failure(f"{boards[0][0]} lacks: {missing}")
    return f"{boards[0][0]}: " + ", ".join(need)


def ops_checks(tpl: dict, root: str) -> list[tuple[str, Callable[[], str]]]:
    return [
        ("dlq-retained", lambda: check_dlq_retained(tpl)),
        ("dlq-redrive-allow", lambda: check_dlq_redrive_allow(tpl)),
        ("dlq-retention", lambda: check_dlq_retention(tpl)),
        ("visibility-6x-plus-window", lambda: check_visibility_with_window(tpl)),
        ("function-tracing", lambda: check_tracing(tpl)),
        ("ecr-scoped", lambda: check_ecr_scoped(tpl)),
        ("scaled-service-no-desired-count", lambda: check_scaled_service_no_desired_count(tpl)),
        ("ttl-attribute-matches-code", lambda: check_ttl_attribute(tpl, root)),
        ("alarms", lambda: check_alarms(tpl, root)),
        ("dashboard", lambda: check_dashboard(tpl)),
    ]
