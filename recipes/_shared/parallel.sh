#!/usr/bin/env bash
# Parallel (sharded) stage helper, ESPnet style: N background jobs, one log each;
# on failure the failing job's log is printed. Source it after stage_utils.sh.

# run_sharded NAME LOGPREFIX NJOBS MERGE_STORE CMD...
#   Runs `CMD --shard k/N` for k = 0..N-1 in the background, job k logging to
#   LOGPREFIX.k.log; waits for all of them; on failure prints the log tail of every
#   failed job and exits non-zero. Then, unless MERGE_STORE is "-", merges the parts
#   into MERGE_STORE with `tmt manifest merge-parts` (verbs that merge their own shard
#   outputs, like `tmt translate --output-dir`, pass "-"). With NJOBS=1 the command runs
#   once, without --shard. Marks NAME done (<out>/.done/NAME); skipped when already done.
#   The sharded verbs resume their own part, so a re-run after a kill picks up where it
#   stopped.
# shellcheck disable=SC2154  # `out` is set by the recipe
run_sharded() {
  local name=$1 logprefix=$2 njobs=$3 merge_store=$4
  shift 4
  if stage_done "${name}"; then
    log "Stage ${name}: already done (${out}/.done/${name}); skipping"
    return 0
  fi
  if [ "${njobs}" -le 1 ]; then
    run_stage "${name}" "${logprefix}.log" "$@"
    return 0
  fi
  mkdir -p "$(dirname "${logprefix}")"
  local t0=${SECONDS} k pids=() failed=()
  # split the cores between the jobs (unless OMP_NUM_THREADS is set): N jobs that each
  # start one torch thread per core oversubscribe the machine, and spinning OpenMP
  # threads then slow every job down several times over
  local threads=${OMP_NUM_THREADS:-$(($(nproc) / njobs))}
  [ "${threads}" -ge 1 ] || threads=1
  for ((k = 0; k < njobs; k++)); do
    OMP_NUM_THREADS=${threads} MKL_NUM_THREADS=${threads} "$@" --shard "${k}/${njobs}" >"${logprefix}.${k}.log" 2>&1 &
    pids+=("$!")
  done
  # stop the jobs when the recipe itself is interrupted
  trap 'kill "${pids[@]}" 2>/dev/null; exit 130' INT TERM
  for ((k = 0; k < njobs; k++)); do
    if ! wait "${pids[k]}"; then
      failed+=("${k}")
    fi
  done
  trap - INT TERM
  if [ "${#failed[@]}" -gt 0 ]; then
    for k in "${failed[@]}"; do
      log "Stage ${name}: job ${k}/${njobs} FAILED; last lines of ${logprefix}.${k}.log:"
      tail -n 30 "${logprefix}.${k}.log" >&2
    done
    exit 1
  fi
  if [ "${merge_store}" != "-" ]; then
    if ! tmt manifest merge-parts "${merge_store}" --parts "${njobs}" >"${logprefix}.merge.log" 2>&1; then
      log "Stage ${name}: merging ${njobs} parts into ${merge_store} FAILED:"
      tail -n 30 "${logprefix}.merge.log" >&2
      exit 1
    fi
  fi
  mark_done "${name}"
  log "Stage ${name}: ${njobs} jobs finished in $((SECONDS - t0))s (logs: ${logprefix}.*.log)"
}
