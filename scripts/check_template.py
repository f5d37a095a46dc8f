#!/usr/bin/env python3
"""Check template.yaml: cfn-lint plus the project's own deployment rules.

Usage: scripts/check_template.py [TEMPLATE]   (default: template.yaml at the repo root)

Checks (each counted once):
  cfn-lint                 cfn-lint reports no error and no warning
  iam-no-wildcard-action   no Allow statement with Action "*" or "<service>:*", nor NotAction
  iam-scoped-resources     no SQS/DynamoDB action on Resource "*" (or an ARN that is all wildcard)
  sam-no-wildcard-managed  after the SAM transform, no role carries a managed policy that grants
                           SQS/DynamoDB/log actions on "*" (what SAM attaches to a generated role
                           for an SQS event), and the expanded statements pass the two checks above
  sqs-encryption           every AWS::SQS::Queue has SqsManagedSseEnabled: true or a KmsMasterKeyId
  sqs-redrive              every queue a function consumes redrives to a dead-letter queue
  dynamodb-sse-ttl         every DynamoDB table has SSE enabled and TTL enabled on an attribute
  visibility-6x-timeout    each consumed queue's VisibilityTimeout >= 6 x the function's Timeout
  report-batch-failures    every SQS event source has FunctionResponseTypes [ReportBatchItemFailures]
  s3-payload-bucket        every S3 bucket is encrypted, blocks all public access and has an
                           enabled lifecycle rule that expires objects
  dlq-retained             every dead-letter queue has DeletionPolicy and UpdateReplacePolicy Retain
  dlq-redrive-allow        every dead-letter queue has a RedriveAllowPolicy byQueue naming its sources
  dlq-retention            every dead-letter queue keeps messages longer than each of its sources
  function-package         every rust-cargolambda function's CodeUri is a workspace package
                           with one binary (or BuildProperties.Binary naming one of its
                           binaries) whose source exists: what `sam build` runs
                           `cargo lambda build` in (scripts/lambda_build.sh builds it)
  visibility-6x-plus-window  each consumed queue's VisibilityTimeout >= 6 x Timeout + the largest
                           MaximumBatchingWindowInSeconds (a parameter's MaxValue)
  function-tracing         every function has Tracing: Active
  ecr-scoped               ECR pull actions name a repository, not repository/* or "*"
  scaled-service-no-desired-count  an ECS service whose DesiredCount auto scaling manages sets none
  ttl-attribute-matches-code  the idempotency table's TTL attribute is the one the DynamoDB store
                           writes (EXPIRES_AT in crates/sqs-worker-dynamodb/src/lib.rs)
  alarms                   alarms on the DLQ depth (> 0), the oldest message's age (> a parameter),
                           sqs_worker_circuit_state >= 1 for 3+ periods (on functions that turn the
                           breaker on) and sqs_worker_settlement_failures_total in the EMF namespace
                           (crates/sqs-worker-core/src/runner/observe/emf.rs) that each function
                           writes (its SQS_WORKER_METRICS_NAMESPACE, service = its name unless
                           SQS_WORKER_SERVICE is set), each notifying the AlarmTopicArn parameter
  dashboard                a dashboard with depth, age, throughput, failures by kind and handler
                           duration p50/p99

Ends with the line `template-checks: N passed, M failed`; exits 1 when M > 0.
Needs cfn-lint (scripts/setup.sh installs it); its YAML loader understands !Ref, !GetAtt, ...
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Any, Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SQS_DDB = re.compile(r"^(sqs|dynamodb):", re.IGNORECASE)
SERVICE_WILDCARD = re.compile(r"^[a-z0-9-]+:\*$", re.IGNORECASE)
WILDCARD_ARN = re.compile(r"^arn:[^:]*:(sqs|dynamodb):[^:]*:[^:]*:\*$", re.IGNORECASE)
# AWS managed policies whose SQS, DynamoDB or Logs statements use Resource "*".
WILDCARD_MANAGED = (
    "AWSLambdaSQSQueueExecutionRole",
    "AWSLambdaBasicExecutionRole",
    "AWSLambdaDynamoDBExecutionRole",
    "AmazonSQSFullAccess",
    "AmazonSQSReadOnlyAccess",
    "AmazonDynamoDBFullAccess",
    "AmazonDynamoDBReadOnlyAccess",
    "PowerUserAccess",
    "AdministratorAccess",
)


class Failure(Exception):
    pass


# ------------------------------------------------------------------ helpers
def as_list(v: Any) -> list:
    if v is None:
        return []
    return list(v) if isinstance(v, list) else [v]


def resources(tpl: dict, *types: str) -> Iterator[tuple[str, dict, dict]]:
    for name, res in (tpl.get("Resources") or {}).items():
        if isinstance(res, dict) and res.get("Type") in types:
            yield name, res, res.get("Properties") or {}


def statements(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every IAM statement anywhere in the document (policies, SAM Policies, ...)."""
    if isinstance(node, dict):
        for key, val in node.items():
            if key == "Statement" and isinstance(val, (list, dict)):
                for i, st in enumerate(as_list(val)):
                    if isinstance(st, dict):
                        yield f"{path}/Statement[{i}]", st
            else:
                yield from statements(val, f"{path}/{key}")
    elif isinstance(node, list):
        for i, val in enumerate(node):
            yield from statements(val, f"{path}[{i}]")


