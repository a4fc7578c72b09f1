#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The scenes recipe: tri-modal translation on the embedded, procedurally drawn corpus.
#
# Every output lives under --out (default exp/scenes-<preset>); deleting that
# directory and re-running rebuilds everything. Each stage logs its inputs and
# outputs, calls one `tmt` verb, and touches <out>/.done/<stage> when it
# succeeds, so a re-run (after a kill, say) skips finished stages and resumes.
#
#   bash recipes/scenes/run.sh --preset quick            # `make demo`: ~30 min on 2 CPU cores
#   bash recipes/scenes/run.sh --preset full --device cuda
#   bash recipes/scenes/run.sh --preset mid --single-task true  # unified vs single models, ~2.5 h
#   bash recipes/scenes/run.sh --stage 4 --stop-stage 4  # only training
set -euo pipefail
cmdline=$(printf '%q ' "$0" "$@")

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shared_dir=${recipe_dir}/../_shared

# ---- options (each can be given as --name value) ----
stage=0              # first stage to run
stop_stage=100       # last stage to run
preset=quick         # quick (make demo, ~30 min on 2 cores) | mid (stages 0-11 with single-task
                     # baselines, ~2.5 h on 2 cores) | full (quality, without stages 5-6 and 11: ~3.3 h on
                     # 2 cores with AMX; 2-core AVX2 CPUs take far longer, stage 4's fixed 3000 steps alone
                     # an estimated ~4.5 h: the AMX/AVX2 ratio of the demo model, not measured for small)
out=                 # output directory (default exp/scenes-<preset>)
manifest_dir=        # where stage 0 writes the corpus and its raw manifests (default <out>/data/scenes)
jobs=2               # parallel worker processes for corpus synthesis and tokenization
device=auto          # auto | cpu | cuda (training and decoding)
num_scenes=          # override the preset's number of scenes
extra_scenes=        # override the preset's extra scenes (images + captions, speech per extra_speech: split train_extra)
extra_speech=        # override the preset's recordings per extra scene (its first N captions spoken; 0: none)
extra_weight=        # sampling weight of the train_extra store in stages 4 and 6 (train's is 1; default: the preset's)
train_steps=         # optimizer steps of the first training (quick, mid: a cap, the time budget ends it; full: 3000
                     # for its small model, 10000 for --model-preset demo)
bt_steps=            # cap on steps of training on real + synthetic
train_minutes=       # override the preset's training budget (minutes)
bt_minutes=          # override the preset's budget on real + synthetic (minutes)
vocoder_config=      # vocoder preset or YAML for stage 7 (default: the preset's, unit-world-exemplars)
image_card=          # image tokenizer card of stage 1 (default: the preset's; quick and mid image-vq-f8-512, full image-aligned-32tok)
speech_card=tokenizers/speech-mfcc-km1000.yaml  # speech tokenizer card of stage 1 (km200: the coarser units of sessions 1-12)
speech_pretrain_minutes=0  # >0: stage 1 first pretrains tmt's own HuBERT this long on the units of --speech-teacher-card,
                           # then fits --speech-card (a features: hubert card) on it (0: off)
speech_teacher_card=tokenizers/speech-mfcc-km1000.yaml  # the teacher units of --speech-pretrain-minutes
vocoder_minutes=     # override the preset's vocoder training budget (minutes)
vocoder_steps=       # cap on vocoder steps (with a generous --vocoder-minutes: a fit of exactly N steps)
vocoder_extra_rows=  # stage 7: also fit the vocoder on the first N spoken train_extra rows (default: the preset's; quick 2000)
vocoder_voices=true  # true: the vocoder is conditioned on the voice (tmt vocoder train --voices), speaking --voice
vq_minutes=          # override the preset's image tokenizer (VQ) budget (minutes)
image_refine_steps=0 # stage 2: analysis-by-synthesis steps per image (image-aligned cards; 0: the encoder's codes)
vq_steps=            # cap on VQ steps (with a generous --vq-minutes: a fit of exactly N steps)
judge_steps=         # stage 1: steps of the pixel caption judge fitted beside the image tokenizer, which
                     # --rerank-align reads (0: none; default: the preset's, full 1500, others 0)
test_limit=          # rows of each test split translated and scored (0: all; default: the preset's)
image_test_limit=    # the same for image targets (text->image, speech->image; default: the preset's: quick 0, others test_limit)
single_task=false    # also train the six single-direction baselines (stage 11)
single_minutes=      # optional wall-clock cap of each single-direction baseline (minutes; default: none)
single_steps=        # steps of each single-direction baseline (default: equal compute with stage 4's run)
single_directions="i2t i2s t2i s2i s2t t2s"  # which single-direction baselines stage 11 trains
image_decoding=      # image targets (default: the preset's): sampled (beam search gives blank images), the best of 32
                     # by the reverse score of self-reranking; full: the best of 64 guided samples at temperature
                     # 0.5, mostly by the pixel judge (--guidance S needs a model trained with null sources)
pivots="speech:text:image"  # stage 8 also translates SRC->TGT through VIA with the unified models, scored as a row of
                     # its own ("speech->image (via text)"): the model's caption of the speech draws the image
image_code_init=     # training: share of the image tokenizer's code features in the initial image-token rows (default: the preset's)
speech_code_init=    # training: the same for speech-unit rows, from the speech tokenizer's k-means centroids (default: the preset's)
null_source_prob=    # training: fraction of image-target examples with a null source (0.1 enables --guidance; default: the preset's, full 0.1, others 0)
no_repeat_ngram=4    # text targets: never repeat an n-gram of this size (0: off)
speech_no_repeat_ngram=8  # speech targets (0: off); 4 would rule out 60% of the training unit sequences themselves
beam_patience=2      # text and speech targets: a row's beam ends after patience x beam finished hypotheses (1: fairseq's rule)
voices=true          # speech targets carry a voice token (vocab.json lists the corpus' voices; tmt translate --voice)
finetune_directions=  # stage 12: fine-tune the unified model on each of these directions alone (e.g. "t2s s2i"; empty: off)
finetune_minutes=     # budget of each stage-12 fine-tuning (default: --bt-minutes)
per_direction_best=  # true: stages 8-9 also translate each direction with stage 4's best model for it (tmt_dir); default: --single-task's value
back_translation=true  # false: skip stages 5-6 and the tmt_bt model (e.g. for the one-run unified-vs-single comparison)
train_set=           # extra `tmt train --set` overrides of the unified model (stages 4 and 6), space-separated
direction_weights=   # the unified model's per-direction weights, "D=W ..." (e.g. "t2s=3 i2s=2"; default: the preset's; "uniform": all 1)
model_preset=        # architecture preset of every translation model (default: the preset's, quick and mid demo, full small)
average_last=0       # every translation model's model.pt is the mean of its last N checkpoints (0: the checkpoint best on valid)
judge_realisations=1  # stages 9, 11, 12: speech outputs are heard through this many noise realisations of the vocoder (the mean is reported)

