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

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "${recipe_dir}/../.." && pwd)
shared_dir=${repo_dir}/recipes/_shared
cards=${repo_dir}/tokenizers

# ---- options (each can be given as --name value) ----
stage=0                 # first stage to run
stop_stage=100          # last stage to run
out=exp/spokencoco      # output directory (everything the recipe writes)
jobs=4                  # parallel --shard k/N jobs for tokenization, back-translation, decoding
ngpu=1                  # GPUs for training and decoding: 0 = CPU; > 1 = torchrun (DDP) on this node
torchrun_args=          # extra torchrun options for multi-node, e.g. "--nnodes 2 --node-rank 0 --rdzv-endpoint host:29500"
# corpus
coco_dir=               # COCO folder: train2014/, val2014/ (and dataset_coco.json, the Karpathy splits)
spokencoco_dir=         # SpokenCOCO folder: SpokenCOCO_{train,val}.json and wavs/
restval=true            # true: the Karpathy restval images join train (the usual 113k-image train set)
allow_missing=false     # true: skip rows whose image or wav is missing instead of failing
# tokenizers
speech_card=hubert      # hubert (the paper's units; needs --hubert-ckpt) | mfcc (no weights) | a card .yaml
hubert_ckpt=            # HuBERT-Base checkpoint: fairseq .pt, torchaudio state dict or Hugging Face directory
km_bin=                 # optional fairseq km.bin to import instead of fitting k-means (needs --trust-pickle true)
trust_pickle=false      # true: allow pickled fairseq files (km.bin, checkpoints with pickled configs)
speech_fit_args=        # extra options for `tmt tokenize speech fit`, e.g. "--set clusters=100"
text_tokenizer=bert     # bert (BERT vocab.txt given by --bert-vocab) | trained (WordPiece trained on the captions)
bert_vocab=             # BERT vocab.txt or Hugging Face tokenizer directory (bert-base-uncased)
text_fit_args=          # extra options for `tmt tokenize text fit`
image_card=${cards}/image-vq-f8-512.yaml  # image VQ tokenizer card
image_fit_args=         # extra options for `tmt tokenize image fit`, e.g. "--set train.steps=20000"
tokenize_args=          # extra options for `tmt tokenize all`, e.g. "--skip-bad"
# model
preset=base             # model preset: base (12+12 layers, d 768) | paper (d 1024, 270M) | demo | tiny
max_steps=              # override the preset's optimizer steps
train_args=             # extra options for `tmt train`, e.g. "--set data.max_tokens=16384 --set distributed=fsdp"
# back-translation (optional: partial data, e.g. images without captions)
bt_manifests=           # raw manifests of partial rows (space separated); empty: skip stages 5-6
bt_weight=0.5           # sampling weight of each synthetic store next to the real one (1.0)
bt_steps=               # optimizer steps of the real+synthetic run (default: the preset's)
bt_args=                # extra options for `tmt backtranslate`
# vocoder
vocoder_config=paper    # vocoder preset for `tmt vocoder train`: paper | demo | unit-mel | a YAML file
vocoder_ckpt=           # or import a fairseq unit HiFi-GAN: g_XXXXXXXX ...
vocoder_json=           # ... and its config.json (needs units from the same k-means: see --km-bin)
vocoder_args=           # extra options for `tmt vocoder train`, e.g. "--set train.max_minutes=600"
# evaluation
eval_splits="test"      # splits to translate and score
beam_size=5             # beam width
translate_args=         # extra options for `tmt translate`
clip_dir=               # local transformers CLIPModel directory for scoring generated images (optional)
score_args=             # extra options for `tmt score run`, e.g. "--no-coco"

