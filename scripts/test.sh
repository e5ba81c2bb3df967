#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system services, Python
# packages, the Rust build, then cargo test and pytest (benchmarks run once,
# timing disabled, as a smoke test).
source "$(dirname "$0")/_env.sh"

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# The TLS tests and bench make their certificates with the openssl CLI.
command -v openssl >/dev/null || need_apt+=(openssl)
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

# Packaging smoke (a few minutes): the manylinux_2_17 wheels for x86_64 and
# aarch64, cross-built with zig but without LTO (wheels.sh --fast; it adds
# the Rust target and pip-installs ziglang and auditwheel), checked by
# auditwheel and by reading their ELF files; the x86_64 one installed alone
# into fresh venvs (each of Python 3.10 and 3.11 found here), the aarch64
# one run on a Debian arm64 root under qemu (test-arm64.sh --smoke; it
# apt-installs qemu-user-static and mmdebstrap). The release build and the
# full checks: see "Building from source" in the README.
SMOKE_WHEELS="$ROOT/target/wheelhouse-smoke"
"$ROOT/scripts/wheels.sh" --fast --out "$SMOKE_WHEELS" x86_64 aarch64
EDGELESS_WHEELHOUSE="$SMOKE_WHEELS" "$PY" -m pytest -q tests/test_wheels.py
"$PY" -m pytest -q benches --benchmark-disable
