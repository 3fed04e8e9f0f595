#!/usr/bin/env bash
# Install algan-edge on a Jetson (JetPack 5/6) keeping JetPack's GPU stack: OpenCV built with GStreamer
# (nvarguscamerasrc, nvv4l2decoder), TensorRT, pycuda and numpy from apt, onnxruntime-gpu from NVIDIA's Jetson wheel.
#
#   sudo deploy/jetson/install.sh [--prefix /opt/algan] [--user algan] [--ort-wheel FILE_OR_URL] [--no-systemd]
#                                 [--python /usr/bin/python3] [--no-apt] [--dry-run]
#
# What it does (see deploy/jetson/README.md):
#   1. apt-get install the JetPack Python packages (python3-numpy, python3-opencv, python3-libnvinfer, python3-pycuda)
#      unless they already import (--no-apt: skip, e.g. when JetPack's packages are installed another way);
#   2. python3 -m venv --system-site-packages PREFIX/venv   (the venv sees JetPack's cv2, tensorrt, pycuda, numpy);
#   3. pip install -r requirements.txt -c constraints.txt   (pure dependencies only; constraints forbid PyPI's
#      OpenCV, onnxruntime, tensorrt and torch);
#   4. pip install --no-deps FILE (onnxruntime-gpu wheel for this JetPack, when --ort-wheel is given);
#   5. pip install --no-deps .                               (the package itself, no dependency resolution);
#   6. checks that cv2 is JetPack's (GStreamer YES) and runs `algan-edge doctor`;
#   7. unless --no-systemd: user, /etc/algan/edge.yaml (if absent), the unit, docs under PREFIX/doc.
# Exit status: 0 done; 1 a step failed; 2 bad arguments.
set -euo pipefail

PREFIX=/opt/algan
SVC_USER=algan
ORT_WHEEL=""
SYSTEMD=1
PY=/usr/bin/python3
DRY=0
APT=1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$HERE/../.." && pwd)"

usage() { sed -n '5,6p' "$0" | sed 's/^# *//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --user) SVC_USER="${2:?--user needs a name}"; shift 2 ;;
    --ort-wheel) ORT_WHEEL="${2:?--ort-wheel needs a wheel file or URL}"; shift 2 ;;
    --python) PY="${2:?--python needs an interpreter}"; shift 2 ;;
    --no-systemd) SYSTEMD=0; shift ;;
    --dry-run) DRY=1; shift ;;
    --no-apt) APT=0; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument $1" >&2; usage ;;
  esac
done

run() { echo "+ $*"; if [ "$DRY" = 0 ]; then "$@"; fi; }
VENV="$PREFIX/venv"
PIP=("$VENV/bin/python" -m pip)

# 1. JetPack's Python packages (only what does not import yet)
missing=()
"$PY" -c 'import numpy' 2>/dev/null || missing+=(python3-numpy)
"$PY" -c 'import cv2' 2>/dev/null || missing+=(python3-opencv)
"$PY" -c 'import tensorrt' 2>/dev/null || missing+=(python3-libnvinfer)
"$PY" -c 'import pycuda.driver' 2>/dev/null || missing+=(python3-pycuda)
if [ ${#missing[@]} -gt 0 ] && [ "$APT" = 1 ]; then
  if command -v apt-get >/dev/null; then
    run apt-get install -y "${missing[@]}"
  else
    echo "install.sh: $PY lacks ${missing[*]} and there is no apt-get; install JetPack's packages first" >&2
    [ "$DRY" = 1 ] || exit 1
  fi
fi

# 2-5. the venv on top of JetPack's site-packages
run "$PY" -m venv --system-site-packages "$VENV"
run "${PIP[@]}" install -r "$HERE/requirements.txt" -c "$HERE/constraints.txt"
if [ -n "$ORT_WHEEL" ]; then
  run "${PIP[@]}" install --no-deps "$ORT_WHEEL"
fi
run "${PIP[@]}" install --no-deps "$SRC"

# 6. the venv must use JetPack's OpenCV and a GPU onnxruntime; the doctor prints what the daemon will use
if [ "$DRY" = 0 ]; then
  if "${PIP[@]}" show -q opencv-python-headless opencv-python 2>/dev/null; then
    echo "install.sh: a PyPI OpenCV is installed in $VENV and shadows JetPack's: ${PIP[*]} uninstall opencv-python-headless opencv-python" >&2
    exit 1
  fi
  for mod in numpy cv2; do
    if ! "$VENV/bin/python" -c "import $mod" 2>/dev/null; then
      echo "install.sh: $VENV cannot import $mod, which JetPack provides (apt-get install python3-numpy python3-opencv, or run without --no-apt)" >&2
      exit 1
    fi
  done
  "$VENV/bin/python" -c 'import onnxruntime' 2>/dev/null || \
    echo "install.sh: warning: no onnxruntime in $VENV; pass --ort-wheel with NVIDIA's onnxruntime-gpu wheel for this JetPack, or use runner.backend: tensorrt" >&2
  "$VENV/bin/algan-edge" doctor || true
fi

# 7. the service
if [ "$SYSTEMD" = 1 ]; then
  id -u "$SVC_USER" >/dev/null 2>&1 || run useradd --system --home-dir /var/lib/algan --shell /usr/sbin/nologin --groups video "$SVC_USER"
  run install -d -m 755 "$PREFIX/doc" /etc/algan
  run install -m 644 "$SRC/README.md" "$PREFIX/doc/README.md"
  run install -m 644 "$HERE/README.md" "$PREFIX/doc/JETSON.md"
  [ -e /etc/algan/edge.yaml ] || run install -m 644 "$SRC/deploy/edge.yaml" /etc/algan/edge.yaml
  run install -m 644 "$SRC/deploy/algan-edge.service" /etc/systemd/system/algan-edge.service
  run systemctl daemon-reload
  echo "next: build the engine on this device (sudo -u $SVC_USER $VENV/bin/algan-edge build-engine --fp16 MODEL_DIR),"
  echo "      edit /etc/algan/edge.yaml, check it (algan-edge doctor --config /etc/algan/edge.yaml), then"
  echo "      sudo systemctl enable --now algan-edge"
fi
