#!/usr/bin/env bash
# Create the MediaPipe reference venv used only by the parity tests (tests/parity/mp_reference.py).
#   .venv-mediapipe/  : python3.11 venv with mediapipe==0.10.21 (+ its numpy 1.26, opencv-contrib)
#                       and ai-edge-litert (raw tflite interpreter), apart from the main venv.
#   .venv-mediapipe/wheels/mediapipe-0.10.21-*.whl : the wheel, kept for the converter test.
# Idempotent: does nothing when the venv already imports both. Exits non-zero with a clear
# message when it cannot be made (no python3.11, no registry access, ...).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HANDOS_MEDIAPIPE_VENV:-$REPO/.venv-mediapipe}"
MP_VERSION=0.10.21
PY="${HANDOS_MEDIAPIPE_PYTHON:-}"
fail() { echo "setup_mediapipe_venv: $*" >&2; exit 1; }

check() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import mediapipe, ai_edge_litert.interpreter
assert mediapipe.__version__ == "0.10.21", mediapipe.__version__
PY
}

if [ -x "$VENV/bin/python" ] && check && ls "$VENV"/wheels/mediapipe-$MP_VERSION-*.whl >/dev/null 2>&1; then
  echo "setup_mediapipe_venv: $VENV ready (mediapipe $MP_VERSION + ai-edge-litert)"
  exit 0
fi

if [ -z "$PY" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then PY="$c"; break; fi
  done
fi
[ -n "$PY" ] || fail "needs Python 3.11 (mediapipe $MP_VERSION wheels are cp311 here); set HANDOS_MEDIAPIPE_PYTHON"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV" || fail "could not create venv at $VENV"
mkdir -p "$VENV/wheels"
if ! ls "$VENV"/wheels/mediapipe-$MP_VERSION-*.whl >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip download -q --no-deps -d "$VENV/wheels" "mediapipe==$MP_VERSION" \
    || fail "pip download mediapipe==$MP_VERSION failed (no access to PyPI?)"
fi
"$VENV/bin/python" -m pip install -q "$VENV"/wheels/mediapipe-$MP_VERSION-*.whl ai-edge-litert \
  || fail "pip install mediapipe==$MP_VERSION ai-edge-litert failed"
check || fail "venv made but 'import mediapipe, ai_edge_litert' fails in $VENV"
echo "setup_mediapipe_venv: $VENV ready (mediapipe $MP_VERSION + ai-edge-litert)"