def resolve_number(tpl: dict, v: Any, what: str) -> float:
    """A literal number, or a Ref to a parameter: its Default (worst case: MaxValue)."""
    if isinstance(v, bool):
        raise Failure(f"{what} is a boolean")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    if isinstance(v, dict) and set(v) == {"Ref"}:
        p = (tpl.get("Parameters") or {}).get(v["Ref"])
        if isinstance(p, dict) and "Default" in p:
            return float(p["Default"])
    raise Failure(f"{what} is not a number this check can resolve: {v!r}")


def ref_target(v: Any) -> str | None:
    """The logical id behind !GetAtt X.Arn / !Ref X / !Sub '${X.Arn}'."""
    if isinstance(v, dict):
        if "Fn::GetAtt" in v:
            ga = v["Fn::GetAtt"]
            return (ga.split(".")[0] if isinstance(ga, str) else ga[0]) if ga else None
        if "Ref" in v:
            return v["Ref"]
        if "Fn::Sub" in v and isinstance(v["Fn::Sub"], str):
            m = re.fullmatch(r"\$\{([A-Za-z0-9]+)(\.Arn)?\}", v["Fn::Sub"])
            return m.group(1) if m else None
    return None


def sqs_event_sources(tpl: dict) -> Iterator[tuple[str, dict, str | None, str | None]]:
    """(where, event/ESM properties, queue logical id, function logical id)."""
    for fname, _res, props in resources(tpl, "AWS::Serverless::Function"):
        for ename, ev in (props.get("Events") or {}).items():
            if isinstance(ev, dict) and ev.get("Type") == "SQS":
                ep = ev.get("Properties") or {}
                yield f"{fname}.Events.{ename}", ep, ref_target(ep.get("Queue")), fname
    for name, _res, props in resources(tpl, "AWS::Lambda::EventSourceMapping"):
        q = ref_target(props.get("EventSourceArn"))
        qres = (tpl.get("Resources") or {}).get(q or "", {})
        if isinstance(qres, dict) and qres.get("Type") == "AWS::SQS::Queue":
            yield name, props, q, ref_target(props.get("FunctionName"))


def function_timeout(tpl: dict, fname: str) -> float:
    res = (tpl.get("Resources") or {}).get(fname) or {}
    props = res.get("Properties") or {}
    if "Timeout" in props:
        return resolve_number(tpl, props["Timeout"], f"{fname}.Timeout")
    glob = ((tpl.get("Globals") or {}).get("Function") or {})
    if "Timeout" in glob:
        return resolve_number(tpl, glob["Timeout"], "Globals.Function.Timeout")
    return 3.0  # the Lambda default


# ------------------------------------------------------------------- checks
def check_iam_actions(tpl: dict) -> str:
    bad = []
    for where, st in statements(tpl):
        if st.get("Effect") != "Allow":
            continue
        if "NotAction" in st:
            bad.append(f"{where}: Allow with NotAction")
        for a in as_list(st.get("Action")):
            if isinstance(a, str) and (a.strip() == "*" or SERVICE_WILDCARD.match(a.strip())):
                bad.append(f"{where}: Action {a!r}")
    if bad:
        raise Failure("wildcard actions:\n    " + "\n    ".join(bad))
    return "no '*' or 'service:*' actions"


def check_iam_resources(tpl: dict) -> str:
    bad = []
    for where, st in statements(tpl):
        if st.get("Effect") != "Allow":
            continue
        acts = [a for a in as_list(st.get("Action")) if isinstance(a, str) and SQS_DDB.match(a)]
        if not acts:
            continue
        if "NotResource" in st:
            bad.append(f"{where}: {acts} with NotResource")
        for r in as_list(st.get("Resource")):
            if isinstance(r, str) and (r.strip() == "*" or WILDCARD_ARN.match(r.strip())):
                bad.append(f"{where}: {acts} on Resource {r!r}")
    if bad:
        raise Failure("unscoped SQS/DynamoDB permissions:\n    " + "\n    ".join(bad))
    return "SQS/DynamoDB actions are scoped to ARNs"


