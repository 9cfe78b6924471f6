#!/usr/bin/env bash
# Smoke test for a trn1 after deployments/trn1/bootstrap.sh: runs one tiny torch-xla
# training program through `annapurna execute` on NeuronCore 0 and 1 at the same time,
# twice, and checks that
#   - all four runs succeeded and ran on a NeuronCore (`ran_on` starts with "neuron"),
#   - the first round put compiled graphs (*.neff) into the Neuron compile cache,
#   - the second round hit the cache: fewer new *.neff files than the first, and each
#     core's run was faster than its first.
# It prints a table (core, first run s, second run s, ran_on, ok) and exits non-zero on
# any failure. Run it as the worker's user (the cache entries it adds should be the worker's):
#
#   sudo -u ubuntu bash /opt/annapurna/deployments/trn1/smoke.sh
#   bash deployments/trn1/smoke.sh --dry-run     # prints the commands, runs nothing
set -euo pipefail

APP_DIR=${ANNAPURNA_DIR:-/opt/annapurna}
unset ANNAPURNA_DIR  # the script's own input: `annapurna` refuses unknown ANNAPURNA_* settings
ENV_FILE=/etc/annapurna/worker.env
DRY_RUN=0

usage() { echo "usage: bash deployments/trn1/smoke.sh [--dry-run]"; }
die() { echo "smoke: error: $*" >&2; exit 1; }

while (($#)); do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

# The worker's settings (compile cache, isolation, PATH), as the service sees them.
if [[ -r $ENV_FILE ]]; then
  set -a
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  set +a
fi
CACHE=${ANNAPURNA_NEURON_COMPILE_CACHE:-/var/cache/annapurna/neuron-compile-cache}
ANNAPURNA=$APP_DIR/.venv/bin/annapurna
PYTHON=$APP_DIR/.venv/bin/python
CORES=(0 1)

# A feature width that differs from one smoke run to the next, so the graphs are new and
# the first round must compile (the cache may hold the previous smoke run's graphs).
DIM=$((16 + (RANDOM * 32768 + RANDOM) % 4096))

if ((DRY_RUN)); then
  WORK=/tmp/annapurna-smoke.XXXXXX
else
  if ((EUID == 0)); then
    echo "smoke: warning: running as root; the cache entries it adds will be root's. Run it as the worker's user: sudo -u ubuntu bash $0" >&2
  fi
  [[ -x $ANNAPURNA ]] || die "$ANNAPURNA not found: run bootstrap.sh first (or set ANNAPURNA_DIR)"
  [[ $CACHE != s3://* ]] || die "the compile cache is $CACHE; this check counts *.neff files in a local directory"
  mkdir -p "$CACHE"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/annapurna-smoke.XXXXXX")
fi
PROGRAM=$WORK/smoke_train.py

program() {
  cat <<PY
# Annapurna trn1 smoke test: a few steps of a linear model on a NeuronCore.
import json

import torch
import torch_xla.core.xla_model as xm

DIM = $DIM  # changes with every smoke run, so the first run compiles

torch.manual_seed(0)
device = xm.xla_device()
model = torch.nn.Linear(DIM, 1).to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(64, DIM).to(device)
y = x.sum(dim=1, keepdim=True)

for step in range(5):
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    xm.mark_step()
    print("METRICS: " + json.dumps({"step": step, "loss": loss.item()}), flush=True)
PY
}

count_neffs() { find "$CACHE" -type f -name '*.neff' 2>/dev/null | wc -l; }

# round N: both cores at the same time; results in $WORK/rN-coreC.json
run_round() {
  local round=$1 core pids=()
  for core in "${CORES[@]}"; do
    local out=$WORK/r$round-core$core
    if ((DRY_RUN)); then
      echo "+ $ANNAPURNA execute $PROGRAM --device neuron:$core --json > $out.json 2> $out.log &"
    else
      "$ANNAPURNA" execute "$PROGRAM" --device "neuron:$core" --json >"$out.json" 2>"$out.log" &
      pids+=($!)
    fi
  done
  if ((DRY_RUN)); then
    echo "+ wait"
  else
    local pid
    for pid in "${pids[@]}"; do wait "$pid" || true; done
  fi
}

# field FILE NAME: one field of an ExecutionResult JSON file ("" when absent or unreadable).
field() {
  "$PYTHON" - "$1" "$2" <<'PY'
import json, sys
try:
    text = open(sys.argv[1]).read()
    start = text.find("\n{") + 1 if not text.startswith("{") else 0  # anything printed before it
    value = json.loads(text[start:]).get(sys.argv[2])
except (OSError, ValueError, AttributeError):
    value = None
print("" if value is None else str(value).lower() if isinstance(value, bool) else value)
PY
}

if ((DRY_RUN)); then
  echo "smoke dry run: nothing is run."
  echo "compile cache: $CACHE"
  echo "+ mkdir $WORK"
  echo "+ write $PROGRAM:"
  program | sed 's/^/    | /'
  echo "+ count *.neff under $CACHE"
  echo "round 1 (compiles):"
  run_round 1
  echo "+ count *.neff under $CACHE"
  echo "round 2 (must hit the compile cache):"
  run_round 2
  echo "+ count *.neff under $CACHE, then check and print the table"
  exit 0
fi

program >"$PROGRAM"
echo "smoke: program $PROGRAM (DIM=$DIM), compile cache $CACHE"
neffs0=$(count_neffs)
run_round 1
neffs1=$(count_neffs)
run_round 2
neffs2=$(count_neffs)
new1=$((neffs1 - neffs0))
new2=$((neffs2 - neffs1))

failures=()
printf '%-6s %14s %15s %-12s %s\n' core "first run s" "second run s" ran_on ok
for core in "${CORES[@]}"; do
  r1=$WORK/r1-core$core.json r2=$WORK/r2-core$core.json
  ok=yes
  for r in "$r1" "$r2"; do
    if [[ $(field "$r" success) != true ]]; then
      ok=no
      failures+=("neuron:$core: $(basename "$r") did not succeed: $(field "$r" error) (see ${r%.json}.log)")
    fi
    ran_on=$(field "$r" ran_on)
    if [[ $ran_on != neuron* ]]; then
      ok=no
      failures+=("neuron:$core: $(basename "$r") ran on '${ran_on:-?}', not a NeuronCore")
    fi
  done
  t1=$(field "$r1" execution_time) t2=$(field "$r2" execution_time)
  if ! "$PYTHON" -c 'import sys; sys.exit(not float(sys.argv[2]) < float(sys.argv[1]))' "${t1:-0}" "${t2:-0}" 2>/dev/null; then
    ok=no
    failures+=("neuron:$core: the second run (${t2:-?} s) was not faster than the first (${t1:-?} s): no compile-cache hit?")
  fi
  printf '%-6s %14s %15s %-12s %s\n' "$core" "${t1:-?}" "${t2:-?}" "${ran_on:-?}" "$ok"
done

echo "new *.neff in $CACHE: first round $new1, second round $new2"
((new1 > 0)) || failures+=("the first round added no *.neff to $CACHE: the compile cache is not used (or, rarely, it already held DIM=$DIM from an earlier smoke run: run it again)")
((new2 < new1)) || failures+=("the second round added $new2 *.neff (first: $new1): it did not hit the cache")

if ((${#failures[@]})); then
  printf 'smoke: FAIL: %s\n' "${failures[@]}" >&2
  echo "smoke: results and logs kept in $WORK" >&2
  exit 1
fi
echo "smoke: OK (results in $WORK)"
