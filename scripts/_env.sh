# Shared set-up for the scripts: a venv in the checkout with the package built
# into it. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

# Creates the venv and installs maturin plus the runtime dependencies and the
# given extras, all read from pyproject.toml (the one list of them).
step() { printf '==> %s\n' "$*" >&2; }

ensure_venv() {
    if [ ! -x "$PY" ]; then
        if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "error: python3 must be CPython 3.10 or later (found: $(python3 --version 2>&1))" >&2
            exit 1
        fi
        step "creating the virtual environment $VENV"
        python3 -m venv "$VENV"
    fi
    step "installing Python packages into .venv (pip${*:+; extras: $*})"
    "$PY" -m pip install -q --upgrade pip >/dev/null
    # pyproject.toml is read with tomllib (3.11+), or tomli on 3.10.
    "$PY" -c 'import tomllib' 2>/dev/null || "$PY" -m pip install -q tomli
    mapfile -t reqs < <("$PY" - "$@" <<'PYEOF'
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
pyproject = tomllib.load(open("pyproject.toml", "rb"))
project = pyproject["project"]
for req in pyproject["build-system"]["requires"]:  # maturin
    print(req)
for req in project["dependencies"]:
    print(req)
for extra in sys.argv[1:]:
    for req in project["optional-dependencies"][extra]:
        print(req)
PYEOF
)
    if [ ${#reqs[@]} -eq 0 ]; then
        echo "error: could not read the dependencies from pyproject.toml (see above)" >&2
        exit 1
    fi
    "$PY" -m pip install -q "${reqs[@]}"
}

build_package() {
    # Release build: benchmarks and thread tests need the real speed. Cargo's
    # progress bar stays visible (a cold build takes a minute or two).
    step "building the Rust core (cargo, release; about 1-2 min when cold)"
    # PIP_QUIET: maturin pip-installs the runtime dependencies again, and pip
    # would print one "Ignoring ...: markers" line per test/bench extra.
    PIP_QUIET=1 VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" develop --release
    step "ready: the tools are in .venv/bin (e.g. .venv/bin/edgeless-telemetry --help)"
}