def sam_transform(path: str, tpl: dict) -> dict:
    if "AWS::Serverless-2016-10-31" not in as_list(tpl.get("Transform")):
        return tpl
    # cfn-lint's own SAM transform (offline; bundled managed-policy map).
    from cfnlint.decode import decode
    from cfnlint.template.transforms._sam import Transform

    fresh, _ = decode(path)  # the transform edits the template in place
    t = Transform(path, fresh, "us-east-1")
    errs = t.transform_template()
    if errs:
        raise Failure("SAM transform failed: " + "; ".join(str(e) for e in errs))
    return t.template()


def check_sam_expanded(path: str, tpl: dict) -> str:
    out = sam_transform(path, tpl)
    bad = []
    for name, _res, props in resources(out, "AWS::IAM::Role"):
        for arn in as_list(props.get("ManagedPolicyArns")):
            text = arn if isinstance(arn, str) else str(arn)
            for pol in WILDCARD_MANAGED:
                if text.endswith("/" + pol):
                    bad.append(f"{name}: managed policy {pol} (Resource '*')")
    msgs = []
    for check in (check_iam_actions, check_iam_resources):
        try:
            check(out)
        except Failure as e:
            msgs.append(f"after the SAM transform, {e}")
    if bad:
        msgs.append("after the SAM transform:\n    " + "\n    ".join(bad))
    if msgs:
        raise Failure("\n  ".join(msgs))
    return "generated roles and policy templates stay scoped"


def check_sqs_encryption(tpl: dict) -> str:
    queues = list(resources(tpl, "AWS::SQS::Queue"))
    if not queues:
        raise Failure("no AWS::SQS::Queue in the template")
    bad = [
        n for n, _r, p in queues
        if p.get("SqsManagedSseEnabled") not in (True, "true") and not p.get("KmsMasterKeyId")
    ]
    if bad:
        raise Failure(f"queues without encryption at rest: {bad}")
    return f"{len(queues)} queue(s) encrypted"


def check_sqs_redrive(tpl: dict) -> str:
    queues = {n: p for n, _r, p in resources(tpl, "AWS::SQS::Queue")}
    consumed = {q for _w, _p, q, _f in sqs_event_sources(tpl) if q}
    if not consumed:
        raise Failure("no SQS event source found")
    bad = []
    for q in sorted(consumed):
        rp = (queues.get(q) or {}).get("RedrivePolicy")
        if not isinstance(rp, dict) or not rp.get("deadLetterTargetArn") or not rp.get("maxReceiveCount"):
            bad.append(q)
    if bad:
        raise Failure(f"consumed queues without a RedrivePolicy to a DLQ: {bad}")
    return f"{sorted(consumed)} redrive to a DLQ"


def env_vars(props: dict) -> dict:
    """A function's Environment.Variables or a container's Environment list, as a dict."""
    env = props.get("Environment")
    if isinstance(env, dict):
        return dict(env.get("Variables") or {})
    return {e.get("Name"): e.get("Value") for e in as_list(env) if isinstance(e, dict)}


def retry_consumers(tpl: dict) -> Iterator[tuple[str, dict, str]]:
    """(where, environment, queue logical id) of every Lambda function and ECS container consuming a queue."""
    fns = {n: p for n, _r, p in resources(tpl, "AWS::Serverless::Function")}
    for where, _props, q, fname in sqs_event_sources(tpl):
        if q and fname in fns:
            yield f"{fname} ({where})", env_vars(fns[fname]), q
    for tname, _r, props in resources(tpl, "AWS::ECS::TaskDefinition"):
        for c in as_list(props.get("ContainerDefinitions")):
            env = env_vars(c) if isinstance(c, dict) else {}
            q = ref_target(env.get("SQS_QUEUE_URL"))
            if q:
                yield f"{tname}.{c.get('Name')}", env, q


