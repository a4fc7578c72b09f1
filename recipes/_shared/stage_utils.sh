#!/usr/bin/env bash
# Stage helpers shared by every recipe (ESPnet/icefall style).
# Source it after setting `stage`, `stop_stage` and `out`.

log() {
  # timestamp, caller file:line, message -> stderr
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

# stage_wanted N: true when N lies in [stage, stop_stage]
stage_wanted() {
  [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]
}

# stage_done NAME: true when the stage's .done marker exists
stage_done() {
  [ -f "${out}/.done/$1" ]
}

mark_done() {
  mkdir -p "${out}/.done"
  touch "${out}/.done/$1"
}

# run_stage NAME LOGFILE CMD...: run CMD with its output in LOGFILE; on failure print
# the log's tail and exit non-zero. Skips the stage when its .done marker exists.
run_stage() {
  local name=$1 logfile=$2
  shift 2
  if stage_done "${name}"; then
    log "Stage ${name}: already done (${out}/.done/${name}); skipping"
    return 0
  fi
  mkdir -p "$(dirname "${logfile}")"
  local t0=${SECONDS}
  if "$@" >"${logfile}" 2>&1; then
    mark_done "${name}"
    log "Stage ${name}: finished in $((SECONDS - t0))s (log: ${logfile})"
  else
    local rc=$?
    log "Stage ${name} FAILED (exit ${rc}); last lines of ${logfile}:"
    tail -n 30 "${logfile}" >&2
    exit "${rc}"
  fi
}

# require_verb VERB: stop with a clear message when a tmt verb is not in this build
require_verb() {
  if tmt "$1" --help 2>/dev/null | grep -q "not available in this build"; then
    log "tmt $1 is not available in this build yet; stopping before this stage"
    return 1
  fi
}
