#!/usr/bin/env bash
# ModelPress over plain HTTP: upload a model, submit a job with a budget, stream its events,
# download the optimized model and its report, print the verdict. Only bash, curl and python3
# (for reading JSON; no jq).
#
#   make run                                   # in one terminal
#   examples/walkthrough.sh                    # in another: trains examples/seed_network.py's
#                                              # network (needs the .venv) and uses it
#   examples/walkthrough.sh model.onnx         # or any ONNX, .pt2 or TorchScript file of yours
#
# Settings (environment):
#   MODELPRESS_URL      the server (http://127.0.0.1:8000)
#   MODELPRESS_API_KEY  sent as `Authorization: Bearer ...` when set
#   STEPS               the job's steps ([{"op": "quantize", "mode": "dynamic"}])
#   CONSTRAINTS         the budget ({"min_cosine": 0.99}; the guard also misses a result
#                       slower than the original unless it says "fail_if_slower": false)
#   BENCHMARK           the benchmark settings ({"batch_sizes": [1, 32], "iterations": 20})
#   INPUT_SHAPES        upload field for TorchScript files, e.g. [[1, 3, 224, 224]]
#   OUT                 where the model and reports go (./walkthrough-out)
#
# Exits as `modelpress optimize --wait` does: 0 the job succeeded and met its budget, 1 the job
# failed (or the model was rejected), 2 it succeeded but missed the budget, 3 a refused request.
set -euo pipefail

URL="${MODELPRESS_URL:-http://127.0.0.1:8000}"
URL="${URL%/}"
# (A JSON default inside ${VAR:-...} would end at its first "}": set them this way.)
[[ -n "${STEPS:-}" ]] || STEPS='[{"op": "quantize", "mode": "dynamic"}]'
[[ -n "${CONSTRAINTS:-}" ]] || CONSTRAINTS='{"min_cosine": 0.99}'
[[ -n "${BENCHMARK:-}" ]] || BENCHMARK='{"batch_sizes": [1, 32], "iterations": 20}'
OUT="${OUT:-walkthrough-out}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

AUTH=()
if [[ -n "${MODELPRESS_API_KEY:-}" ]]; then
  AUTH=(-H "Authorization: Bearer ${MODELPRESS_API_KEY}")
fi

if [[ -t 1 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }

# api METHOD PATH [curl args...]: the JSON answer on stdout; a 4xx/5xx prints the problem
# (application/problem+json) on stderr and exits 3.
api() {
  local method=$1 path=$2 body status
  shift 2
  body="$(mktemp)"
  status="$(curl -sS -o "$body" -w '%{http_code}' -X "$method" ${AUTH[@]+"${AUTH[@]}"} "$@" \
    "$URL$path")" || { rm -f "$body"; echo "cannot reach $URL" >&2; exit 3; }
  if ((status >= 400)); then
    echo "$method $path -> HTTP $status: $(cat "$body")" >&2
    rm -f "$body"
    exit 3
  fi
  cat "$body"
  rm -f "$body"
}

# field EXPR: evaluate a Python expression on the JSON document read from stdin (`d`).
field() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

MODEL="${1:-}"
if [[ -z "$MODEL" ]]; then
  say "0. No model given: training examples/seed_network.py's network (a minute or two)"
  PYTHON="${PYTHON:-$HERE/../.venv/bin/python}"
  [[ -x "$PYTHON" ]] || PYTHON=python3
  mkdir -p "$OUT"
  "$PYTHON" "$HERE/seed_network.py" --save "$OUT/seed"
  MODEL="$OUT/seed/seed.onnx"
fi
[[ -f "$MODEL" ]] || { echo "no such file: $MODEL" >&2; exit 3; }

say "1. Is the server there? GET $URL/healthz"
api GET /healthz
echo

say "2. Upload $MODEL (the format is read from the bytes; ?wait=true waits for the inspection)"
SHAPES=()
if [[ -n "${INPUT_SHAPES:-}" ]]; then
  SHAPES=(-F "input_shapes=${INPUT_SHAPES}")
fi
MODEL_JSON="$(api POST '/v1/models?wait=true' -F "file=@${MODEL}" ${SHAPES[@]+"${SHAPES[@]}"})"
echo "$MODEL_JSON" | field '"\n".join(f"  {k}: {json.dumps(d.get(k))}" for k in
  ("id", "format", "status", "size_bytes", "parameter_count", "inputs", "outputs", "error"))'
MODEL_ID="$(echo "$MODEL_JSON" | field 'd["id"]')"
MODEL_STATUS="$(echo "$MODEL_JSON" | field 'd["status"]')"
if [[ "$MODEL_STATUS" == "validating" ]]; then  # a big model: inspection takes over 60 s
  while [[ "$MODEL_STATUS" == "validating" ]]; do
    sleep 2
    MODEL_STATUS="$(api GET "/v1/models/$MODEL_ID" | field 'd["status"]')"
  done
