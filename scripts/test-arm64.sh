#!/usr/bin/env bash
# The aarch64 wheel on arm64, without an arm64 machine: a Debian arm64 root
# made with mmdebstrap (variant extract: packages unpacked, no maintainer
# scripts, so no binfmt needed; cached in .cache/arm64-root), its own
# python3 run by qemu-aarch64-static -L <root>, numpy's aarch64 wheel and
# ours installed with pip --target into .cache/arm64-site. Then
# tests/arm64_smoke.py (handles and both targets, ring buffer drain,
# render() and a scrape on loopback, the tracer, NodeReporter ->
# OrchestratorCollector -> CSV dataset) and, unless --smoke, a selection of
# the pytest suite under the same emulated python3.
#
#   scripts/test-arm64.sh [--smoke] [--wheel FILE] [pytest args...]
#
# Without --wheel: the newest wheelhouse/*_aarch64.whl, built first with
# scripts/wheels.sh if there is none. Extra arguments go to pytest (more
# test files, -k ...).
# Environment: ARM64_SUITE (Debian suite, bookworm), ARM64_MIRROR.
CALLER_PWD="$PWD"
source "$(dirname "$0")/_env.sh"

SMOKE=0
WHEEL=""
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1; shift ;;
        --wheel) WHEEL="$(cd "$CALLER_PWD" && realpath "$2")"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) PYTEST_ARGS+=("$1"); shift ;;
    esac
done
SUITE="${ARM64_SUITE:-bookworm}"
MIRROR="${ARM64_MIRROR:-http://deb.debian.org/debian}"
CACHE="$ROOT/.cache"
ARM_ROOT="$CACHE/arm64-root"
SITE="$CACHE/arm64-site"
# The test files that run under emulation: the event path, both targets,
# the tracer, shipping into a collector (Redis is the host's redis-server).
# The fuzz and CLI tests pass too but take minutes each under emulation:
# name them as arguments to run them.
SUITE_FILES=(
    tests/test_performance.py tests/test_processor.py tests/test_bad_input.py
    tests/test_threads.py tests/test_properties.py
    tests/test_prometheus.py tests/test_exposition_roundtrip.py
    tests/test_tracer.py tests/test_tracer_process.py
    tests/test_shipping.py tests/test_process_life.py
)

need_apt=()
command -v qemu-aarch64-static >/dev/null || need_apt+=(qemu-user-static)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    step "apt-get install ${need_apt[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

if [ -z "$WHEEL" ]; then
    WHEEL="$(ls -t "$ROOT"/wheelhouse/edgeless_telemetry-*_aarch64.whl 2>/dev/null | head -n1 || true)"
    if [ -z "$WHEEL" ]; then
        "$ROOT/scripts/wheels.sh" aarch64
        WHEEL="$(ls -t "$ROOT"/wheelhouse/edgeless_telemetry-*_aarch64.whl | head -n1)"
    fi
fi
[ -f "$WHEEL" ] || { echo "error: no wheel $WHEEL" >&2; exit 1; }
case "$WHEEL" in *_aarch64.whl) ;; *) echo "error: $WHEEL is not an aarch64 wheel" >&2; exit 1 ;; esac

# python3, and libstdc++ for numpy's wheel (the manylinux policy lets
# wheels expect it from the system).
ROOT_PACKAGES="python3,libstdc++6"
STAMP="$SUITE $MIRROR $ROOT_PACKAGES"
if [ "$(cat "$ARM_ROOT/.edgeless-root" 2>/dev/null)" != "$STAMP" ]; then
    step "making the Debian $SUITE arm64 root in $ARM_ROOT (mmdebstrap, variant extract; about 80 MB)"
    mkdir -p "$CACHE"
    rm -rf "$ARM_ROOT.tmp"
    mmdebstrap --variant=extract --architectures=arm64 --include="$ROOT_PACKAGES" \
        "$SUITE" "$ARM_ROOT.tmp" "$MIRROR"
    echo "$STAMP" >"$ARM_ROOT.tmp/.edgeless-root"
    rm -rf "$ARM_ROOT"
    mv "$ARM_ROOT.tmp" "$ARM_ROOT"
fi
# The root's python3 through qemu, as a script inside the root: with
# argv[0] set to it, sys.executable names it, so the tests' subprocesses
# (sys.executable -c ...) are emulated too, and sys.prefix is the root's.
PYA="$ARM_ROOT/usr/bin/python3-qemu"
REAL_PY="$(readlink -f "$ARM_ROOT/usr/bin/python3")"
cat >"$PYA" <<EOF
#!/bin/sh
exec qemu-aarch64-static -L "$ARM_ROOT" -0 "\$0" "$REAL_PY" "\$@"
EOF
chmod +x "$PYA"
read -r PYVER GLIBC < <("$PYA" -c 'import platform; print(platform.python_version(), platform.libc_ver()[1])')
[ -n "${GLIBC:-}" ] || { echo "error: the arm64 root's python3 does not run under qemu-aarch64-static (see above)" >&2; exit 1; }
step "arm64 root: Python $PYVER, glibc $GLIBC"

# pip of the host venv fetches for the root: aarch64 wheels only, for the
# root's Python and every manylinux level its glibc runs.
platforms=()
for ((minor = ${GLIBC#2.}; minor >= 17; minor--)); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
platforms+=(--platform manylinux2014_aarch64)
packages=("$WHEEL")
# pip evaluates dependency markers with the host's Python, not the root's:
# redis-py needs async-timeout below 3.11.3 (bookworm has 3.11.2).
[ "$(printf '%s\n' "$PYVER" 3.11.3 | sort -V | head -n1)" = 3.11.3 ] || packages+=("async-timeout>=4.0.3")
[ "$SMOKE" = 1 ] || packages+=("pytest>=7" "hypothesis>=6" "prometheus-client>=0.17" "pyyaml>=6")
step "pip install --target $SITE: $(basename "$WHEEL") and its dependencies for aarch64"
[ -x "$PY" ] || ensure_venv
rm -rf "$SITE"
"$PY" -m pip install -q --target "$SITE" --only-binary=:all: --implementation cp \
    --python-version "$PYVER" "${platforms[@]}" "${packages[@]}"

export PYTHONPATH="$SITE" PYTHONNOUSERSITE=1
step "smoke run under qemu-aarch64-static"
start=$SECONDS
"$PYA" tests/arm64_smoke.py --machine aarch64 --site "$SITE"
step "smoke passed in $((SECONDS - start)) s"
if [ "$SMOKE" = 0 ]; then
    step "pytest under qemu-aarch64-static: ${SUITE_FILES[*]}"
    start=$SECONDS
    "$PYA" -m pytest -q -p no:cacheprovider "${SUITE_FILES[@]}" "${PYTEST_ARGS[@]}"
    step "pytest passed in $((SECONDS - start)) s"
fi
