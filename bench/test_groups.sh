# Sourced by bench/gpu_check.sh: GPU test groups that run in their own processes, all at once.
#
# Each group of new kernel forms is tested in a process of its own, so that a fault (which poisons
# a CUDA context) or a barrier that never completes costs that group alone, and a group that fails
# drops only its own tilings from the benchmark. They ran one after the other until session 24: in
# run 2026-11-28c the cluster group took 24 s and the main kernel tests 46 s, and four groups (shared
# x, shared x with the meet, 256-token tiles, cuSPARSELt) have been added since, all before the
# benchmark in a ten-minute device call. Each mostly compiles on the CPU (16 cores there) and runs
# short products on the GPU, so started together they should take little more than the slowest.
#
#   group_start NAME LIMIT CMD...    run CMD in the background under `timeout LIMIT`; its output
#                                    goes to $RUN/NAME.log, its exit status to $RUN/.NAME.rc
#   group_finish NAME [VAR [WHAT]]   wait for it and print "NAME exit RC: <its last line>"; where RC
#                                    is not 0 and VAR is named, export VAR=0 and say that WHAT (by
#                                    default "the NAME group") is left out of the benchmark.
#                                    Returns RC.

declare -A GROUP_PIDS=()

group_start() {
  local name=$1 limit=$2
  shift 2
  rm -f "$RUN/.$name.rc"
  ( timeout "$limit" "$@" > "$RUN/$name.log" 2>&1; echo $? > "$RUN/.$name.rc" ) &
  GROUP_PIDS[$name]=$!
}

group_finish() {
  local name=$1 var=${2:-} what=${3:-"the $1 group"} rc
  if [ -z "${GROUP_PIDS[$name]:-}" ]; then
    echo "group_finish: no group '$name' was started (started: ${!GROUP_PIDS[*]})" >&2
    return 2
  fi
  wait "${GROUP_PIDS[$name]}"
  rc=$(cat "$RUN/.$name.rc" 2>/dev/null || echo 255)  # no status written: the subshell itself died
  echo "$name exit $rc: $(tail -1 "$RUN/$name.log" 2>/dev/null)"
  if [ "$rc" -ne 0 ] && [ -n "$var" ]; then
    export "$var=0"
    echo "$what failed its GPU tests: benchmarking without it ($var=0)"
  fi
  return "$rc"
}