# shellcheck disable=SC2034  # read by parse_options.sh
help_message=$(cat <<EOF
Usage: $0 --coco-dir DIR --spokencoco-dir DIR [options]
Main options:
  --stage N              first stage (default ${stage})
  --stop-stage N         last stage (default ${stop_stage})
  --out DIR              output directory (default ${out})
  --jobs N               parallel --shard k/N jobs (default ${jobs})
  --ngpu N               GPUs: 0 = CPU, >1 = torchrun DDP (default ${ngpu})
  --torchrun-args STR    extra torchrun options (multi-node)
  --coco-dir DIR         local COCO copy: train2014/ val2014/ (required for stage 0)
  --spokencoco-dir DIR   local SpokenCOCO copy: SpokenCOCO_{train,val}.json wavs/ (required for stage 0)
  --restval BOOL         Karpathy restval images into train (default ${restval})
  --allow-missing BOOL   skip rows with a missing image/wav (default ${allow_missing})
  --speech-card NAME     hubert | mfcc | path to a card (default ${speech_card})
  --hubert-ckpt PATH     HuBERT-Base weights (required with --speech-card hubert)
  --km-bin PATH          import fairseq km.bin instead of fitting k-means (with --trust-pickle true)
  --trust-pickle BOOL    allow pickled fairseq files (default ${trust_pickle})
  --text-tokenizer NAME  bert | trained (default ${text_tokenizer})
  --bert-vocab PATH      BERT vocab.txt / tokenizer dir (required with --text-tokenizer bert)
  --image-card FILE      image VQ card (default ${image_card})
  --preset NAME          base | paper | demo | tiny (default ${preset})
  --max-steps N          override the preset's training steps
  --bt-manifests "A B"   partial-data manifests to back-translate (default: none, stages 5-6 skipped)
  --vocoder-config NAME  vocoder preset or YAML (default ${vocoder_config})
  --vocoder-ckpt F --vocoder-json F   import a fairseq unit HiFi-GAN instead of training one
  --eval-splits "S.."    splits to translate and score (default ${eval_splits})
  --beam-size N          beam width (default ${beam_size})
  --clip-dir DIR         local CLIP model for scoring generated images
Extra verb options (whitespace separated, no quoting): --speech-fit-args --text-fit-args
  --image-fit-args --tokenize-args --train-args --bt-args --vocoder-args --translate-args --score-args
Stages:
  0 prepare manifests          1 fit text/speech/image tokenizers   2 tokenize train/valid/test (sharded)
  3 joint vocabulary           4 train (six directions)             5 back-translate partial data
  6 train on real + synthetic  7 unit vocoder (train or import)     8 translate eval splits, 6 directions
  9 score                      10 print the metrics table
EOF
)
cmdline=$(printf '%q ' "$0" "$@")  # before parse_options.sh consumes the arguments
# shellcheck source=../_shared/parse_options.sh
. "${shared_dir}/parse_options.sh"
# shellcheck source=../_shared/stage_utils.sh
. "${shared_dir}/stage_utils.sh"
# shellcheck source=../_shared/parallel.sh
. "${shared_dir}/parallel.sh"

# prefer the checkout's virtual environment when `tmt` is not on PATH
if ! command -v tmt >/dev/null 2>&1 && [ -x "${repo_dir}/.venv/bin/tmt" ]; then
  PATH=${repo_dir}/.venv/bin:${PATH}
fi

mkdir -p "${out}"
out=$(cd "${out}" && pwd)
data=${out}/data
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
log "Recipe spokencoco: outputs under ${out}"

# decoding jobs: one per GPU, or --jobs on CPU
if [ "${ngpu}" -gt 0 ]; then decode_jobs=1; else decode_jobs=${jobs}; fi  # (back-translation, translation)

# `tmt train` on one device, or under torchrun on ${ngpu} GPUs
train_cmd=(tmt train)
if [ "${ngpu}" -gt 1 ]; then
  train_cmd=(torchrun --nproc-per-node "${ngpu}" "${torchrun_extra[@]}" -m tmt train)
fi

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

