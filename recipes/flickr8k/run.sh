#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The Flickr8k recipe: tri-modal translation on Flickr8k images + captions and the
# Flickr8kAudio spoken captions (Karpathy train/valid/test splits), from a local copy.
# Nothing is downloaded: the corpus, the HuBERT checkpoint and the BERT vocabulary are
# read from the paths you give.
#
# Every output lives under --out (default exp/flickr8k); deleting that directory and
# re-running rebuilds everything. Each stage logs its inputs and outputs, calls one
# `tmt` verb, and touches <out>/.done/<stage> when it succeeds, so a re-run (after a
# kill, say) skips finished stages; tokenization, training and the vocoder also resume
# their own partial outputs.
#
#   bash recipes/flickr8k/run.sh --flickr8k-dir /data/flickr8k \
#       --hubert-ckpt /models/hubert_base_ls960.pt --bert-vocab /models/bert-base-uncased/vocab.txt
#   bash recipes/flickr8k/run.sh ... --preset paper --ngpu 4          # torchrun on 4 GPUs
#   bash recipes/flickr8k/run.sh ... --speech-card mfcc --stop-stage 2  # no HuBERT: MFCC units
set -euo pipefail

recipe=flickr8k
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "${recipe_dir}/../.." && pwd)
shared_dir=${repo_dir}/recipes/_shared
cards=${repo_dir}/tokenizers

# ---- options (each can be given as --name value; see also _shared/real_data_options.sh) ----
out=exp/flickr8k        # output directory (everything the recipe writes)
# corpus
flickr8k_dir=           # Flickr8k root: Flicker8k_Dataset/, Flickr8k.token.txt, dataset_flickr8k.json, flickr_audio/
allow_missing=false     # true: skip rows whose image or wav is missing instead of failing
# shellcheck source=../_shared/real_data_options.sh
. "${shared_dir}/real_data_options.sh"

# shellcheck disable=SC2034  # read by parse_options.sh
help_message=$(cat <<EOF
Usage: $0 --flickr8k-dir DIR [options]
Corpus options:
  --flickr8k-dir DIR     local Flickr8k + Flickr8kAudio copy (required for stage 0)
  --allow-missing BOOL   skip rows with a missing image/wav (default ${allow_missing})
$(real_data_help)
EOF
)
# shellcheck source=../_shared/real_data_setup.sh
. "${shared_dir}/real_data_setup.sh"

if stage_wanted 0; then
  if [ -z "${flickr8k_dir}" ]; then
    log "Stage 0 needs --flickr8k-dir (the local Flickr8k + Flickr8kAudio copy)"; exit 1
  fi
  missing_opt=(); [ "${allow_missing}" = true ] && missing_opt=(--allow-missing)
  log "Stage 0: prepare Flickr8k: ${flickr8k_dir} -> ${data}/{train,valid,test}.jsonl.gz"
  run_stage 0-prepare "${logs}/0-prepare.log" \
    tmt prepare flickr8k --root "${flickr8k_dir}" --out "${data}" "${missing_opt[@]}"
fi

# stages 1-10 are the same for every real corpus
# shellcheck source=../_shared/real_data_stages.sh
. "${shared_dir}/real_data_stages.sh"