def check_retry_budget(tpl: dict) -> str:
    """The retry window fits the queue's maxReceiveCount (sqs_worker_core::flow::budget):
    with equal jitter the M delays are at least base x (2^M - 1) / 2 = window, so the
    last ceiling, 2 x window x 2^(M-1) / (2^M - 1), must stay within SQS's 12 h; and a
    Lambda function that sets SQS_WORKER_MAX_RECEIVE_COUNT must match the queue."""
    queues = {n: p for n, _r, p in resources(tpl, "AWS::SQS::Queue")}
    bad, ok = [], []
    for where, env, q in retry_consumers(tpl):
        rp = (queues.get(q) or {}).get("RedrivePolicy")
        if not isinstance(rp, dict) or "maxReceiveCount" not in rp:
            continue
        m = int(resolve_number(tpl, rp["maxReceiveCount"], f"{q}.maxReceiveCount"))
        window = resolve_number(tpl, env.get("SQS_WORKER_RETRY_WINDOW_SECONDS", 3600), f"{where} retry window")
        if "SQS_WORKER_MAX_RECEIVE_COUNT" in env:
            n = int(resolve_number(tpl, env["SQS_WORKER_MAX_RECEIVE_COUNT"], f"{where} SQS_WORKER_MAX_RECEIVE_COUNT"))
            if n != m:
                bad.append(f"{where}: SQS_WORKER_MAX_RECEIVE_COUNT {n} but {q}.maxReceiveCount {m}")
        last = 2 * window * 2 ** (m - 1) / (2**m - 1)
        if last > 12 * 3600:
            bad.append(f"{where}: a retry window of {window:g}s needs a last delay of {last:g}s > 12 h with maxReceiveCount {m}")
        else:
            ok.append(f"{where}: {m} receives over >= {window:g}s")
    if bad:
        raise Failure("; ".join(bad))
    if not ok:
        raise Failure("no consumer of a queue with a redrive policy found")
    return ", ".join(ok)


def check_dynamodb(tpl: dict) -> str:
    tables = list(resources(tpl, "AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable"))
    if not tables:
        raise Failure("no DynamoDB table in the template")
    bad = []
    for n, _r, p in tables:
        sse = p.get("SSESpecification") or {}
        if sse.get("SSEEnabled") not in (True, "true"):
            bad.append(f"{n}: SSESpecification.SSEEnabled is not true")
        ttl = p.get("TimeToLiveSpecification") or {}
        if ttl.get("Enabled") not in (True, "true") or not ttl.get("AttributeName"):
            bad.append(f"{n}: TimeToLiveSpecification not enabled with an AttributeName")
    if bad:
        raise Failure("; ".join(bad))
    return f"{len(tables)} table(s) with SSE and TTL"


