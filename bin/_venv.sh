# Sourced by bin/*: make .venv match requirements.lock exactly (first use, or after the lock changed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
LOCK="$ROOT/requirements.lock"
stamp="$VENV/.lock-sha256"
want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "daskweak: preparing $VENV from requirements.lock (first use or lock changed)…" >&2
  if [ ! -x "$VENV/bin/python" ] && ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian ships venv support separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV"; python3 -m venv "$VENV"
    else
      echo "daskweak: 'python3 -m venv' failed; install python3-venv (Debian) and retry" >&2; exit 1
    fi
  fi
  [ -x "$VENV/bin/uv" ] || "$VENV/bin/python" -m pip install -q --disable-pip-version-check uv
  "$VENV/bin/uv" pip sync -q --python "$VENV/bin/python" "$LOCK"
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps -e "$ROOT"
  echo "$want" > "$stamp"
fi
