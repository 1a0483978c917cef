# Sourced by the curve scripts (tools/bench-phoneme, tools/bench-video): run
# their trainings and evaluations JOBS at a time. With JOBS > 1 every job gets
# one BLAS thread (unless OPENBLAS_NUM_THREADS is set), so that the jobs share
# the cores instead of fighting over them; a job's failure is remembered in a
# marker file and reported by jobs_drain, which every phase calls at its end.
# Usage: jobs_init JOBS WORKDIR; jobs_spawn CMD ARGS...; jobs_drain

jobs_init() {
  bench_jobs=$1
  bench_failed="$2/.job-failed"
  rm -f "$bench_failed"
  if [ "$bench_jobs" -gt 1 ] && [ -z "${OPENBLAS_NUM_THREADS:-}" ]; then
    export OPENBLAS_NUM_THREADS=1
  fi
}

jobs_spawn() {
  if [ "$bench_jobs" -le 1 ]; then
    "$@" || touch "$bench_failed"
    return 0
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$bench_jobs" ]; do wait -n || true; done
  { "$@" || touch "$bench_failed"; } &
}

jobs_drain() {
  wait || true
  if [ -f "$bench_failed" ]; then
    echo "$(basename "$0"): a job failed (its error is above); finished work is kept, rerun to continue" >&2
    exit 1
  fi
}
