#!/usr/bin/env bash
# The GPU checks of portprop in one go, for a machine with an NVIDIA GPU, torch, CuPy, JAX,
# numpy and pytest already installed (and maybe no network).  Run from the repository root:
#
#     bash benchmarks/gpu.sh                 # writes everything under $OUT (default ./gpu-out)
#     GPU_SH_BUDGET=300 bash benchmarks/gpu.sh
#
# Steps, each with its own time limit inside a total budget (GPU_SH_BUDGET seconds, default
# 470, so that the whole run fits in 8 minutes); a step that fails, times out or is skipped
# for lack of time does not stop the others, and the summary at the end says which did what:
#
#   env              python, GPU, libraries; which test dependencies are missing
#   deps             installs the missing ones only (pip, no dependencies; from ./gpu-wheels
#                    when that folder exists, else the index with short timeouts)
#   pytest_cupy      pytest --backend=cupy, the cases parametrized on cupy (-k cupy)
#   pytest_torch     pytest --backend=torch, the torch:cuda cases (-k cuda)
#   bench_step       bench_step.py on torch:cuda and cupy at batches 1, 16, 256, 4096
#   bench_memory     bench_memory.py's torch rows on CUDA (allocator peak and kept)
#   bench_sklearn    bench_sklearn.py on torch:cuda and cupy, when it has --backends
#   bench_compiled   bench_step.py's compiled rows on torch:cuda (torch.compile)
#   bench_precision  bench_precision.py on torch:cuda: fp32, bf16, fp16 step times
#   bench_distributed  bench_distributed.py on one GPU (NCCL, one rank): GEMM rates for
#                    the cost model of docs/distributed.md
#
# portprop is imported from src/ through PYTHONPATH: nothing is installed for it.  Test
# files that import a missing optional package at module level are left out (--ignore),
# and the log says which.

set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
BUDGET=${GPU_SH_BUDGET:-470}
START=$(date +%s)
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

remaining() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME LIMIT CMD...: run CMD with at most LIMIT seconds (less if the budget is short),
# its output in $OUT/NAME.log, its outcome in the summary.
step() {
  local name=$1 limit=$2
  shift 2
  local left
  left=$(($(remaining) - 5))
  if ((left < 20)); then
    echo "$name: SKIPPED (budget spent: $(remaining) s left)" | tee -a "$SUMMARY"
    return 0
  fi
  ((limit > left)) && limit=$left
  echo "=== $name (limit ${limit} s): $*"
  local t0=$SECONDS rc
  timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  local took=$((SECONDS - t0)) verdict
  case $rc in
    0) verdict="ok" ;;
    124 | 137) verdict="TIMED OUT after ${limit} s" ;;
    *) verdict="FAILED (exit code $rc)" ;;
  esac
  tail -n 25 "$OUT/$name.log"
  echo "$name: $verdict in ${took} s; log $OUT/$name.log" | tee -a "$SUMMARY"
  local last
  last=$(grep -E '(passed|failed|error|skipped)( |,|$)' "$OUT/$name.log" | tail -n 1)
  [[ $name == pytest_* && -n $last ]] && echo "    $last" >>"$SUMMARY"
  return 0
}

