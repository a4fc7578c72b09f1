#!/usr/bin/env bash
# Setup shared by the real-data recipes: read the command line, find `tmt`, lay out the
# output directory, split the extra-option strings into arrays, and choose how to run
# training (one process, or torchrun on --ngpu GPUs). Sourced by recipes/<corpus>/run.sh
# after real_data_options.sh and its help message.
# shellcheck disable=SC2034  # the variables set here are read by the stages
# shellcheck disable=SC2154  # recipe, repo_dir, shared_dir and the options are set by the sourcing recipe

cmdline=$(printf '%q ' "$0" "$@")  # before parse_options.sh consumes the arguments
# shellcheck source=recipes/_shared/parse_options.sh
. "${shared_dir}/parse_options.sh"
# shellcheck source=recipes/_shared/stage_utils.sh
. "${shared_dir}/stage_utils.sh"
# shellcheck source=recipes/_shared/parallel.sh
. "${shared_dir}/parallel.sh"

# prefer the checkout's virtual environment when `tmt` is not on PATH
if ! command -v tmt >/dev/null 2>&1 && [ -x "${repo_dir}/.venv/bin/tmt" ]; then
  PATH=${repo_dir}/.venv/bin:${PATH}
fi

mkdir -p "${out}"
out=$(cd "${out}" && pwd)
# raw manifests: under --out unless --manifest-dir puts them elsewhere (data_manifests/ shares
# one prepared corpus between experiments); the vocabulary always stays with the experiment
data=${out}/data
if [ -n "${manifest_dir}" ]; then mkdir -p "${manifest_dir}"; data=$(cd "${manifest_dir}" && pwd); fi
vocab_json=${out}/data/vocab.json
tok=${out}/tokenizers
store=${out}/store
exp=${out}/exp
logs=${out}/logs
splits="train valid test"
directions="image:text image:speech text:image speech:image speech:text text:speech"
if [ "${ngpu}" -gt 0 ]; then device=cuda; else device=cpu; fi

read -r -a speech_fit_extra <<<"${speech_fit_args}"
read -r -a text_fit_extra <<<"${text_fit_args}"
read -r -a image_fit_extra <<<"${image_fit_args}"
read -r -a tokenize_extra <<<"${tokenize_args}"
read -r -a train_extra <<<"${train_args}"
read -r -a bt_extra <<<"${bt_args}"
read -r -a vocoder_extra <<<"${vocoder_args}"
read -r -a translate_extra <<<"${translate_args}"
read -r -a score_extra <<<"${score_args}"
read -r -a torchrun_extra <<<"${torchrun_args}"
pickle_opt=(); [ "${trust_pickle}" = true ] && pickle_opt=(--trust-pickle)

# keep the command line, so the experiment can re-run itself
echo "${cmdline}" >>"${out}/command.txt"
log "Recipe ${recipe}: outputs under ${out}"

# decoding jobs: one per GPU, or --jobs on CPU
if [ "${ngpu}" -gt 0 ]; then decode_jobs=1; else decode_jobs=${jobs}; fi  # (back-translation, translation)

# `tmt train` on one device, or under torchrun on ${ngpu} GPUs
train_cmd=(tmt train)
if [ "${ngpu}" -gt 1 ]; then
  train_cmd=(torchrun --nproc-per-node "${ngpu}" "${torchrun_extra[@]}" -m tmt train)
fi
