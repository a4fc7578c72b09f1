#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The SpokenCOCO recipe: tri-modal translation on COCO images + captions and the
# SpokenCOCO spoken captions (Karpathy train (+restval)/valid/test splits), from local
# copies. Nothing is downloaded: the corpus, the HuBERT checkpoint and the BERT
# vocabulary are read from the paths you give.
#
# Every output lives under --out (default exp/spokencoco); deleting that directory and
# re-running rebuilds everything. Each stage logs its inputs and outputs, calls one
# `tmt` verb, and touches <out>/.done/<stage> when it succeeds, so a re-run (after a
# kill, say) skips finished stages; tokenization, training and the vocoder also resume
# their own partial outputs.
#
#   bash recipes/spokencoco/run.sh --coco-dir /data/coco --spokencoco-dir /data/SpokenCOCO \
#       --hubert-ckpt /models/hubert_base_ls960.pt --bert-vocab /models/bert-base-uncased/vocab.txt
#   bash recipes/spokencoco/run.sh ... --preset paper --ngpu 8 --jobs 16   # torchrun on 8 GPUs
#   bash recipes/spokencoco/run.sh ... --speech-card mfcc --stop-stage 2    # no HuBERT: MFCC units
set -euo pipefail

recipe=spokencoco
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "${recipe_dir}/../.." && pwd)
shared_dir=${repo_dir}/recipes/_shared
cards=${repo_dir}/tokenizers

# ---- options (each can be given as --name value; see also _shared/real_data_options.sh) ----
out=exp/spokencoco      # output directory (everything the recipe writes)
# corpus
coco_dir=               # COCO folder: train2014/, val2014/ (and dataset_coco.json, the Karpathy splits)
spokencoco_dir=         # SpokenCOCO folder: SpokenCOCO_{train,val}.json and wavs/
restval=true            # true: the Karpathy restval images join train (the usual 113k-image train set)
allow_missing=false     # true: skip rows whose image or wav is missing instead of failing
# shellcheck source=../_shared/real_data_options.sh
. "${shared_dir}/real_data_options.sh"

# shellcheck disable=SC2034  # read by parse_options.sh
help_message=$(cat <<EOF
Usage: $0 --coco-dir DIR --spokencoco-dir DIR [options]
Corpus options:
  --coco-dir DIR         local COCO copy: train2014/ val2014/ (required for stage 0)
  --spokencoco-dir DIR   local SpokenCOCO copy: SpokenCOCO_{train,val}.json wavs/ (required for stage 0)
  --restval BOOL         Karpathy restval images into train (default ${restval})
  --allow-missing BOOL   skip rows with a missing image/wav (default ${allow_missing})
$(real_data_help)
EOF
)
# shellcheck source=../_shared/real_data_setup.sh
. "${shared_dir}/real_data_setup.sh"

if stage_wanted 0; then
  if [ -z "${coco_dir}" ] || [ -z "${spokencoco_dir}" ]; then
    log "Stage 0 needs --coco-dir and --spokencoco-dir (local COCO and SpokenCOCO copies)"; exit 1
  fi
  prep_opts=()
  [ "${allow_missing}" = true ] && prep_opts+=(--allow-missing)
  if [ "${restval}" = true ]; then prep_opts+=(--restval); else prep_opts+=(--no-restval); fi
  log "Stage 0: prepare SpokenCOCO: ${coco_dir} + ${spokencoco_dir} -> ${data}/{train,valid,test}.jsonl.gz"
  run_stage 0-prepare "${logs}/0-prepare.log" \
    tmt prepare spokencoco --coco-dir "${coco_dir}" --spokencoco-dir "${spokencoco_dir}" --out "${data}" "${prep_opts[@]}"
fi

# stages 1-10 are the same for every real corpus
# shellcheck source=../_shared/real_data_stages.sh
. "${shared_dir}/real_data_stages.sh"
