#!/usr/bin/env bash
# The options every real-data recipe (flickr8k, spokencoco) shares, with their defaults,
# and `real_data_help`, their lines of --help. Sourced by recipes/<corpus>/run.sh after
# its corpus options and `out` are set, before parse_options.sh reads the command line
# (so each can be given as --name value).
# shellcheck disable=SC2034  # the options are read by the sourcing recipe and the stages
# shellcheck disable=SC2154  # cards, out and the corpus options are set by the sourcing recipe

stage=0                 # first stage to run
stop_stage=100          # last stage to run
jobs=4                  # parallel --shard k/N jobs for tokenization, back-translation, decoding
ngpu=1                  # GPUs for training and decoding: 0 = CPU; > 1 = torchrun (DDP) on this node
torchrun_args=          # extra torchrun options for multi-node, e.g. "--nnodes 2 --node-rank 0 --rdzv-endpoint host:29500"
manifest_dir=           # where stage 0 writes the raw manifests (default <out>/data), e.g. data_manifests/<corpus>
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

real_data_help() {
  cat <<EOF
Main options:
  --stage N              first stage (default ${stage})
  --stop-stage N         last stage (default ${stop_stage})
  --out DIR              output directory (default ${out})
  --manifest-dir DIR     raw manifests of stage 0 (default <out>/data; e.g. data_manifests/${recipe})
  --jobs N               parallel --shard k/N jobs (default ${jobs})
  --ngpu N               GPUs: 0 = CPU, >1 = torchrun DDP (default ${ngpu})
  --torchrun-args STR    extra torchrun options (multi-node)
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
}
