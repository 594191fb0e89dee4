#!/usr/bin/env bash
# One device call for issue 3: probe the sparse-MMA kernel, the kernel tests on CUDA, then the
# benchmark (bench/sparse24.py). Everything lands in $OUT (default bench/results/latest):
# spmma-probe.txt, pytest.log, sparse24.{json,md,log}, dispatch_<arch>.json, nvidia-smi.txt.
# Extra arguments go to bench/sparse24.py.
set -o pipefail
OUT=${OUT:-bench/results/latest}
mkdir -p "$OUT"
export PYTHONPATH=lib PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv > "$OUT/nvidia-smi.txt" 2>&1
# the spmma kernel issues inline PTX: probe it in its own process (a fault poisons the context)
timeout 120 python3 bench/spmma_probe.py > "$OUT/spmma-probe.txt" 2>&1
order=$(sed -n 's/^use: //p' "$OUT/spmma-probe.txt")
echo "spmma probe: $(tr '\n' ' ' < "$OUT/spmma-probe.txt" | tail -c 300)"
if [ "$order" = "pairs" ] || [ "$order" = "rows" ]; then
  export REPRO_SPMMA_META_ORDER=$order
else
  export REPRO_BENCH_KERNELS=fma,mma,expand  # benchmark without it
fi
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")
timeout 240 python3 -m pytest tests/kernels tests/test_pruning.py -q -p no:cacheprovider $workers \
  > "$OUT/pytest.log" 2>&1
echo "pytest exit $?: $(tail -1 "$OUT/pytest.log")"
timeout "${BENCH_TIMEOUT:-400}" python3 bench/sparse24.py --out "$OUT" "$@" 2>&1 | grep -v "^|" | tail -60
echo "bench exit $?"
