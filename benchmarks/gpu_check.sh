#!/bin/sh
# What issue 15 asks to measure "when a GPU is lent": none was lent to the work that wrote this, so
# nothing here has run on a GPU yet. On a machine with CUDA (make install TORCH_SPEC=... for a CUDA
# build), from the repository root:  sh benchmarks/gpu_check.sh
# It runs the CUDA tests (skipped on a CPU), then writes into benchmarks/results/:
#   train-cuda-*   images per second of `audit train`'s loop against a plain PyTorch loop (fp32, bf16)
#   cuda-*-mlp, cuda-*-conv  audit certify against its floor at K = 10, 100, 200 (issue 14)
#   preset-cifar100-cuda-*   epochs per minute of the cifar100 preset on 50,000 synthetic images, and
#                            the upper bound of a full table's time
set -e
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
$PY -m pytest -q -p no:cacheprovider tests/test_train_hardware.py -k "cuda or gpus"
$PY benchmarks/bench_train.py --device cuda --n 50000 --threads 8 --repeats 5 --name train-cuda-50000x3x32x32-conv-fp32
$PY benchmarks/bench_train.py --device cuda --n 50000 --threads 8 --repeats 5 --precision bf16 --name train-cuda-50000x3x32x32-conv-bf16
$PY benchmarks/bench_preset.py --device cuda --epochs 3 --name preset-cifar100-cuda-fp32
$PY benchmarks/bench_preset.py --device cuda --epochs 3 --precision bf16 --name preset-cifar100-cuda-bf16
# Issue 14 on the same GPU: the certify sweep (K = 10, 100, 200) and the CIFAR-shaped conv audit
$PY benchmarks/bench_certify.py --n 100000 --shape 784 --device cuda --threads 8 --repeats 11 --name cuda-100000x784-float32-mlp
$PY benchmarks/bench_certify.py --n 50000 --shape 3,32,32 --dtype uint8 --arch conv --device cuda --threads 8 --repeats 11 --name cuda-50000x3x32x32-conv
