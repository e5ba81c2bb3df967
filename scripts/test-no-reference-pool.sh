#!/usr/bin/env bash
# The tests on a build where a Python reference dropped by a thread that is
# not attached to Python aborts the process, instead of going to PyO3's
# deferred-decref pool (a mutex a fork() can leave locked in the child; see
# "Process life" in the README). An abort names the thread and the drop:
# "Cannot drop pointer into Python heap without the thread being attached".
#
#   scripts/test-no-reference-pool.sh [pytest arguments]   (default: tests)
#
# Builds with --cfg pyo3_disable_reference_pool (no LTO) in its own cargo
# target folders (target/no-reference-pool; the cfg must reach PyO3's own
# code, so the first build compiles every crate), runs the Rust unit tests,
# then pytest with that build first on the path. Not part of test.sh: two
# builds of everything; run it after touching what threads of ours hold.
source "$(dirname "$0")/_env.sh"

ensure_venv test
DIR="$ROOT/target/no-reference-pool"
export CARGO_TARGET_DIR="$DIR/cargo"
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--cfg pyo3_disable_reference_pool"
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16

step "Rust unit tests (--cfg pyo3_disable_reference_pool)"
LIBDIR="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYO3_PYTHON="$PY" cargo test --quiet

step "building the package (--cfg pyo3_disable_reference_pool, no LTO)"
rm -rf "$DIR/wheel" "$DIR/pkg"
"$VENV/bin/maturin" build --release --interpreter "$PY" --out "$DIR/wheel"
"$PY" -m zipfile -e "$DIR"/wheel/edgeless_telemetry-*.whl "$DIR/pkg"

step "pytest on that build"
[ $# -gt 0 ] || set -- tests
PYTHONPATH="$DIR/pkg${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -q -p no:cacheprovider "$@"
