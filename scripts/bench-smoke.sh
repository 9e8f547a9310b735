#!/usr/bin/env bash
# A short run of the benchmark that checks it works end to end: 3 s closed
# loop at 8 in flight with the raw-publish baseline, against the debug
# binaries (CI has just built them; figures from them mean nothing). It checks
# correctness only: the JSON report has its keys, sagas finished, no call
# failed, nothing was left unfinished. It never checks a timing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

report=$(mktemp)
trap 'rm -f "$report"' EXIT

echo "==> scripts/bench.sh --debug (smoke)"
bash scripts/bench.sh --debug -- --duration 3s --warmup 1s --concurrency 8 \
  --baseline --baseline-duration 1s --json --quiet >"$report"

python3 - "$report" <<'EOF'
import json, sys

with open(sys.argv[1]) as f:
    report = json.load(f)
problems = []
keys = ["create_rps", "create_p50_ms", "create_p90_ms", "create_p99_ms", "create_p999_ms",
        "saga_rps", "saga_p50_ms", "saga_p99_ms", "saga_p999_ms", "errors",
        "baseline_publish_rps", "baseline_p99_ms", "ratios", "concurrency", "duration_s"]
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
if problems:
    print("bench smoke: FAILED:", "; ".join(problems))
    print(json.dumps(report, indent=2))
    sys.exit(1)
print(f"bench smoke: ok ({report['sagas_completed']} sagas, no errors; "
      "figures from debug binaries are not benchmarks)")
EOF
