#!/usr/bin/env bash
# Create the Label Studio server virtualenv (its pins clash with handos', so it lives apart), and a
# migrated, empty database template the tests copy (migrating a fresh database takes minutes).
# Idempotent: does nothing when the venv already holds the pinned version and the template.
# Usage: .ci/setup_label_studio.sh [VENV_DIR]   (default: .venv-labelstudio at the repo root)
set -euo pipefail
VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${HANDOS_LABEL_STUDIO_VENV:-$ROOT/.venv-labelstudio}}"
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

installed() {
  [ -x "$VENV/bin/label-studio" ] && "$VENV/bin/python" - "$VERSION" <<'PYEOF'
import sys
from importlib.metadata import version
sys.exit(0 if version("label-studio") == sys.argv[1] else 1)
PYEOF
}

if installed; then
  echo "label-studio $VERSION already installed in $VENV"
else
  echo "installing label-studio $VERSION into $VENV"
  "$PY" -m venv "$VENV"
  # pip's warnings about absent local mirror folders are noise here; real errors still stop the script
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install --quiet "label-studio==$VERSION" 2> >(grep -v "^WARNING: Location" >&2)
  "$VENV/bin/python" -c "import label_studio"  # importable (no server start: `label-studio --version` boots Django)
fi

TEMPLATE="$VENV/handos-db-template"
if [ -f "$TEMPLATE/label_studio.sqlite3" ]; then
  echo "migrated database template present: $TEMPLATE"
  exit 0
fi
echo "migrating an empty database template (once; takes a few minutes on a slow machine)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LS_PKG="$("$VENV/bin/python" -c 'import label_studio, os; print(os.path.dirname(label_studio.__file__))')"
(
  cd "$LS_PKG"
  env -u HOST LABEL_STUDIO_BASE_DATA_DIR="$WORK" LATEST_VERSION_CHECK=false SENTRY_DSN= FRONTEND_SENTRY_DSN= \
    DJANGO_SETTINGS_MODULE=core.settings.label_studio "$VENV/bin/python" manage.py migrate --no-color -v 0 >"$WORK/migrate.log" 2>&1
) || { echo "label-studio database migration failed: $(tail -n 3 "$WORK/migrate.log")" >&2; exit 1; }
mkdir -p "$TEMPLATE"
cp "$WORK/label_studio.sqlite3" "$TEMPLATE/label_studio.sqlite3.tmp"
mv "$TEMPLATE/label_studio.sqlite3.tmp" "$TEMPLATE/label_studio.sqlite3"
echo "label-studio $VERSION ready: $VENV/bin/label-studio (template $TEMPLATE)"
