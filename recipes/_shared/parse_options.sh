#!/usr/bin/env bash
# Turn --long-option value pairs into shell variables (long_option=value), ESPnet style.
# A variable must already be defined (with its default) for its option to be accepted.
# `--help` prints $help_message.

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "${help_message:-no help}" >&2
      exit 0
      ;;
    --*=*)
      name=${1%%=*}; name=${name#--}; name=${name//-/_}; value=${1#*=}
      shift
      ;;
    --*)
      name=${1#--}; name=${name//-/_}
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      value=$2
      shift 2
      ;;
    *)
      break
      ;;
  esac
  if ! declare -p "${name}" >/dev/null 2>&1; then
    echo "$0: unknown option --${name//_/-}" >&2
    exit 1
  fi
  printf -v "${name}" '%s' "${value}"
done
