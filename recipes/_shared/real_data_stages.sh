#!/usr/bin/env bash
# Stages 1-10 shared by the real-data recipes (flickr8k, spokencoco): everything after
# the corpus-specific stage 0. Sourced by recipes/<corpus>/run.sh once its options are
# parsed and `out`, `data`, `tok`, `store`, `logs`, `cards`, `train_cmd`, `decode_jobs`
# and the stage options are set; the variables it reads are documented in those scripts.
# shellcheck disable=SC2154  # every variable here is set by the sourcing recipe

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
  log "Stage 3: joint vocabulary from ${tok}/{text,speech,image} -> ${vocab_json}"
  run_stage 3-vocab "${logs}/3-vocab.log" \
    tmt vocab build --text "${tok}/text" --speech "${tok}/speech" --image "${tok}/image" -o "${vocab_json}"
fi

steps_opt=(); [ -n "${max_steps}" ] && steps_opt=(--max-steps "${max_steps}")

if stage_wanted 4; then
  log "Stage 4: train six directions (${preset}, ${ngpu} GPU(s)): ${store}/train -> ${exp}/tmt"
  # --resume: a re-run after a kill continues from the last checkpoint (or starts fresh)
  run_stage 4-train "${logs}/4-train.log" \
    "${train_cmd[@]}" -o "${exp}/tmt" --preset "${preset}" --vocab "${vocab_json}" \
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
    "${train_cmd[@]}" -o "${exp}/tmt_bt" --preset "${preset}" --vocab "${vocab_json}" \
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
