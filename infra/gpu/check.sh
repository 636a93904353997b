#!/usr/bin/env bash
# FreshRec's GPU checks, for a machine with an NVIDIA GPU (CI has none: there these paths are skipped).
#
#   WHEELS=DIR  wheels to install first with --no-index (onnxruntime-gpu and the serving stack) when the
#               machine has no package index; leave unset where the venv already has them
#   FRESHREC_HOME  a home with a champion and an online snapshot (e.g. after `freshrec pipeline run` on
#               ML-100K): adds the scoring benchmark (CUDA EP + IOBinding vs CPU EP) and `bench serving`
#   OUT=DIR     where the logs and reports go (default ./gpu-report)
#   TESTS=PATHS the tests to run (default tests/serving)
#
# Steps: nvidia-smi; onnxruntime's providers; tests/serving (every serving test, which then runs on the
# CUDA EP, plus tests/serving/test_gpu.py: CUDA vs CPU parity, CUDA graphs, fp16); the benchmarks.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-report}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
if [[ -n "${WHEELS:-}" ]]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/freshrec-site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/freshrec-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/nvidia-smi.txt"
"$PYTHON" - <<'PY' 2>&1 | tee "$OUT/providers.txt"
import onnxruntime as ort
from freshrec.serving.execution import choose_providers, cuda_device_count
print("onnxruntime", ort.__version__, "devices", cuda_device_count(), "available", ort.get_available_providers())
print("serving would use", choose_providers(None))
PY
status=0
"$PYTHON" -m pytest -p no:cacheprovider -q ${TESTS:-tests/serving} --ignore=tests/serving/test_schemathesis.py \
    --junitxml="$OUT/serving-tests.xml" 2>&1 | tee "$OUT/serving-tests.txt" || status=1
if [[ -n "${FRESHREC_HOME:-}" ]]; then
    "$PYTHON" - "$OUT" <<'PY' 2>&1 | tee "$OUT/scoring.txt" || status=1
import json, sys
from pathlib import Path
from freshrec.core.registry import open_registry
from freshrec.core.settings import get_settings
from freshrec.tools.bench.serving import gpu_speedups, scoring_throughput
champion = open_registry(get_settings()).serving_state().champion
rows = scoring_throughput(Path(champion.bundle_dir), seconds=1.0)
print("errors:", [r for r in rows if "error" in r])
report = {"model_version": champion.version, "rows": rows, "gpu_speedup": gpu_speedups(rows)}
Path(sys.argv[1], "scoring.json").write_text(json.dumps(report, indent=2))
for r in (r for r in rows if "error" not in r):
    print(f"{r['variant']:8} {r['provider']:28} batch {r['batch']:4}  {r['ms_per_call']:8.3f} ms/call  {r['requests_per_s']:10.0f} req/s")
for s in report["gpu_speedup"]:
    print("speedup", s)
PY
    "$PYTHON" -m freshrec.cli bench serving --rates "${RATES:-500,1000,2000,4000,8000}" 2>&1 | tee "$OUT/bench-serving.txt" || status=1
    cp "$FRESHREC_HOME"/reports/bench/serving.json "$FRESHREC_HOME"/reports/bench/serving.png "$OUT"/ 2>/dev/null
fi
exit $status
