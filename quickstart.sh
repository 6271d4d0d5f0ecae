#!/usr/bin/env bash
# Set up, then fine-tune -> index -> search -> evaluate on the bundled Debian dataset.
#   ./quickstart.sh          quick run (~12 min on 2 CPU cores after set-up): 50 training steps, texts cut at 64 tokens
#   ./quickstart.sh --full   full run: one epoch over all 55,858 training pairs, 256-token texts
set -euo pipefail
cd "$(dirname "$0")"
mode=quick
case "${1:-}" in
  "") ;;
  --full) mode=full ;;
  *) echo "usage: $0 [--full]" >&2; exit 2 ;;
esac
# The quick run evaluates a smaller dev sample (500 queries, 2,000 documents) before and after training.
if [ "$mode" = quick ]; then train_size=(--max-steps 50 --dev-corpus 2000); msl=64
else train_size=(--epochs 1); msl=256; fi

step() {  # step NAME COMMAND...: run and report wall time
  local name=$1 t0=$SECONDS; shift
  echo; echo "== $name: $*"
  "$@"
  echo "== $name took $((SECONDS - t0)) s"
}

step setup bash scripts/setup.sh
source .venv/bin/activate
step train embedtune train --output "models/debian-$mode" --max-seq-length "$msl" --inference-max-seq-length "$msl" \
  "${train_size[@]}" --overwrite
step index embedtune index build --model "models/debian-$mode" --name "debian-$mode" --overwrite
step search embedtune search "tiling window manager for X11" --index "debian-$mode" -k 3
step eval embedtune eval --model default --index "debian-$mode" --split test --max-seq-length "$msl" \
  --json-out "results/quickstart-$mode.json"
echo; echo "total: $SECONDS s (before = 'default', the bundled all-MiniLM-L6-v2; after = index:debian-$mode)"