if stage_wanted 1; then
  # text: BERT's vocabulary by path (the paper's), or WordPiece trained on the captions
  case "${text_tokenizer}" in
    bert)
      if [ -z "${bert_vocab}" ]; then
        log "Stage 1 needs --bert-vocab PATH (bert-base-uncased vocab.txt), or --text-tokenizer trained"; exit 1
      fi
      text_cmd=(tmt tokenize text fit --card "${cards}/text-bert-vocab.yaml" --vocab "${bert_vocab}") ;;
    trained)
      text_cmd=(tmt tokenize text fit --card "${cards}/text-wordpiece-trained.yaml" --manifest "${data}/train.jsonl.gz") ;;
    *) log "unknown --text-tokenizer ${text_tokenizer} (bert|trained)"; exit 1 ;;
  esac

  # speech: HuBERT layer-6 (or MFCC) features + k-means, fitted here or imported from km.bin
  # (every option is checked before the first tokenizer is fitted)
  speech_set=()
  case "${speech_card}" in
    hubert)
      card=${cards}/speech-hubert-base-l6-km200.yaml
      if [ -z "${hubert_ckpt}" ]; then
        log "Stage 1 needs --hubert-ckpt PATH with --speech-card hubert (or use --speech-card mfcc)"; exit 1
      fi
      speech_set=(--set "hubert.weights=${hubert_ckpt}") ;;
    mfcc) card=${cards}/speech-mfcc-km200.yaml ;;
    *.yaml) card=${speech_card}
      [ -n "${hubert_ckpt}" ] && speech_set=(--set "hubert.weights=${hubert_ckpt}") ;;
    *) log "unknown --speech-card ${speech_card} (hubert|mfcc|<card>.yaml)"; exit 1 ;;
  esac
  if [ -n "${km_bin}" ] && [ "${trust_pickle}" != true ]; then
    log "--km-bin ${km_bin} is a pickle; pass --trust-pickle true if you trust the file"; exit 1
  fi

  log "Stage 1: text tokenizer (${text_tokenizer}) -> ${tok}/text"
  run_stage 1-text "${logs}/1-text.log" "${text_cmd[@]}" "${text_fit_extra[@]}" --out "${tok}/text"

  if [ -n "${km_bin}" ]; then
    log "Stage 1: import k-means ${km_bin} (${card}) -> ${tok}/speech"
    run_stage 1-speech "${logs}/1-speech.log" \
      tmt tokenize speech import-km --km "${km_bin}" --card "${card}" "${speech_set[@]}" \
        --out "${tok}/speech" --trust-pickle --overwrite
  else
    log "Stage 1: speech tokenizer (${card}) on ${data}/train.jsonl.gz -> ${tok}/speech"
    run_stage 1-speech "${logs}/1-speech.log" \
      tmt tokenize speech fit --card "${card}" "${speech_set[@]}" "${pickle_opt[@]}" \
        --manifest "${data}/train.jsonl.gz" "${speech_fit_extra[@]}" --out "${tok}/speech" --overwrite
  fi

  # images: tmt's VQ-VAE (resumes from ${tok}/image/checkpoints after a kill)
  log "Stage 1: image tokenizer (${image_card}) on ${data}/train.jsonl.gz -> ${tok}/image"
  run_stage 1-image "${logs}/1-image.log" \
    tmt tokenize image fit --card "${image_card}" --manifest "${data}/train.jsonl.gz" \
      "${image_fit_extra[@]}" --out "${tok}/image"
fi

if stage_wanted 2; then
  for split in ${splits}; do
    log "Stage 2: tokenize ${data}/${split}.jsonl.gz (${jobs} jobs) -> ${store}/${split}"
    run_sharded "2-tokenize-${split}" "${logs}/2-tokenize-${split}" "${jobs}" "${store}/${split}" \
      tmt tokenize all --text "${tok}/text" --speech "${tok}/speech" --image "${tok}/image" \
        --manifest "${data}/${split}.jsonl.gz" --store "${store}/${split}" "${tokenize_extra[@]}"
  done
fi

if stage_wanted 3; then
  log "Stage 3: joint vocabulary from ${tok}/{text,speech,image} -> ${data}/vocab.json"
  run_stage 3-vocab "${logs}/3-vocab.log" \
    tmt vocab build --text "${tok}/text" --speech "${tok}/speech" --image "${tok}/image" -o "${data}/vocab.json"
fi

steps_opt=(); [ -n "${max_steps}" ] && steps_opt=(--max-steps "${max_steps}")

if stage_wanted 4; then
  log "Stage 4: train six directions (${preset}, ${ngpu} GPU(s)): ${store}/train -> ${exp}/tmt"
  # --resume: a re-run after a kill continues from the last checkpoint (or starts fresh)
  run_stage 4-train "${logs}/4-train.log" \
    "${train_cmd[@]}" -o "${exp}/tmt" --preset "${preset}" --vocab "${data}/vocab.json" \
      --store "${store}/train" --valid-store "${store}/valid" --device "${device}" \
      "${steps_opt[@]}" "${train_extra[@]}" --resume
fi

bt_stores=()
for m in ${bt_manifests}; do
  name=$(basename "${m}"); name=${name%%.*}
  bt_stores+=("${store}/bt_${name}")
done

if stage_wanted 5; then
  if [ -z "${bt_manifests}" ]; then
    log "Stage 5: no --bt-manifests given; skipping back-translation"
  fi
  for m in ${bt_manifests}; do
    name=$(basename "${m}"); name=${name%%.*}
    # tokenize the partial rows with the same tokenizers first (sharded like stage 2),
    # then back-translate that store
    log "Stage 5: tokenize partial rows ${m} (${jobs} jobs) -> ${store}/partial_${name}"
    run_sharded "5-tokenize-${name}" "${logs}/5-tokenize-${name}" "${jobs}" "${store}/partial_${name}" \
      tmt tokenize all --text "${tok}/text" --speech "${tok}/speech" --image "${tok}/image" \
        --manifest "${m}" --store "${store}/partial_${name}" "${tokenize_extra[@]}"
    log "Stage 5: back-translate ${store}/partial_${name} with ${exp}/tmt (${decode_jobs} jobs) -> ${store}/bt_${name}"
    run_sharded "5-bt-${name}" "${logs}/5-bt-${name}" "${decode_jobs}" "${store}/bt_${name}" \
      tmt backtranslate -m "${exp}/tmt" --store "${store}/partial_${name}" -o "${store}/bt_${name}" \
        --real-store "${store}/train" --device "${device}" "${bt_extra[@]}"
  done