# ---------------------------------------------------------------------------- env
{
  echo "date: $(date -u)"
  echo "python: $($PY --version 2>&1) ($(command -v "$PY"))"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi: not found"
  $PY - <<'EOF'
import importlib
for mod in ("numpy", "torch", "cupy", "jax", "array_api_compat", "array_api_strict",
            "pytest", "hypothesis", "safetensors", "sklearn", "matplotlib", "threadpoolctl"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod}: {getattr(m, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001
        print(f"{mod}: MISSING ({type(exc).__name__}: {exc})")
try:
    import torch
    print(f"torch.cuda.is_available(): {torch.cuda.is_available()}",
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as exc:  # noqa: BLE001
    print(f"torch cuda: {exc}")
EOF
} >"$OUT/env.log" 2>&1
cat "$OUT/env.log"
echo "env: see $OUT/env.log" >>"$SUMMARY"

# ---------------------------------------------------------------------------- deps
# module name -> pip name of what the tests and benchmarks need beyond the image
declare -A PIP_NAME=(
  [array_api_compat]=array-api-compat [array_api_strict]=array-api-strict
  [hypothesis]=hypothesis [safetensors]=safetensors [sklearn]=scikit-learn
  [threadpoolctl]=threadpoolctl
)
# the modules of the arguments that cannot be imported, one python for all
missing_of() {
  $PY - "$@" <<'EOF' 2>/dev/null
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}
missing_modules() { missing_of "${!PIP_NAME[@]}"; }
install_missing() {
  local mods pkgs=() mod
  mods=$(missing_modules)
  if [[ -z $mods ]]; then
    echo "every test dependency is installed"
    return 0
  fi
  for mod in $mods; do pkgs+=("${PIP_NAME[$mod]}"); done
  echo "missing: ${pkgs[*]}"
  if [[ -d $ROOT/gpu-wheels ]]; then
    $PY -m pip install --no-deps --no-index --find-links "$ROOT/gpu-wheels" "${pkgs[@]}"
  else
    # no network is likely: fail fast rather than wait on retries
    $PY -m pip install --no-deps --retries 0 --timeout 5 "${pkgs[@]}"
  fi
  echo "still missing after pip: $(missing_modules)"
  return 0
}
# a function: no `timeout` around it; pip's own timeouts are short
echo "=== deps"
install_missing >"$OUT/deps.log" 2>&1
cat "$OUT/deps.log"
echo "deps: $(tail -n 1 "$OUT/deps.log"); log $OUT/deps.log" >>"$SUMMARY"

if [[ -n $(missing_of array_api_compat) ]]; then
  echo "array-api-compat is missing and could not be installed: portprop cannot be imported;" \
    "carry its wheel in ./gpu-wheels (pip download --no-deps array-api-compat -d gpu-wheels)" |
    tee -a "$SUMMARY"
fi

# Test files that import a missing package at module level would stop collection.
IGNORES=(--ignore=tests/test_install.py) # builds virtual environments through nox: not here
for mod in $(missing_of hypothesis safetensors sklearn matplotlib array_api_strict nox); do
  for f in $(grep -lE "^(import|from) $mod([ .]|$)" tests/*.py 2>/dev/null); do
    IGNORES+=("--ignore=$f")
    echo "left out $f: it imports $mod, which is missing" | tee -a "$SUMMARY"
  done
done

# pyproject's strict_markers / strict_config ini keys exist from pytest 9 on; an older
# pytest with --strict-config rejects them, so it gets a copy of the config without them.
PYTEST_CFG=()
if ! $PY -c "import pytest, sys; sys.exit(int(pytest.__version__.split('.')[0]) < 9)" 2>/dev/null; then
  $PY - "$OUT/pytest-gpu.ini" <<'EOF'
import re, sys
text = open("pyproject.toml", encoding="utf-8").read()
section = text.split("[tool.pytest.ini_options]", 1)[1].split("\n[", 1)[0]
lines = [l for l in section.splitlines() if not re.match(r"\s*strict_(markers|config)\s*=", l)]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write("[pytest]\n")
    body = "\n".join(lines)
    # TOML lists -> ini lines
    body = re.sub(r'addopts = \[(.*?)\]', lambda m: "addopts = " + " ".join(re.findall(r'"([^"]+)"', m.group(1))), body)
    body = re.sub(r'testpaths = \[(.*?)\]', lambda m: "testpaths = " + " ".join(re.findall(r'"([^"]+)"', m.group(1))), body)
    for key in ("filterwarnings", "markers"):
        body = re.sub(key + r' = \[(.*?)\]', lambda m, k=key: k + " =\n" + "\n".join(
            "    " + s for s in re.findall(r'"([^"]+)"', m.group(1), re.S)), body, flags=re.S)
    body = re.sub(r'^(\w+) = "(.*)"$', r"\1 = \2", body, flags=re.M)
    body = re.sub(r'^(\w+) = (true|false)$', r"\1 = \2", body, flags=re.M)
    f.write(body + "\n")
EOF
  PYTEST_CFG=(-c "$OUT/pytest-gpu.ini" --rootdir="$ROOT")
  echo "pytest < 9: using $OUT/pytest-gpu.ini (pyproject's config without strict_* keys)" | tee -a "$SUMMARY"
fi

PYTEST=($PY -m pytest -q -p no:cacheprovider "${PYTEST_CFG[@]}" "${IGNORES[@]}" tests)

# ---------------------------------------------------------------------------- tests
step pytest_cupy 110 "${PYTEST[@]}" --backend=cupy -k cupy --junitxml="$OUT/pytest_cupy.xml"
step pytest_torch 110 "${PYTEST[@]}" --backend=torch -k cuda --junitxml="$OUT/pytest_torch.xml"

# ---------------------------------------------------------------------------- benchmarks
step bench_step 90 $PY benchmarks/bench_step.py --backends torch:cuda,cupy \
  --workloads b1,b16,b256,b4096 --budget 1.5 --rounds 5 --warmup 20 \
  --rows "torch by hand,torch autograd,autograd + fused SGD,portprop eager,portprop workspaces" \
  --json "$OUT/bench_step.json"
step bench_memory 40 $PY benchmarks/bench_memory.py --device cuda --batch 4096 \
  --rows "torch autograd,autograd + fused SGD,portprop/torch,portprop/torch eager" \
  --json "$OUT/bench_memory.json"
if $PY benchmarks/bench_sklearn.py --help 2>/dev/null | grep -q -- --backends; then
  step bench_sklearn 40 $PY benchmarks/bench_sklearn.py --backends torch:cuda,cupy \
    --repeats 1 --threads 0 --solvers adam,lbfgs --dispatch --data digits
else
  echo "bench_sklearn: SKIPPED (it has no --backends option, or cannot start)" | tee -a "$SUMMARY"
fi
step bench_compiled 60 $PY benchmarks/bench_step.py --backends torch:cuda \
  --workloads b256,b4096 --budget 1 --rounds 3 --warmup 20 --rows "portprop compiled" \
  --json "$OUT/bench_compiled.json"

step bench_precision 30 $PY benchmarks/bench_precision.py --backend torch:cuda --steps 50 --repeats 5
step bench_distributed 50 $PY benchmarks/bench_distributed.py --device cuda --procs 1 --engines torch,ddp

# ---------------------------------------------------------------------------- summary
echo
echo "==================== summary ($(($(date +%s) - START)) s of ${BUDGET} s) ===================="
cat "$SUMMARY"
for name in bench_step bench_compiled; do
  if [[ -f $OUT/$name.log ]]; then
    echo
    echo "--- $name: summary and targets"
    sed -n '/^Summary:/,/^x floor:/p' "$OUT/$name.log"
  fi
done
[[ -f $OUT/bench_memory.log ]] && sed -n '/^Memory:/,$p' "$OUT/bench_memory.log"
exit 0
