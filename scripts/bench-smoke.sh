#!/usr/bin/env bash
# A short run of the benchmark that checks it works end to end, against the
# debug binaries (CI has just built them; figures from them mean nothing):
# 3 s closed loop at 8 in flight with the raw-publish baseline and the
# broker's messages counted by kind, a one-point sweep with one bisection
# step for the saga p99 goal, then 2 s of
# CreateOrder alone (bench.sh --create-only: no payment service), then 2 s
# of the secured deployment (bench.sh --secure: mutual TLS, a bearer token,
# the NATS users of deploy/nats/auth.conf, the bench's observer and baseline
# logged in as ops). bench.sh
# starts nats-server with its monitoring endpoint and passes its URL and the
# pids, so the reports carry the broker's messages and the CPU per saga. It
# checks correctness only: the JSON reports have their keys, sagas finished,
# no call failed, nothing was left unfinished, the secured run says it was
# secured. It never checks a timing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "==> scripts/bench.sh --debug (smoke)"
bash scripts/bench.sh --debug -- --duration 3s --warmup 1s --concurrency 8 \
  --baseline --baseline-duration 1s --sweep --sweep-fractions 0.5 --sweep-duration 1s \
  --slo-steps 1 --svg "$work/sweep.svg" --by-kind --json --quiet >"$work/main.json"

echo "==> scripts/bench.sh --debug --create-only (smoke)"
bash scripts/bench.sh --debug --no-build --create-only -- --duration 2s --warmup 1s \
  --concurrency 8 --baseline --baseline-duration 1s --json --quiet >"$work/create-only.json"

echo "==> scripts/bench.sh --debug --secure (smoke)"
# Not --no-build: it builds orderflow-test-pki, the certificates' tool, if
# need be (a no-op after scripts/test.sh).
bash scripts/bench.sh --debug --secure -- --duration 2s --warmup 1s \
  --concurrency 8 --baseline --baseline-duration 1s --json --quiet >"$work/secure.json"

python3 - "$work/main.json" "$work/create-only.json" "$work/secure.json" <<'EOF'
import json, sys

with open(sys.argv[1]) as f:
    report = json.load(f)
with open(sys.argv[2]) as f:
    create_only = json.load(f)
with open(sys.argv[3]) as f:
    secure = json.load(f)
problems = []
keys = ["create_rps", "create_p50_ms", "create_p90_ms", "create_p99_ms", "create_p999_ms",
        "saga_rps", "saga_p50_ms", "saga_p99_ms", "saga_p999_ms", "errors",
        "baseline_publish_rps", "baseline_p99_ms", "ratios", "concurrency", "duration_s",
        "sweep", "slo_p99_ms", "slo_rps", "slo_ratio", "slo_bounded", "slo_fail_rps", "slo_search"]
problems += [f"missing key {k}" for k in keys if k not in report]
for k in ("create_vs_baseline", "saga_vs_baseline"):
    if report.get("ratios") is None or report["ratios"].get(k) is None:
        problems.append(f"missing ratio {k}")
if not report.get("sagas_completed", 0) > 0:
    problems.append("no saga completed")
if report.get("errors_total") != 0 or report.get("errors"):
    problems.append(f"calls failed: {report.get('errors')}")
if report.get("sagas_unfinished") != 0:
    problems.append(f"{report.get('sagas_unfinished')} sagas did not finish")
if (report.get("baseline") or {}).get("errors"):
    problems.append(f"baseline publishes failed: {report['baseline']['errors']}")
if not (report.get("baseline_publish_rps") or 0) > 0:
    problems.append("the baseline published nothing")

# The broker's figures (bench.sh passes --nats-monitor-url) and the CPU per
# saga of the three processes (it passes their pids).
for k in ("broker_msgs_per_saga", "broker_in_msgs_per_saga", "broker_out_msgs_per_saga",
          "broker_in_bytes_per_saga", "broker_out_bytes_per_saga", "broker_msgs_per_create"):
    if not (report.get(k) or 0) > 0:
        problems.append(f"{k} is {report.get(k)!r}, not a positive number")
window = report.get("broker_window") or {}
if not window.get("observer_msgs", 0) > 0:
    problems.append(f"the broker window counted no observer deliveries: {window}")
cpu = report.get("cpu_us_per_saga") or {}
for k in ("order_service", "payment_service", "nats_server"):
    if k not in cpu:
        problems.append(f"cpu_us_per_saga has no {k}: {cpu}")