def check_s3_buckets(tpl: dict) -> str:
    buckets = list(resources(tpl, "AWS::S3::Bucket"))
    if not buckets:
        raise Failure("no AWS::S3::Bucket in the template (the payload bucket)")
    bad = []
    for n, _r, p in buckets:
        rules = ((p.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration")) or []
        if not any((r.get("ServerSideEncryptionByDefault") or {}).get("SSEAlgorithm") for r in as_list(rules)):
            bad.append(f"{n}: no default encryption")
        pab = p.get("PublicAccessBlockConfiguration") or {}
        flags = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
        if not all(pab.get(f) in (True, "true") for f in flags):
            bad.append(f"{n}: public access not fully blocked")
        lifecycle = (p.get("LifecycleConfiguration") or {}).get("Rules") or []
        if not any(
            r.get("Status") == "Enabled" and (r.get("ExpirationInDays") or r.get("ExpirationDate"))
            for r in as_list(lifecycle)
        ):
            bad.append(f"{n}: no enabled lifecycle rule expiring objects")
    if bad:
        raise Failure("; ".join(bad))
    return f"{len(buckets)} bucket(s) encrypted, private, expiring"


def check_visibility(tpl: dict) -> str:
    queues = {n: p for n, _r, p in resources(tpl, "AWS::SQS::Queue")}
    found, bad, ok = 0, [], []
    for where, _props, q, fname in sqs_event_sources(tpl):
        found += 1
        if q not in queues or not fname:
            bad.append(f"{where}: cannot tell its queue/function")
            continue
        vis = resolve_number(tpl, queues[q].get("VisibilityTimeout", 30), f"{q}.VisibilityTimeout")
        tmo = function_timeout(tpl, fname)
        if vis < 6 * tmo:
            bad.append(f"{q}.VisibilityTimeout {vis:g} < 6 x {fname}.Timeout {tmo:g} = {6 * tmo:g}")
        else:
            ok.append(f"{q} {vis:g}s >= 6 x {tmo:g}s")
    if not found:
        raise Failure("no SQS event source found")
    if bad:
        raise Failure("; ".join(bad))
    return ", ".join(ok)


def check_report_batch_failures(tpl: dict) -> str:
    found, bad = 0, []
    for where, props, _q, _f in sqs_event_sources(tpl):
        found += 1
        if "ReportBatchItemFailures" not in as_list(props.get("FunctionResponseTypes")):
            bad.append(where)
    if not found:
        raise Failure("no SQS event source found")
    if bad:
        raise Failure(f"SQS event sources without FunctionResponseTypes [ReportBatchItemFailures]: {bad}")
    return f"{found} SQS event source(s)"


def check_function_package(tpl: dict) -> str:
    import tomllib

    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        members = tomllib.load(f).get("workspace", {}).get("members", [])
    seen = []
    for name, res, props in resources(tpl, "AWS::Serverless::Function"):
        meta = res.get("Metadata") or {}
        if meta.get("BuildMethod") != "rust-cargolambda":
            continue
        uri = props.get("CodeUri")
        if not isinstance(uri, str):
            raise Failure(f"{name}: CodeUri is not a local path")
        rel = os.path.normpath(uri)
        manifest = os.path.join(ROOT, rel, "Cargo.toml")
        if not os.path.isfile(manifest):
            raise Failure(f"{name}: no Cargo.toml in CodeUri {uri}")
        if rel != "." and rel not in [os.path.normpath(m) for m in members]:
            raise Failure(f"{name}: {uri} is not a member of the workspace")
        with open(manifest, "rb") as f:
            pkg = tomllib.load(f)
        bins = pkg.get("bin", [])
        wanted = ((meta.get("BuildProperties") or {}).get("Binary"))
        if wanted is None and len(bins) != 1:
            raise Failure(f"{name}: {uri} has {len(bins)} binaries and no BuildProperties.Binary")
        chosen = [b for b in bins if wanted is None or b.get("name") == wanted]
        if not chosen:
            raise Failure(f"{name}: no binary {wanted!r} in {uri}")
        src = os.path.join(ROOT, rel, chosen[0].get("path", "src/main.rs"))
        if not os.path.isfile(src):
            raise Failure(f"{name}: the binary's source {src} does not exist")
        seen.append(f"{name} -> {uri} bin {chosen[0].get('name')}")
    if not seen:
        raise Failure("no rust-cargolambda function")
    return "; ".join(seen)


def check_cfn_lint(path: str) -> str:
    exe = shutil.which("cfn-lint")
    if not exe:
        raise Failure("cfn-lint not found on PATH (run scripts/setup.sh)")
    proc = subprocess.run([exe, path], capture_output=True, text=True)
    # Exit code is a bit mask: 2 errors, 4 warnings, 8 informational, 1 crash.
    if proc.returncode & ~8:
        out = (proc.stdout + proc.stderr).strip()
        raise Failure(f"cfn-lint exit {proc.returncode}:\n" + "\n".join("    " + l for l in out.splitlines()))
    return "no errors, no warnings"


# --------------------------------------------------------------------- main
def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else os.path.join(ROOT, "template.yaml")
    try:
        from cfnlint.decode import decode
    except ImportError:
        print("check_template: cfn-lint is not installed (run scripts/setup.sh)", file=sys.stderr)
        print("template-checks: 0 passed, 1 failed")
        return 1

    tpl, errs = decode(path)
    if errs or not isinstance(tpl, dict):
        print(f"FAIL parse: {path}: " + "; ".join(str(e) for e in errs))
        print("template-checks: 0 passed, 1 failed")
        return 1

    checks: list[tuple[str, Callable[[], str]]] = [
        ("cfn-lint", lambda: check_cfn_lint(path)),
        ("iam-no-wildcard-action", lambda: check_iam_actions(tpl)),
        ("iam-scoped-resources", lambda: check_iam_resources(tpl)),
        ("sam-no-wildcard-managed", lambda: check_sam_expanded(path, tpl)),
        ("sqs-encryption", lambda: check_sqs_encryption(tpl)),
        ("sqs-redrive", lambda: check_sqs_redrive(tpl)),
        ("retry-budget", lambda: check_retry_budget(tpl)),
        ("dynamodb-sse-ttl", lambda: check_dynamodb(tpl)),
        ("visibility-6x-timeout", lambda: check_visibility(tpl)),
        ("report-batch-failures", lambda: check_report_batch_failures(tpl)),
        ("s3-payload-bucket", lambda: check_s3_buckets(tpl)),
        ("function-package", lambda: check_function_package(tpl)),
    ]
    # Operations checks (alarms, dashboard, DLQ safety): scripts/check_template_ops.py.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from check_template_ops import ops_checks

    checks += ops_checks(tpl, ROOT)
    passed = failed = 0
    for name, fn in checks:
        try:
            detail = fn()
        except Failure as e:
            failed += 1
            print(f"FAIL {name}: {e}")
        except Exception as e:  # a bug or an unexpected shape: still a failure
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
        else:
            passed += 1
            print(f"ok   {name}: {detail}")
    print(f"template-checks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