# shellcheck disable=SC2034  # read by parse_options.sh
help_message=$(cat <<EOF
Usage: $0 [options]
  --stage N          first stage (default ${stage})
  --stop-stage N     last stage (default ${stop_stage})
  --preset NAME      quick | mid | full (default ${preset})
  --out DIR          output directory (default exp/scenes-<preset>)
  --manifest-dir DIR corpus + raw manifests of stage 0 (default <out>/data/scenes;
                     e.g. data_manifests/scenes-<preset> to share them between experiments)
  --jobs N           parallel processes (default ${jobs})
  --device DEV       auto | cpu | cuda (default ${device})
  --num-scenes N     override the preset's corpus size
  --extra-scenes N   extra scenes with images and captions (split train_extra; spoken per --extra-speech; joined
                     to the image tokenizer fit and to training; default: the preset's)
  --extra-speech N   also speak the first N captions of each extra scene, for the speech directions
                     (default: the preset's, quick and full 5, mid 0)
  --extra-weight W   sampling weight of train_extra in training (train: 1; default: the preset's,
                     quick 2, full 1)
  --train-steps N    override the preset's training steps
  --bt-steps N       override the preset's steps on real + synthetic data
  --train-minutes M  override the preset's training budget
  --bt-minutes M     override the preset's budget on real + synthetic data
  --vocoder-config C vocoder preset or YAML (unit-mel, unit-world, unit-world-exemplars, demo; default: the
                     preset's)
  --image-card Y     image tokenizer card of stage 1 (default: the preset's: quick and mid
                     tokenizers/image-vq-f8-512.yaml, full tokenizers/image-aligned-32tok.yaml, the
                     text-aligned 32-token card, fitted 6000 steps, which wants a C++ compiler)
  --speech-card Y    speech tokenizer card of stage 1 (default ${speech_card}: 1000 MFCC clusters, which a
                     vocoder voices far more clearly than 200; the old default: tokenizers/speech-mfcc-km200.yaml)
  --speech-pretrain-minutes M
                     >0: before the speech tokenizer, fit --speech-teacher-card (default ${speech_teacher_card}),
                     pretrain tmt's own HuBERT on its units for M minutes (tmt tokenize speech pretrain) and fit
                     --speech-card on that model, e.g. --speech-pretrain-minutes 30 --speech-card
                     tokenizers/speech-hubert-fbank-km1000.yaml (docs/results.md, session 23; default 0: off)
  --speech-teacher-card Y  the teacher card of --speech-pretrain-minutes
  --vocoder-minutes M override the preset's vocoder budget
  --vocoder-steps N  cap on vocoder steps (a fit of exactly N steps, given the minutes)
  --vocoder-extra-rows N  stage 7 also fits the vocoder on the first N spoken rows of train_extra (default: the
                     preset's, quick 2000, full and mid 0; needs --extra-speech > 0; docs/results.md, session 34)
  --vocoder-voices B true: condition the vocoder on the voice (default ${vocoder_voices}); translation then
                     vocodes speech targets in the model's voice, the judges' ceiling each row in its own
  --judge-steps N    stage 1 also fits a pixel caption judge beside the image tokenizer for N steps
                     (tmt tokenize image fit-judge), read by --rerank-align (default: the preset's; full
                     1500, quick and mid 0: none)
  --vq-minutes M     override the preset's image tokenizer budget
  --vq-steps N       cap on image tokenizer steps (a fit of exactly N steps, given the minutes)
  --image-refine-steps N  stage 2 encodes images with N analysis-by-synthesis steps each (image-aligned
                     cards: truer codes, ~30x the encoding time; default ${image_refine_steps})
  --test-limit N     translate and score the first N rows of each test split (0: all)
  --image-test-limit N  the same for image targets (default: the preset's; quick 0 = every row, since an
                     exact scene is rare at its scale and cheap to decode; mid and full --test-limit)
  --single-task B    true: also train single-direction baselines (default ${single_task})
  --single-steps N   steps of each single-direction baseline (default: the six together get the
                     compute of stage 4's unified run, steps x max_tokens; see stage 11)
  --single-minutes M also a wall-clock cap on each baseline (default: none; steps decide)
  --single-directions "D ..." baselines to train (default "${single_directions}")
  --image-decoding S decoding options for image targets (default: the preset's; quick and mid "--sample
                     --top-k 16 --seed 0 --rerank 32 --rerank-forward 0", full "--sample --top-k 16
                     --temperature 0.5 --seed 0 --rerank 64 --rerank-forward 0 --guidance 1.5 --rerank-align 10")
  --pivots "SRC:VIA:TGT ..."  stage 8 also translates these directions through the pivot modality with the
                     unified models (tmt, tmt_bt), scored as rows of their own next to the direct ones (default
                     "${pivots}": speech->image from the model's own caption; "": off; docs/results.md, session 38)
  --image-code-init W training: share (0-1) of the image tokenizer's code features in the initial
                     image-token embeddings of every fresh model (default: the preset's, quick 1.0, mid
                     and full 0: random rows)
  --speech-code-init W the same for the speech-unit embeddings, from the speech tokenizer's standardised
                     k-means centroids (default: the preset's, full 1.0, quick and mid 0)
  --null-source-prob P training: image-target examples with a null source, which --guidance needs (default:
                     the preset's; full 0.1, quick and mid 0)
  --no-repeat-ngram N text targets never repeat an N-gram (default ${no_repeat_ngram}; 0: off)
  --speech-no-repeat-ngram N  the same for speech targets (default ${speech_no_repeat_ngram}; 0: off)
  --beam-patience P  beam search ends a row after P x beam finished hypotheses (default ${beam_patience};
                     1: fairseq's rule, which ends rows too early when <eos> has mass early)
  --voices B         true: a voice token per speech target, from the manifests' voices (default ${voices})
  --finetune-directions "D ..." stage 12: fine-tune the unified model (exp/tmt_bt, else exp/tmt) on
                     each direction alone -> exp/tmt_ft_<dir>, translated and scored (default: off)
  --finetune-minutes M budget of each fine-tuning (default: --bt-minutes)
  --per-direction-best B true: stages 8-9 also score "tmt_dir", each direction translated by the
                     stage-4 checkpoint best for it (exp/tmt/best/<dir>; default: the value of
                     --single-task, since that pairing is what the baselines are compared with)
  --back-translation B false: skip back-translation (stages 5-6) and its model tmt_bt everywhere, e.g.
                     for the unified-vs-single comparison alone (default ${back_translation})
  --model-preset P   architecture of the unified model and the baselines (tiny|demo|small|base|paper;
                     default: the preset's, quick and mid demo, full small: d 256, 3+3 layers, ~6M parameters)
  --direction-weights "D=W ..." the unified model's direction weights (stages 4 and 6; unnamed directions 1,
                     then scaled to mean 1), or "uniform" (default: the preset's; full "t2s=3 i2s=2 i2t=0.5
                     s2t=0.5", quick and mid uniform)
  --average-last N   model.pt of every translation model (stages 4, 6, 11, 12) is the mean of its last N
                     checkpoints, 250 steps apart at demo size (default ${average_last}: the checkpoint best on valid)
  --judge-realisations N  stages 9, 11 and 12 voice speech outputs and their ceiling with N noise realisations of the
                     unit-world vocoder and reports the mean (default ${judge_realisations}; one realisation moves
                     text->speech WER by up to 6 points on 250 rows, docs/results.md session 30; N x the judge's time)
  --train-set "K=V ..." extra --set overrides for the unified model's trainings (stages 4 and 6), e.g.
                     "data.direction_weighting=fixed data.direction_weights.t2s=2.0 data.direction_weights.s2t=2.0"
Stages:
  0 prepare scenes corpus        1 fit text/speech/image tokenizers   2 tokenize every split
  3 joint vocabulary             4 train (six directions)             5 back-translate partial pools
  6 train on real + synthetic    7 unit vocoder                       8 translate test splits, 6 directions
  9 score                        10 report (table, chart, samples)    11 single-task baselines (optional)
  12 per-direction fine-tuning of the unified model (optional, --finetune-directions)
EOF
)
# shellcheck source=../_shared/parse_options.sh
. "${shared_dir}/parse_options.sh"
# shellcheck source=../_shared/stage_utils.sh
. "${shared_dir}/stage_utils.sh"
# shellcheck source=../_shared/parallel.sh
. "${shared_dir}/parallel.sh"

case "${preset}" in
  quick)
    # 2000 extra scenes, each caption spoken (~80 s to draw and synthesise), sampled twice as often as train:
    # without them every direction over-fits the 210 training scenes within minutes (docs/results.md, session 27);
    # with them, spoken, the image directions' valid CE falls 0.6 nats and speech->text WER halves, for 1.5 minutes
    # more (session 28). Image-token rows start from the codebook (image_code_init; session 27).
    : "${num_scenes:=300}"; : "${extra_scenes:=2000}"; : "${extra_speech:=5}"; : "${extra_weight:=2}"
    : "${image_code_init:=1.0}"; : "${speech_code_init:=0}"; : "${direction_weights:=uniform}"
    : "${image_card:=tokenizers/image-vq-f8-512.yaml}"
    : "${vq_steps:=20000}"; : "${vq_minutes:=3}"; km_sample=100000
    : "${train_steps:=100000}"; : "${bt_steps:=100000}"   # the time budgets below end training
    : "${train_minutes:=10}"; : "${bt_minutes:=3}"
    : "${vocoder_config:=unit-world-exemplars}"; : "${vocoder_minutes:=3}"
    # 2000 spoken extra rows beside train's 1050: ground-truth test units through the vocoder 41.5 -> 29.6% judge
    # WER (originals 21.4) for 70-160 s more WORLD analysis (docs/results.md, sessions 34-35)
    : "${vocoder_extra_rows:=2000}"
    : "${model_preset:=demo}"; beam=5; : "${test_limit:=40}"; eval_splits="test"
    # image targets: every test row (75), and the best of 32 samples by the reverse score alone: on 240 fresh
    # captions the forward score does not tell right scenes from wrong ones; against the best of 4 by both scores,
    # text->image 0.73 -> 2.08% exact per row, speech->image 0.29 -> 1.46 (docs/results.md, session 36)
    : "${image_test_limit:=0}"; : "${image_decoding:=--sample --top-k 16 --seed 0 --rerank 32 --rerank-forward 0}"
    ;;
  full)
    # every caption of the 10000 extra scenes spoken (stage 0: ~10 min instead of ~2; 5.7 GB of wavs), train_extra
    # sampled as often as train: at the same 10173 steps valid CE fell in all six directions and on test
    # text->speech went 37 -> 26% judge WER (28.9 over four noise realisations), image->speech 22 -> 26 BLEU-4,
    # speech->text 6.6 -> 2.5% WER, text->image 11 -> 15% exact scenes; image->text 51 -> 50, speech->image 9 -> 6
    # (docs/results.md, session 30)
    : "${num_scenes:=2000}"; : "${extra_scenes:=10000}"; : "${extra_speech:=5}"; : "${extra_weight:=1}"
    # the text-aligned card: as generation-friendly as image-vq-f8-512 on this pool (text->image exact scenes
    # within 3 of 150 either way at 3000 and 6000 steps; objects counted and placed right far more often,
    # colours less often), and its reconstructions parse to the exact scene for ~93% of test images against 69%
    # (docs/results.md, session 25)
    : "${image_card:=tokenizers/image-aligned-32tok.yaml}"
    # temperature 0.5: text->image 16.0% exact scenes on valid against 5.3 at 1.0 (0.3: 15.3; speech->image 3.3
    # against 2.0), the stage-4 model of this preset (docs/results.md, session 26); the best of 32 by the reverse
    # score alone: on 240 fresh captions text->image 2.55 -> 6.25% exact against the best of 4 by both scores,
    # speech->image 0.47 -> 0.83 (a 3230-step model of this preset; docs/results.md, session 37); plus twice the
    # card's own image-caption cosine (--rerank-align 2): on the 240 fresh captions text->image 6.2 -> 7.1 with
    # this model, 1.2 -> 2.5 and 5.4 -> 7.9 (guidance 1.5) with models on a 6000-step card (docs/results.md, session 39)
    # the rerank-align judge is a pixel judge (tmt tokenize image fit-judge: a small CNN fitted on the card's
    # reconstructions in batches of captions one word apart, 1500 steps ~26 min on 2 cores), and the model is
    # trained with 10% null sources and decoded with guidance 1.5: on the 240 fresh captions text->image 7.1 ->
    # 14.6 against the card's own cosine without guidance (docs/results.md, session 40); the best of 64 with the
    # judge weighted 10 (the reverse score little more than a tie-break): on the 240 fresh captions, with the
    # 6000-step card, text->image 20.0 -> 25.4, speech->image 5.8 -> 7.9 against the best of 32 with A = 2 (guidance
    # 3 and temperature 0.7 no better; docs/results.md, session 41)
    : "${image_decoding:=--sample --top-k 16 --temperature 0.5 --seed 0 --rerank 64 --rerank-forward 0 --guidance 1.5 --rerank-align 10}"
    : "${judge_steps:=1500}"; : "${null_source_prob:=0.1}"
    # random image-token rows: the code initialisation lowers the image CE (4.48 against 4.86 at 10000 steps) but
    # drew fewer exact valid scenes at this preset's length (12.0 against 16.0; docs/results.md, session 27)
    : "${image_code_init:=0}"
    # speech targets weighted up (text->speech and image->speech together: 1/3 -> 5/8 of the rows) and the
    # speech-unit rows from the k-means centroids: at the same 10173 steps valid CE text->speech 1.53 -> 1.19,
    # image->speech 1.56 -> 1.37; on test text->speech 66 -> 37% judge WER, image->speech 15 -> 22 BLEU-4,
    # speech->text 2.6 -> 6.6% WER (docs/results.md, session 29)
    : "${speech_code_init:=1.0}"; : "${direction_weights:=t2s=3 i2s=2 i2t=0.5 s2t=0.5}"
    # the card fitted for exactly 6000 steps (the minutes only a cap), whatever the machine: 34 min on a 2-core
    # AVX2 CPU, ~17 on one with AMX. With the pixel judge and guidance, test text->image 15.2 -> 18.4% exact,
    # speech->image 5.6 -> 8.4 against the 2959 steps a 20-minute budget gave on the AVX2 CPU; reconstructions
    # exact 34 -> 82% (docs/results.md, sessions 39-40)
    : "${vq_steps:=6000}"; : "${vq_minutes:=45}"; km_sample=300000
    # the small model (d 256, 3+3 layers) for exactly 3000 steps (the minutes only a cap), whatever the machine:
    # ~90 minutes with AMX (the demo model's 10000 steps: 75). On test against demo (image targets: 5000 steps
    # on this card, session 42; the rest: 10173 steps, sessions 31 and 34): text->image 26.4 -> 34.4% exact,
    # speech->image 12.4 -> 30.0, text->speech 18.3 -> 14.9% judge WER, speech->text 3.4 -> 1.2% WER,
    # image->speech 23.8 -> 24.1 BLEU-4, image->text 50.2 -> 50.9; 2279 steps: 31.6, 25.6, 16.9, 2.0, 23.2,
    # 47.1 (docs/results.md, sessions 43-44). --model-preset demo trains its 10000 steps (~3.8 h on a 2-core
    # AVX2 CPU)
    : "${model_preset:=small}"
    if [ "${model_preset}" = small ]; then : "${train_steps:=3000}"; else : "${train_steps:=10000}"; fi
    : "${bt_steps:=100000}"
    : "${train_minutes:=300}"; : "${bt_minutes:=25}"
    : "${vocoder_config:=unit-world-exemplars}"; : "${vocoder_minutes:=20}"  # + ~15 min of WORLD analysis
    # the first 250 rows of each test split (50 scenes' captions; image sources: all 100 images)
    # keep stages 8-10 near half an hour on a machine with AMX
    beam=5; : "${test_limit:=250}"; eval_splits="test test_novel"
    ;;
  mid)
    # stages 0-11 with --single-task true in about 2.5 hours on 2 cores (measured, docs/results.md
    # "Session 7"): 1200 scenes (stages 0-3 ~10 min with a 6-min VQ fit), stage 4 35 min, stage 6 8,
    # vocoder 12, 150 test rows (stage 8 ~17 min; stage 9 ~25 min per model with the judges), stage
    # 11's six equal-compute baselines with their translating and scoring ~36 min
    : "${num_scenes:=1200}"; : "${extra_scenes:=0}"; : "${extra_speech:=0}"; : "${extra_weight:=0.5}"
    : "${image_code_init:=0}"; : "${speech_code_init:=0}"; : "${direction_weights:=uniform}"
    : "${image_card:=tokenizers/image-vq-f8-512.yaml}"
    : "${vq_steps:=20000}"; : "${vq_minutes:=6}"; km_sample=200000
    : "${train_steps:=100000}"; : "${bt_steps:=100000}"
    : "${train_minutes:=35}"; : "${bt_minutes:=8}"
    : "${vocoder_config:=unit-world-exemplars}"; : "${vocoder_minutes:=12}"
    : "${model_preset:=demo}"; beam=5; : "${test_limit:=150}"; eval_splits="test test_novel"
    ;;
  *) echo "unknown --preset ${preset} (quick|mid|full)" >&2; exit 1 ;;
esac
# mid: the quick demo's card and model size, trained longer; the reverse score alone picked the most exact scenes
# from 32 samples on the quick demo's model at 732 and 2200 steps (docs/results.md, session 36)
: "${image_decoding:=--sample --top-k 16 --seed 0 --rerank 32 --rerank-forward 0}"
: "${image_test_limit:=${test_limit}}"
: "${judge_steps:=0}"; : "${null_source_prob:=0}"
: "${vocoder_extra_rows:=0}"
: "${out:=exp/scenes-${preset}}"
mkdir -p "${out}"
out=$(cd "${out}" && pwd)
data=${out}/data/scenes
if [ -n "${manifest_dir}" ]; then mkdir -p "${manifest_dir}"; data=$(cd "${manifest_dir}" && pwd); fi
tok=${out}/tokenizers
store=${out}/data/store
logs=${out}/logs
splits="train valid test test_novel images_only speech_text_only"
extra_store_opt=()
if [ "${extra_scenes}" -gt 0 ]; then
  splits+=" train_extra"; extra_store_opt=(--store "${store}/train_extra=${extra_weight}")
fi
directions="image:text image:speech text:image speech:image speech:text text:speech"
for p in ${pivots}; do  # three different modalities each, checked before any stage runs
  IFS=: read -r a b c extra <<< "${p}"
  if [ -n "${extra}" ] || [ "$(printf '%s\n' "${a}" "${b}" "${c}" | sort | tr '\n' ' ')" != "image speech text " ]; then
    echo "--pivots: '${p}' is not SRC:VIA:TGT over the three modalities (text, speech, image), e.g. speech:text:image" >&2
    exit 1
  fi
done
eval_models="tmt"; [ "${back_translation}" = true ] && eval_models+=" tmt_bt"
: "${per_direction_best:=${single_task}}"  # measured: best-per-direction beats model.pt (docs/results.md, sessions 19-21)
[ "${per_direction_best}" = true ] && eval_models+=" tmt_dir"
# --direction-weights "D=W ..." (fixed weights) and --train-set "K=V ...": one --set per pair, for stages 4 and 6
train_set_kvs=()
if [ "${direction_weights}" != uniform ]; then
  read -r -a weight_kvs <<< "${direction_weights}"
  [ "${#weight_kvs[@]}" -gt 0 ] && train_set_kvs=(data.direction_weighting=fixed "${weight_kvs[@]/#/data.direction_weights.}")
fi
read -r -a more_kvs <<< "${train_set}"
# --average-last N: every translation model's model.pt is the mean of its last N checkpoints (keep_last >= N)
avg_opt=(--set average_last="${average_last}" --set keep_last="$(( average_last > 3 ? average_last : 3 ))")
train_set_opt=()
for kv in "${train_set_kvs[@]}" "${more_kvs[@]}"; do train_set_opt+=(--set "${kv}"); done

# keep the command line, so the experiment can re-run itself
echo "${cmdline}" >> "${out}/command.txt"
log "Recipe scenes, preset ${preset}: outputs under ${out}"

# score_group STAGE NAME SPLIT: every hypotheses dir of hyp/NAME/SPLIT -> scores/NAME/SPLIT (no ceiling);
# the marker names the directions scored, so a later run that adds one scores them again
score_group() {
  local stage_no=$1 name=$2 split=$3 scored="" h
  for h in "${out}/hyp/${name}/${split}/"*; do [ -d "${h}" ] && scored+="+${h##*/}"; done
  log "Stage ${stage_no}: score ${out}/hyp/${name}/${split}/* -> ${out}/scores/${name}/${split}"
  run_stage "${stage_no}-score-${name}-${split}${scored}" "${logs}/${stage_no}-score-${name}-${split}.log" \
    tmt score run "${out}/hyp/${name}/${split}/"* --manifest "${data}/${split}.jsonl.gz" --no-ceiling \
      --vocoder "${out}/exp/vocoder" --ref-store "${store}/${split}" --realisations "${judge_realisations}" \
      --out-dir "${out}/scores/${name}/${split}"
}

# translate_split STAGE NAME MODEL_DIR SPLIT SRC TGT [VIA]: one direction of one split -> hyp/NAME/SPLIT/SRC-TGT,
# or through the pivot VIA (tmt translate --via) -> hyp/NAME/SPLIT/SRC-TGT-via-VIA
translate_split() {
  local stage_no=$1 name=$2 model_dir=$3 split=$4 src=$5 tgt=$6 via=${7:-}
  local dest=${out}/hyp/${name}/${split}/${src}-${tgt}${via:+-via-${via}} via_opt=()
  [ -n "${via}" ] && via_opt=(--via "${via}")
  local limit_opt=() vocoder_opt=() decode_opt=(--beam "${beam}" --set no_repeat_ngram_size="${no_repeat_ngram}"
    --set speech_no_repeat_ngram_size="${speech_no_repeat_ngram}" --set beam_patience="${beam_patience}")
  local limit=${test_limit}
  [ "${tgt}" = image ] && limit=${image_test_limit}
  [ "${limit}" -gt 0 ] && limit_opt=(--limit "${limit}")
  [ "${tgt}" = speech ] && vocoder_opt=(--vocoder "${out}/exp/vocoder")
  # VQ image codes are many equally likely layouts: the single most likely one (beam search)
  # is a blank background, so image targets are sampled (as DALL-E style decoders do).
  # Text and speech use beam search with n-gram blocking, which stops an undertrained model's
  # unit loops (quick demo: text->speech outputs of 240 units for 93-unit references).
  # Image sources are translated once per image (tmt translate's default), not once per caption.
  # shellcheck disable=SC2206  # word splitting of the option string is intended
  [ "${tgt}" = image ] && decode_opt=(${image_decoding})
  # reranking reads the reverse direction (image->text), which a model trained on one direction lacks
  # (tmt translate refuses it): the single-direction baselines and fine-tunings decode without it
  if [ "${tgt}" = image ] && { [ "${name}" = single ] || [ "${name}" = ft ]; }; then
    local o keep=() skip=0
    for o in "${decode_opt[@]}"; do
      if [ "${skip}" = 1 ]; then skip=0; continue; fi
      case "${o}" in --rerank|--rerank-forward|--rerank-align) skip=1; continue ;; esac
      keep+=("${o}")
    done
    decode_opt=("${keep[@]}")
  fi
  log "Stage ${stage_no}: translate ${split} ${src}->${tgt}${via:+ via ${via}} with ${model_dir} -> ${dest}"
  local tag=${stage_no}-${name}-${split}-${src}-${tgt}${via:+-via-${via}}
  # --jobs shards, each on its share of the cores; the last shard to finish merges the outputs
  run_sharded "${tag}" "${logs}/${tag}" "${jobs}" - \
    tmt translate -m "${model_dir}" --manifest "${data}/${split}.jsonl.gz" --split "${split}" \
      --from "${src}" --to "${tgt}" "${via_opt[@]}" "${decode_opt[@]}" "${vocoder_opt[@]}" --device "${device}" \
      "${limit_opt[@]}" --output-dir "${dest}"
}

# report_table TITLE FILE: a report.md section with FILE's table, when FILE exists
report_table() {
  [ -f "$2" ] || return 0
  printf '\n%s\n\n```\n' "$1"
  cat "$2"
  echo '```'
}

if stage_wanted 0; then
  log "Stage 0: prepare scenes: ${num_scenes} scenes + ${extra_scenes} extra (${extra_speech} recordings each) -> ${data}/{images,speech,*.jsonl.gz}"
  run_stage 0-prepare "${logs}/0-prepare.log" \
    tmt prepare scenes --num-scenes "${num_scenes}" --extra-scenes "${extra_scenes}" --extra-speech "${extra_speech}" \
      --jobs "${jobs}" --out "${data}"
fi

if stage_wanted 1; then
  log "Stage 1: fit tokenizers on ${data}/train.jsonl.gz -> ${tok}/{text,speech,image}"
  run_stage 1-text "${logs}/1-text.log" \
    tmt tokenize text fit --card tokenizers/text-wordpiece-trained.yaml --manifest "${data}/train.jsonl.gz" --out "${tok}/text"
  speech_weights=()
  if [ "${speech_pretrain_minutes}" != 0 ]; then
    # tmt's own HuBERT iteration: teacher units -> masked-prediction pretraining -> the card's k-means on its layer
    run_stage 1-speech-teacher "${logs}/1-speech-teacher.log" \
      tmt tokenize speech fit --card "${speech_teacher_card}" --manifest "${data}/train.jsonl.gz" \
        --set sample_size="${km_sample}" --out "${tok}/speech-teacher"
    run_stage 1-speech-pretrain "${logs}/1-speech-pretrain.log" \
      tmt tokenize speech pretrain --teacher "${tok}/speech-teacher" --manifest "${data}/train.jsonl.gz" \
        --set train.max_minutes="${speech_pretrain_minutes}" --out "${tok}/speech-ssl" --resume
    speech_weights=(--set hubert.weights="${tok}/speech-ssl/model.safetensors")
  fi
  run_stage 1-speech "${logs}/1-speech.log" \
    tmt tokenize speech fit --card "${speech_card}" --manifest "${data}/train.jsonl.gz" \
      --set sample_size="${km_sample}" "${speech_weights[@]}" --out "${tok}/speech"
  # the image tokenizer fits on train's images and the extra scenes' (one manifest beside the media)
  image_fit=(--manifest "${data}/train.jsonl.gz")
  if [ "${extra_scenes}" -gt 0 ]; then
    run_stage 1-image-manifest "${logs}/1-image-manifest.log" \
      tmt manifest combine "${data}/train.jsonl.gz" "${data}/train_extra.jsonl.gz" -o "${data}/train_and_extra.jsonl.gz"
    image_fit=(--manifest "${data}/train_and_extra.jsonl.gz" --split all)
  fi
  run_stage 1-image "${logs}/1-image.log" \
    tmt tokenize image fit --card "${image_card}" "${image_fit[@]}" \
      --set train.steps="${vq_steps}" --set train.max_minutes="${vq_minutes}" --out "${tok}/image"
  if [ "${judge_steps}" -gt 0 ]; then
    # saved into the tokenizer's directory without changing it (stores and models stay valid)
    run_stage 1-image-judge "${logs}/1-image-judge.log" \
      tmt tokenize image fit-judge --tokenizer "${tok}/image" "${image_fit[@]}" --set train.steps="${judge_steps}"
  fi
fi

if stage_wanted 2; then
  for split in ${splits}; do
    log "Stage 2: tokenize ${data}/${split}.jsonl.gz -> ${store}/${split}"
    run_sharded "2-tokenize-${split}" "${logs}/2-tokenize-${split}" "${jobs}" "${store}/${split}" \
      tmt tokenize all --text "${tok}/text" --speech "${tok}/speech" --image "${tok}/image" \
        --image-refine-steps "${image_refine_steps}" --manifest "${data}/${split}.jsonl.gz" --store "${store}/${split}"
  done
fi

if stage_wanted 3; then
  log "Stage 3: joint vocabulary from ${tok}/* -> ${out}/data/vocab.json"
  voice_opt=()
  [ "${voices}" = true ] && voice_opt=(--voices-from "${data}/train.jsonl.gz")
  run_stage 3-vocab "${logs}/3-vocab.log" \
    tmt vocab build --text "${tok}/text" --speech "${tok}/speech" --image "${tok}/image" "${voice_opt[@]}" \
      -o "${out}/data/vocab.json"
fi

if stage_wanted 4; then
  log "Stage 4: train six directions (${model_preset}, ${train_steps} steps or ${train_minutes} min): ${store}/train -> ${out}/exp/tmt"
  run_stage 4-train "${logs}/4-train.log" \
    tmt train -o "${out}/exp/tmt" --preset "${model_preset}" --vocab "${out}/data/vocab.json" \
      --store "${store}/train" "${extra_store_opt[@]}" --valid-store "${store}/valid" --max-steps "${train_steps}" \
      --device "${device}" --set train.max_minutes="${train_minutes}" --set optim.schedule=inverse_sqrt \
      --set best_per_direction=true --set model.null_source_prob="${null_source_prob}" \
      --set image_code_init="${image_code_init}" --set speech_code_init="${speech_code_init}" \
      "${avg_opt[@]}" "${train_set_opt[@]}" --resume
fi

if stage_wanted 5 && [ "${back_translation}" = true ]; then
  for pool in images_only speech_text_only; do
    log "Stage 5: back-translate ${store}/${pool} with ${out}/exp/tmt -> ${store}/bt_${pool}"
    run_stage "5-bt-${pool}" "${logs}/5-bt-${pool}.log" \
      tmt backtranslate -m "${out}/exp/tmt" --store "${store}/${pool}" -o "${store}/bt_${pool}" --device "${device}"
  done
fi

if stage_wanted 6 && [ "${back_translation}" = true ]; then
  log "Stage 6: continue on real + synthetic (${bt_minutes} min): ${out}/exp/tmt -> ${out}/exp/tmt_bt"
  run_stage 6-train-bt "${logs}/6-train-bt.log" \
    tmt train -o "${out}/exp/tmt_bt" --preset "${model_preset}" --vocab "${out}/data/vocab.json" \
      --init-from "${out}/exp/tmt" --store "${store}/train" "${extra_store_opt[@]}" \
      --store "${store}/bt_images_only=0.5" --store "${store}/bt_speech_text_only=0.5" \
      --valid-store "${store}/valid" --max-steps "${bt_steps}" --device "${device}" \
      --set train.max_minutes="${bt_minutes}" --set optim.schedule=inverse_sqrt --set optim.warmup_steps=50 \
      --set model.null_source_prob="${null_source_prob}" "${avg_opt[@]}" "${train_set_opt[@]}" --resume
fi

if stage_wanted 7; then
  vocoder_rows=${store}/train
  vocoder_train_opt=(); [ -n "${vocoder_steps}" ] && vocoder_train_opt=(--set train.max_steps="${vocoder_steps}")
  [ "${vocoder_voices}" = true ] && vocoder_train_opt+=(--voices)
  # WORLD analysis (unit-world*) in --jobs processes
  case "${vocoder_config}" in unit-world*) vocoder_train_opt+=(--set world.workers="${jobs}") ;; esac
  if [ "${vocoder_extra_rows}" -gt 0 ]; then
    if [ "${extra_scenes}" -gt 0 ] && [ "${extra_speech}" -gt 0 ]; then
      vocoder_train_opt+=(--extra-store "${store}/train_extra" --extra-manifest "${data}/train_extra.jsonl.gz"
                          --extra-rows "${vocoder_extra_rows}")
      vocoder_rows="${store}/train + ${vocoder_extra_rows} rows of ${store}/train_extra"
    else
      log "note: --vocoder-extra-rows ${vocoder_extra_rows} not used: train_extra has no speech (--extra-scenes ${extra_scenes}, --extra-speech ${extra_speech})"
    fi
  fi
  log "Stage 7: unit vocoder (${vocoder_config}, ${vocoder_minutes} min): ${vocoder_rows} + wavs -> ${out}/exp/vocoder"
  run_stage 7-vocoder "${logs}/7-vocoder.log" \
    tmt vocoder train --store "${store}/train" --manifest "${data}/train.jsonl.gz" --config "${vocoder_config}" \
      --set train.max_minutes="${vocoder_minutes}" "${vocoder_train_opt[@]}" --out "${out}/exp/vocoder" --resume
fi

if stage_wanted 8; then
  for model in ${eval_models}; do
    for split in ${eval_splits}; do
      for d in ${directions}; do
        src=${d%%:*}; tgt=${d##*:}
        model_dir=${out}/exp/${model}
        # tmt_dir: the unified model's checkpoint that is best for this direction (stage 4 keeps them)
        [ "${model}" = tmt_dir ] && model_dir=${out}/exp/tmt/best/${src:0:1}2${tgt:0:1}
        translate_split 8 "${model}" "${model_dir}" "${split}" "${src}" "${tgt}"
      done
      # pivots need the model's other directions: the unified models, not the per-direction checkpoints
      [ "${model}" = tmt_dir ] && continue
      for p in ${pivots}; do
        IFS=: read -r src via tgt <<< "${p}"
        translate_split 8 "${model}" "${out}/exp/${model}" "${split}" "${src}" "${tgt}" "${via}"
      done
    done
  done
fi

if stage_wanted 9; then
  for model in ${eval_models}; do
    # the judges' ceiling (ground truth through the same judges) is the same for every model:
    # score it once, with the first model
    ceiling_opt=(); [ "${model}" = tmt ] || ceiling_opt=(--no-ceiling)
    for split in ${eval_splits}; do
      log "Stage 9: score ${out}/hyp/${model}/${split}/* -> ${out}/scores/${model}/${split}"
      run_stage "9-score-${model}-${split}" "${logs}/9-score-${model}-${split}.log" \
        tmt score run "${out}/hyp/${model}/${split}/"* --manifest "${data}/${split}.jsonl.gz" "${ceiling_opt[@]}" \
          --vocoder "${out}/exp/vocoder" --ref-store "${store}/${split}" --samples 8 --realisations "${judge_realisations}" \
          --out-dir "${out}/scores/${model}/${split}"
    done
  done
fi

if stage_wanted 10; then
  log "Stage 10: report: ${out}/scores/{${eval_models// /,}}/* -> ${out}/report.md"
  rm -f "${out}/.done/10-report"
  if [ "${back_translation}" = true ]; then
    heading="Six directions on the test split: before (A = tmt) and after back-translation (B = tmt_bt)"
    run_stage 10-report "${logs}/10-report.log" \
      tmt score compare --headline "${out}/scores/tmt/test" "${out}/scores/tmt_bt/test"
  else
    heading="Six directions on the test split (tmt; no back-translation in this run)"
    run_stage 10-report "${logs}/10-report.log" cat "${out}/scores/tmt/test/report.md"
  fi
  {
    echo "# scenes recipe, preset ${preset}"
    echo
    echo "Command: \`${cmdline}\`"
    echo
    echo "## ${heading}"
    echo
    echo '```'
    cat "${logs}/10-report.log"
    echo '```'
    echo
    if [ "${back_translation}" = true ]; then
      echo "Every metric:"
      echo
      echo '```'
      tmt score compare "${out}/scores/tmt/test" "${out}/scores/tmt_bt/test"
      echo '```'
      echo
    fi
    for model in ${eval_models}; do
      for split in ${eval_splits}; do
        echo "- ${model}, ${split}: [report](scores/${model}/${split}/report.md), ![chart](scores/${model}/${split}/scores.png)"
      done
    done
    echo
    echo "## Generated images (left: the reference, right: the output; green: the exact scene)"
    for model in ${eval_models}; do
      for split in ${eval_splits}; do
        for grid in "${out}/scores/${model}/${split}/"grid_*.png; do
          [ -f "${grid}" ] || continue
          g=${grid##*/grid_}
          echo
          echo "${model}, ${split}, ${g%.png}:"
          echo
          echo "![${model} ${split} ${g%.png}](scores/${model}/${split}/${grid##*/})"
        done
      done
    done
  } > "${out}/report.md"
  cat "${logs}/10-report.log"
fi

# last_step EXP: the step of EXP's latest complete checkpoint (empty when there is none)
last_step() {
  local c n=""
  for c in "$1"/checkpoints/step_*/trainer.pt; do [ -f "${c}" ] && n=${c%/trainer.pt} && n=${n##*/step_}; done
  [ -z "${n}" ] || echo $((10#${n}))
}

# config_value EXP SECTION KEY: KEY of SECTION in EXP/config.yaml (empty when absent)
config_value() {
  [ -f "$1/config.yaml" ] || return 0
  awk -v sec="$2:" -v key="$3:" '$0 == sec {in_sec = 1; next} /^[^ ]/ {in_sec = 0}
    in_sec && $1 == key {print $2; exit}' "$1/config.yaml"
}

if stage_wanted 11 && [ "${single_task}" = true ]; then
  # Equal compute (issue 20): a unified step puts each row's tokens (max_tokens positions per
  # batch, padding included) through the encoder once and through the decoder twice (every
  # modality is the target of two directions): 3 x max_tokens positions. A single-direction step
  # at the same max_tokens puts its rows through once (source: encoder, target: decoder). So the
  # six baselines together match the unified run's steps x 3 x max_tokens at 3 x steps / 6 each.
  unified_steps=$(last_step "${out}/exp/tmt")
  max_tokens=$(config_value "${out}/exp/tmt" data max_tokens)
  if [ -z "${single_steps}" ]; then
    if [ -z "${unified_steps}" ]; then
      log "Stage 11: no checkpoint in ${out}/exp/tmt (stage 4) to match its compute; run stage 4 or pass --single-steps N"
      exit 1
    fi
    single_steps=$(( (3 * unified_steps + 5) / 6 ))
  fi
  budget="${single_steps} steps each (unified: ${unified_steps:-?} steps of 3 x max_tokens ${max_tokens:-?} positions)"
  mkdir -p "${out}/exp"
  echo "single_steps=${single_steps} unified_steps=${unified_steps} max_tokens=${max_tokens}" \
    > "${out}/exp/single_budget.txt"
  limit_opts=(--max-steps "${single_steps}")
  [ -n "${max_tokens}" ] && limit_opts+=(--set data.max_tokens="${max_tokens}")
  [ -n "${single_minutes}" ] && limit_opts+=(--set train.max_minutes="${single_minutes}")
  for d in ${directions}; do
    src=${d%%:*}; tgt=${d##*:}; short=${src:0:1}2${tgt:0:1}
    case " ${single_directions} " in *" ${short} "*) ;; *) continue ;; esac
    log "Stage 11: single-direction baseline ${src}->${tgt} (${budget}) -> ${out}/exp/single_${short}"
    run_stage "11-single-${short}" "${logs}/11-single-${short}.log" \
      tmt train -o "${out}/exp/single_${short}" --preset "${model_preset}" --vocab "${out}/data/vocab.json" \
        --store "${store}/train" --valid-store "${store}/valid" "${limit_opts[@]}" \
        --set optim.schedule=inverse_sqrt \
        --set model.null_source_prob="${null_source_prob}" --set image_code_init="${image_code_init}" \
        --set speech_code_init="${speech_code_init}" "${avg_opt[@]}" --directions "${short}" --device "${device}" --resume
    for split in ${eval_splits}; do
      translate_split 11 single "${out}/exp/single_${short}" "${split}" "${src}" "${tgt}"
    done
  done
  for split in ${eval_splits}; do
    score_group 11 single "${split}"
    if [ ! -f "${out}/scores/tmt/${split}/scores.json" ]; then
      log "Stage 11: no unified scores in ${out}/scores/tmt/${split} (stages 8-9): not comparing"
      continue
    fi
    log "Stage 11: unified (A = tmt) against single-direction models (B = single), ${split}"
    tmt score compare --headline "${out}/scores/tmt/${split}" "${out}/scores/single/${split}" \
      > "${out}/scores/unified_vs_single_${split}.txt"
    cat "${out}/scores/unified_vs_single_${split}.txt"
    if [ -f "${out}/scores/tmt_dir/${split}/scores.json" ]; then
      # the fairer pairing: like each baseline, the unified model's checkpoint best for the direction
      log "Stage 11: unified, best checkpoint per direction (A = tmt_dir) against single-direction models, ${split}"
      tmt score compare --headline "${out}/scores/tmt_dir/${split}" "${out}/scores/single/${split}" \
        > "${out}/scores/unified_dir_vs_single_${split}.txt"
      cat "${out}/scores/unified_dir_vs_single_${split}.txt"
    fi
  done
  # one table: every direction, each split, unified against single, and which wins
  for model in tmt tmt_dir; do
    pairs=()
    for split in ${eval_splits}; do
      [ -f "${out}/scores/${model}/${split}/scores.json" ] && [ -f "${out}/scores/single/${split}/scores.json" ] \
        && pairs+=(--split "${split}" "${out}/scores/${model}/${split}" "${out}/scores/single/${split}")
    done
    [ ${#pairs[@]} -gt 0 ] || continue
    log "Stage 11: one table, ${model} against single -> ${out}/scores/${model}_vs_single.md"
    tmt score table --names "${model}" single "${pairs[@]}" > "${out}/scores/${model}_vs_single.md"
    cat "${out}/scores/${model}_vs_single.md"
  done
  # why a direction wins or loses: validation CE of both sides at equal compute points
  single_exps=()
  for e in "${out}"/exp/single_*; do [ -f "${e}/metrics.jsonl" ] && single_exps+=("${e}"); done
  if [ -n "${unified_steps}" ] && [ -f "${out}/exp/tmt/metrics.jsonl" ] && [ ${#single_exps[@]} -gt 0 ]; then
    ratio=$(awk -v u="${unified_steps}" -v s="${single_steps}" 'BEGIN {printf "%.4f", u / s}')
    log "Stage 11: validation curves at equal compute -> ${out}/scores/curves_vs_single.{md,png}"
    tmt score curves "${out}/exp/tmt" "${single_exps[@]}" --ratio "${ratio}" \
      --out "${out}/scores/curves_vs_single.md" --plot "${out}/scores/curves_vs_single.png"
  fi
  if [ -f "${out}/report.md" ] && ! grep -q "^## Unified model against" "${out}/report.md"; then
    {
      echo
      echo "## Unified model against single-direction models (A = tmt, B = single, ${budget})"
      report_table "All splits (equal compute):" "${out}/scores/tmt_vs_single.md"
      report_table "All splits, the unified model's best checkpoint per direction:" "${out}/scores/tmt_dir_vs_single.md"
      report_table "Validation curves at equal compute (scores/curves_vs_single.png):" "${out}/scores/curves_vs_single.md"
      for split in ${eval_splits}; do
        report_table "${split}:" "${out}/scores/unified_vs_single_${split}.txt"
        report_table "${split}, A = tmt_dir (the unified model's best checkpoint for each direction):" \
          "${out}/scores/unified_dir_vs_single_${split}.txt"
      done
    } >> "${out}/report.md"
  fi
fi

if stage_wanted 12 && [ -n "${finetune_directions}" ]; then
  : "${finetune_minutes:=${bt_minutes}}"
  base=${out}/exp/tmt_bt; [ -f "${base}/model.pt" ] || base=${out}/exp/tmt
  for d in ${directions}; do
    src=${d%%:*}; tgt=${d##*:}; short=${src:0:1}2${tgt:0:1}
    case " ${finetune_directions} " in *" ${short} "*) ;; *) continue ;; esac
    log "Stage 12: fine-tune ${base} on ${src}->${tgt} alone (${finetune_minutes} min) -> ${out}/exp/tmt_ft_${short}"
    # weights only (--init-from), fresh optimizer; --resume continues this fine-tuning after a kill
    run_stage "12-ft-${short}" "${logs}/12-ft-${short}.log" \
      tmt train -o "${out}/exp/tmt_ft_${short}" --preset "${model_preset}" --vocab "${out}/data/vocab.json" \
        --init-from "${base}" --store "${store}/train" --valid-store "${store}/valid" --max-steps "${bt_steps}" \
        --set train.max_minutes="${finetune_minutes}" --set optim.schedule=inverse_sqrt --set optim.warmup_steps=50 \
        "${avg_opt[@]}" --directions "${short}" --device "${device}" --resume
    for split in ${eval_splits}; do
      translate_split 12 ft "${out}/exp/tmt_ft_${short}" "${split}" "${src}" "${tgt}"
    done
  done
  for split in ${eval_splits}; do
    score_group 12 ft "${split}"
  done
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
