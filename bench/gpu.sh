#!/usr/bin/env bash
# danmaku pretrain on a GPU: BERT-base (Google's Chinese shape), seq 128, bf16, with MFU,
# against transformers.BertForPreTraining (torch, bf16 autocast) in the same run.
# Needs a CUDA machine with `pip install -e '.[gpu,test]'` (tensorflow[and-cuda], torch).
#   PEAK_TFLOPS=989 bash bench/gpu.sh [--gpu-batch 128] [--train-steps 20]
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3 KERAS_BACKEND=tensorflow
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python bench/pretrain.py --gpu --slices-mb 4 --train-steps 20 "$@"
