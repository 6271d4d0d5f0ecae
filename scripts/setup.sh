#!/usr/bin/env bash
# Create .venv and install embedtune with the CPU build of PyTorch, the test tools and the optional
# extras the tests cover (OpenVINO, TensorBoard, the service and its browser test, Ray, Qdrant). Idempotent: a second run with
# unchanged pyproject.toml/constraints.txt returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.embedtune-setup
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first, from the constraint, so nothing later can pull a CUDA build.
.venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt torch
.venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,openvino,tensorboard,serve,browser,ray,qdrant]"
echo "$want" > "$stamp"
