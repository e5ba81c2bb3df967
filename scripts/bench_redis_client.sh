#!/usr/bin/env bash
# Our Redis writer beside redis-rs (the `redis` crate) on the same rendered
# ZADDs, into real redis-servers (one, and a three-master Cluster) started by
# the benchmark itself: rust/collector/client_bench.rs. Prints samples/s.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
[ -x "$PY" ] || ensure_venv
export PYO3_PYTHON="$PY"
LD_LIBRARY_PATH="$("$PYO3_PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
export LD_LIBRARY_PATH
# A release build without fat LTO: the code measured is the same, the build quicker.
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo test --release --lib collector::client_bench -- --ignored --nocapture --test-threads 1
