#!/bin/bash
# A benchmark longer than one device call (10 min at most) on a lent GPU machine. The job runs in its own process
# session, so it outlives the call while the machine stays warm (30 s after a call); each later call waits on it.
#   first call:  bash benchmarks/device_run.sh start SECONDS -- python3 benchmarks/quality.py ...
#   next calls:  bash benchmarks/device_run.sh wait SECONDS      (issue it as soon as the last one returns)
# SECONDS: how long this call waits before it hands back (keep it 30-40 s under the call's timeout_s). Every call
# returns what is there so far under $OUT: runs.tgz (logs, summary.json, metrics.jsonl and config.yaml of each
# run under benchmarks/work/quality), the result JSONs written since the start, and the job's log.
# The first call carries .whl and .carry (see benchmarks/device_env.sh); a job may be started beside a running
# one (a second `start`, e.g. after carrying more data), and `wait` waits for all of them.
set -u
shopt -s nullglob
what=${1:-}; budget=${2:-}
shift 2 2>/dev/null; [ "${1:-}" = "--" ] && shift
state=/tmp/device_run
if [ -z "$what" ] || [ -z "$budget" ] || { [ "$what" = start ] && [ $# -eq 0 ]; }; then
  echo "usage: device_run.sh start SECONDS -- COMMAND... | device_run.sh wait SECONDS" >&2; exit 2
fi
[[ $budget =~ ^[0-9]+$ ]] || { echo "device_run.sh: SECONDS must be a whole number, got '$budget'" >&2; exit 2; }

collect() {
  local runs
  runs=$(cd benchmarks/work/quality 2>/dev/null && ls -d runs-*/*/*.log runs-*/*/*/summary.json runs-*/*/*/metrics.jsonl \
    runs-*/*/*/config.yaml 2>/dev/null)
  [ -n "$runs" ] && tar czf "$OUT/runs.tgz" -C benchmarks/work/quality $runs
  find benchmarks/results -name '*.json' -newer "$state/started" 2>/dev/null | head -6 | xargs -r cp -t "$OUT"
  local logs=("$state"/job*.log)
  [ ${#logs[@]} -gt 0 ] && cat "${logs[@]}" > "$OUT/jobs.log" && tail -n 25 "${logs[@]}"
}

case $what in
  start)
    mkdir -p "$state"; [ -e "$state/started" ] || touch "$state/started"
    source benchmarks/device_env.sh || exit 1
    logs=("$state"/job*.log); n=${#logs[@]}
    setsid nohup bash -c '"$@"; echo $? > '"$state/job$n.rc" _ "$@" > "$state/job$n.log" 2>&1 < /dev/null &
    echo "started job $n: $*" ;;
  wait)
    if [ ! -e "$state/started" ]; then
      echo "nothing started on this machine: the last one went back (over 30 s between calls); start again" >&2
      exit 3
    fi ;;
  *) echo "device_run.sh: unknown step '$what' (start or wait)" >&2; exit 2 ;;
esac

running() { for log in "$state"/job*.log; do [ -e "${log%.log}.rc" ] || return 0; done; return 1; }
t0=$SECONDS
while running && [ $((SECONDS - t0)) -lt "$budget" ]; do sleep 5; done
collect
if running; then echo "[device_run] still running: call 'wait' again now"; else echo "[device_run] all jobs done: $(cat "$state"/job*.rc | tr '\n' ' ')"; fi