# By kind (--by-kind): a saga is four appends (the order, its deadline's
# schedule, the payment, the confirmation) with their acks, and two
# deliveries with theirs; the window's edges move these by a few sagas'
# worth, and what the tap did not see is about nothing.
kinds = report.get("broker_msgs_by_kind_per_saga") or {}
for k, low in (("appends", 3.5), ("append_acks", 3.5), ("deliveries", 1.5), ("delivery_acks", 1.5)):
    if not kinds.get(k, 0) >= low:
        problems.append(f"broker_msgs_by_kind_per_saga has {k} {kinds.get(k)!r}, not at least {low}: {kinds}")
if not kinds.get("unclassified", 1) <= 0.2:
    problems.append(f"the tap did not see {kinds.get('unclassified')!r} messages per saga: {kinds}")
# The sweep had one point and the bisection at most one step; whether they
# passed depends on timing, which this never checks.
if len(report.get("sweep", [])) != 1 or len(report.get("slo_search", [])) > 1:
    problems.append(f"sweep {report.get('sweep')}, bisection {report.get('slo_search')}")
if not isinstance(report.get("slo_bounded"), bool):
    problems.append(f"slo_bounded is {report.get('slo_bounded')!r}")

# CreateOrder alone: no sagas were waited for, the broker's figures are per
# CreateOrder, and no payment-service pid was known.
c = create_only
if c.get("create_only") is not True:
    problems.append("create-only: the report does not say create_only")
if not (c.get("create_rps") or 0) > 0 or (c.get("ratios") or {}).get("create_vs_baseline") is None:
    problems.append(f"create-only: create_rps {c.get('create_rps')}, ratios {c.get('ratios')}")
if c.get("errors_total") != 0 or c.get("errors"):
    problems.append(f"create-only: calls failed: {c.get('errors')}")
if c.get("sagas_unfinished") != 0:
    problems.append(f"create-only: {c.get('sagas_unfinished')} sagas reported unfinished")
if not (c.get("broker_msgs_per_create") or 0) > 0:
    problems.append(f"create-only: broker_msgs_per_create is {c.get('broker_msgs_per_create')!r}")
if c.get("broker_msgs_per_saga") is not None:
    problems.append("create-only: broker_msgs_per_saga without sagas")
if (c.get("broker_window") or {}).get("observer_msgs") != 0:
    problems.append(f"create-only: the observer received events during the load: {c.get('broker_window')}")
cpu = c.get("cpu_us_per_create") or {}
if "order_service" not in cpu or "nats_server" not in cpu or "payment_service" in cpu:
    problems.append(f"create-only: cpu_us_per_create is {cpu}")

# The runs say how they reached the deployment: the first two plaintext and
# anonymous, the secured one through every protection bench.sh --secure
# turns on, with sagas completed, no call failed, and a baseline published
# on the same secured broker.
for name, r in (("main", report), ("create-only", create_only)):
    if (r.get("security") or {}).get("mode") != "plaintext":
        problems.append(f"{name}: security is {r.get('security')}, not plaintext")
expected = {"mode": "secure", "grpc": "mtls", "bearer_token": True,
            "nats_auth": "user and password", "nats_tls": "off"}
if secure.get("security") != expected:
    problems.append(f"secure: security is {secure.get('security')}, not {expected}")
if not secure.get("sagas_completed", 0) > 0:
    problems.append("secure: no saga completed")
if secure.get("errors_total") != 0 or secure.get("errors") or secure.get("sagas_unfinished") != 0:
    problems.append(f"secure: calls failed {secure.get('errors')} or sagas unfinished {secure.get('sagas_unfinished')}")
if not (secure.get("baseline_publish_rps") or 0) > 0 or (secure.get("baseline") or {}).get("errors"):
    problems.append(f"secure: the baseline on the secured broker: {secure.get('baseline')}")
if not (secure.get("broker_msgs_per_saga") or 0) > 0:
    problems.append(f"secure: broker_msgs_per_saga is {secure.get('broker_msgs_per_saga')!r}")

if problems:
    print("bench smoke: FAILED:", "; ".join(problems))
    print(json.dumps(report, indent=2))
    print(json.dumps(create_only, indent=2))
    print(json.dumps(secure, indent=2))
    sys.exit(1)
print(f"bench smoke: ok ({report['sagas_completed']} sagas, "
      f"{report['broker_msgs_per_saga']} broker messages per saga, "
      f"{create_only['create_ok']} CreateOrders alone, {secure['sagas_completed']} secured sagas, no errors; "
      "figures from debug binaries are not benchmarks)")
EOF
