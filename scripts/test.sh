#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system services, Python
# packages, the Rust build, then cargo test and pytest (benchmarks run once,
# timing disabled, as a smoke test).
source "$(dirname "$0")/_env.sh"

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

ensure_venv test bench
build_package

# Lints first: they are quick and say exactly what to fix.
cargo fmt --all -- --check
"$VENV/bin/ruff" check python tests benches
cargo clippy --quiet --all-targets -- -D warnings

# Rust unit tests link libpython; point the loader at it.
LIBDIR="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYO3_PYTHON="$PY" cargo test --quiet

"$PY" -m pytest -q tests "$@"
"$PY" -m pytest -q benches --benchmark-disable
