#!/usr/bin/env bash
# Create the Label Studio server virtualenv (its pins clash with handos', so it lives apart).
# Idempotent: does nothing when the venv already holds the pinned version.
# Usage: .ci/setup_label_studio.sh [VENV_DIR]   (default: .venv-labelstudio at the repo root)
set -euo pipefail
VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${HANDOS_LABEL_STUDIO_VENV:-$ROOT/.venv-labelstudio}}"
PY="${PYTHON:-python3}"

if [ -x "$VENV/bin/label-studio" ] && "$VENV/bin/python" - "$VERSION" <<'PYEOF'
import sys
from importlib.metadata import version
sys.exit(0 if version("label-studio") == sys.argv[1] else 1)
PYEOF
then
  echo "label-studio $VERSION already installed in $VENV"
  exit 0
fi

echo "installing label-studio $VERSION into $VENV"
"$PY" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# pip's warnings about absent local mirror folders are noise here; real errors still stop the script
"$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -m pip install --quiet "label-studio==$VERSION" 2> >(grep -v "^WARNING: Location" >&2)
"$VENV/bin/python" -c "import label_studio" # importable (no server start: `label-studio --version` boots Django)
echo "label-studio $VERSION ready: $VENV/bin/label-studio"