fi
if [[ "$MODEL_STATUS" != "ready" ]]; then
  echo "model $MODEL_STATUS: $(api GET "/v1/models/$MODEL_ID" | field 'd["error"]')" >&2
  exit 1
fi

say "3. Submit a job: steps $STEPS, budget $CONSTRAINTS"
SPEC="$(python3 -c 'import json, sys
print(json.dumps({"model_id": sys.argv[1], "steps": json.loads(sys.argv[2]),
                  "constraints": json.loads(sys.argv[3]), "benchmark": json.loads(sys.argv[4])}))' \
  "$MODEL_ID" "$STEPS" "$CONSTRAINTS" "$BENCHMARK")"
JOB_JSON="$(api POST /v1/jobs -H 'content-type: application/json' \
  -H "Idempotency-Key: walkthrough-$MODEL_ID" -d "$SPEC")"
JOB_ID="$(echo "$JOB_JSON" | field 'd["id"]')"
echo "job $JOB_ID: $(echo "$JOB_JSON" | field 'd["status"]')"

say "4. Stream its events: curl -N $URL/v1/jobs/$JOB_ID/events"
# Server-sent events (status, step, progress, log, verdict); the stream ends after the terminal
# status. A server without the route answers 404 (curl --fail says nothing): poll instead.
if ! curl -sS -N --fail ${AUTH[@]+"${AUTH[@]}"} -H 'Accept: text/event-stream' \
  "$URL/v1/jobs/$JOB_ID/events" 2>/dev/null; then
  echo "(no event stream here: polling GET /v1/jobs/$JOB_ID)"
  last=""
  while :; do
    JOB_JSON="$(api GET "/v1/jobs/$JOB_ID")"
    now="$(echo "$JOB_JSON" | field '"%s %.0f%% %s" % (d["status"],
      100 * d["progress"]["fraction"], d["progress"]["message"])')"
    if [[ "$now" != "$last" ]]; then echo "  $now"; last="$now"; fi
    case "$now" in succeeded* | failed* | cancelled*) break ;; esac
    sleep 1
  done
fi

JOB_JSON="$(api GET "/v1/jobs/$JOB_ID")"
STATUS="$(echo "$JOB_JSON" | field 'd["status"]')"
if [[ "$STATUS" != "succeeded" ]]; then
  echo "job $STATUS: $(echo "$JOB_JSON" | field 'd["error"]')" >&2
  exit 1
fi

say "5. Download the optimized model and the reports into $OUT/"
mkdir -p "$OUT"
ARTIFACT="$(echo "$JOB_JSON" | field 'next(a["name"] for a in d["artifacts"] if a["kind"] == "model")')"
curl -sS --fail ${AUTH[@]+"${AUTH[@]}"} -o "$OUT/$ARTIFACT" "$URL/v1/jobs/$JOB_ID/artifacts/$ARTIFACT"
curl -sS --fail ${AUTH[@]+"${AUTH[@]}"} -o "$OUT/report.json" "$URL/v1/jobs/$JOB_ID/report"
curl -sS --fail ${AUTH[@]+"${AUTH[@]}"} -o "$OUT/report.html" "$URL/v1/jobs/$JOB_ID/report.html"
ls -l "$OUT/$ARTIFACT" "$OUT/report.json" "$OUT/report.html"

say "6. Its log: GET /v1/jobs/$JOB_ID/logs (the last 1 MB of text)"
if curl -sS --fail ${AUTH[@]+"${AUTH[@]}"} -o "$OUT/job.log" "$URL/v1/jobs/$JOB_ID/logs"; then
  cat "$OUT/job.log"
else
  echo "(this server has no logs route)"
fi

say "7. The verdict (from report.json; open report.html for the charts)"
python3 - "$OUT/report.json" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
base, opt, comparison = report["baseline"], report["optimized"], report["comparison"]
print(f"size      {base['size_bytes']:,} B -> {opt['size_bytes']:,} B "
      f"({opt['size_bytes'] / base['size_bytes']:.2f}x the original)")
for batch, p in opt["latency_ms"].items():
    print(f"p50 b={batch:<4} {base['latency_ms'][batch]['p50']:.3f} ms -> {p['p50']:.3f} ms "
          f"(speedup {comparison['speedup'].get(batch)})")
for name, f in report["fidelity"].get("outputs", {}).items():
    print(f"cosine    {name}: mean {f['cosine_mean']:.6f}, worst sample {f['cosine_min']:.6f}")
verdict = report["verdict"]
print("verdict  ", "MET" if verdict["met"] else "MISSED" if verdict["met"] is False else "no budget")
for line in verdict.get("reasons", []) + verdict.get("notes", []):
    print("  -", line)
sys.exit(2 if verdict["met"] is False else 0)
PY
