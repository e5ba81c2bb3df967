# Shared set-up for the scripts: a venv in the checkout with the package built
# into it. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

# Creates the venv and installs maturin plus the runtime dependencies and the
# given extras, all read from pyproject.toml (the one list of them).
ensure_venv() {
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip >/dev/null
    mapfile -t reqs < <(python3 - "$@" <<'PYEOF'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("maturin>=1.5,<2")
for req in project["dependencies"]:
    print(req)
for extra in sys.argv[1:]:
    for req in project["optional-dependencies"][extra]:
        print(req)
PYEOF
)
    "$PY" -m pip install -q "${reqs[@]}"
}

build_package() {
    # Release build: benchmarks and thread tests need the real speed.
    VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" develop --release -q
}