fi

if stage_wanted 6 && [ "${#bt_stores[@]}" -gt 0 ]; then
  bt_opts=()
  for s in "${bt_stores[@]}"; do bt_opts+=(--store "${s}=${bt_weight}"); done
  bt_steps_opt=(); [ -n "${bt_steps}" ] && bt_steps_opt=(--max-steps "${bt_steps}")
  log "Stage 6: train on real + synthetic (${bt_stores[*]}): ${exp}/tmt -> ${exp}/tmt_bt"
  run_stage 6-train-bt "${logs}/6-train-bt.log" \
    "${train_cmd[@]}" -o "${exp}/tmt_bt" --preset "${preset}" --vocab "${data}/vocab.json" \
      --init-from "${exp}/tmt" --store "${store}/train" "${bt_opts[@]}" --valid-store "${store}/valid" \
      --device "${device}" "${bt_steps_opt[@]}" "${train_extra[@]}" --resume
fi

if stage_wanted 7; then
  if [ -n "${vocoder_ckpt}" ]; then
    log "Stage 7: import fairseq vocoder ${vocoder_ckpt} + ${vocoder_json} (units of ${tok}/speech) -> ${exp}/vocoder"
    run_stage 7-vocoder "${logs}/7-vocoder.log" \
      tmt vocoder import-fairseq "${vocoder_ckpt}" "${vocoder_json}" --tokenizer "${tok}/speech" \
        "${pickle_opt[@]}" --out "${exp}/vocoder"
  else
    log "Stage 7: train unit vocoder (${vocoder_config}): ${store}/train + wavs -> ${exp}/vocoder"
    run_stage 7-vocoder "${logs}/7-vocoder.log" \
      tmt vocoder train --store "${store}/train" --manifest "${data}/train.jsonl.gz" \
        --valid-store "${store}/valid" --valid-manifest "${data}/valid.jsonl.gz" \
        --config "${vocoder_config}" --device "${device}" "${vocoder_extra[@]}" --out "${exp}/vocoder" --resume
  fi
fi

models="tmt"; [ "${#bt_stores[@]}" -gt 0 ] && models="tmt tmt_bt"
clip_opt=(); [ -n "${clip_dir}" ] && clip_opt=(--clip "${clip_dir}")

if stage_wanted 8; then
  for model in ${models}; do
    for split in ${eval_splits}; do
      for d in ${directions}; do
        src=${d%%:*}; tgt=${d##*:}
        dest=${out}/hyp/${model}/${split}/${src}-${tgt}
        log "Stage 8: translate ${split} ${src}->${tgt} with ${exp}/${model} -> ${dest}"
        # the shard outputs are merged by `tmt translate` itself once all are present
        run_sharded "8-${model}-${split}-${src}-${tgt}" "${logs}/8-${model}-${split}-${src}-${tgt}" "${decode_jobs}" - \
          tmt translate -m "${exp}/${model}" --manifest "${data}/${split}.jsonl.gz" --split "${split}" \
            --from "${src}" --to "${tgt}" --beam-size "${beam_size}" --vocoder "${exp}/vocoder" \
            --device "${device}" "${translate_extra[@]}" --output-dir "${dest}"
      done
    done
  done
fi

if stage_wanted 9; then
  for model in ${models}; do
    for split in ${eval_splits}; do
      log "Stage 9: score ${out}/hyp/${model}/${split}/* -> ${out}/scores/${model}/${split}"
      run_stage "9-score-${model}-${split}" "${logs}/9-score-${model}-${split}.log" \
        tmt score run "${out}/hyp/${model}/${split}/"* --manifest "${data}/${split}.jsonl.gz" \
          --ref-store "${store}/${split}" --vocoder "${exp}/vocoder" "${clip_opt[@]}" "${score_extra[@]}" \
          --out-dir "${out}/scores/${model}/${split}"
    done
  done
fi

if stage_wanted 10; then
  for split in ${eval_splits}; do
    if [ "${models}" = "tmt tmt_bt" ]; then
      log "Stage 10: ${split}: real-only (A) vs real+synthetic (B)"
      tmt score compare "${out}/scores/tmt/${split}" "${out}/scores/tmt_bt/${split}"
    else
      log "Stage 10: ${split}: ${out}/scores/tmt/${split}/report.md"
      cat "${out}/scores/tmt/${split}/report.md"
    fi
  done
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
