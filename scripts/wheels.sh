#!/usr/bin/env bash
# The release artefacts in one command: abi3 wheels for CPython 3.10 and
# later tagged manylinux2014 (manylinux_2_17) for x86_64 and aarch64, and
# the sdist, all into one folder (wheelhouse/ unless --out), then
# `auditwheel show` on each wheel. zig (maturin --zig, ziglang from PyPI)
# links against glibc 2.17's symbols, so neither a manylinux container nor
# an aarch64 machine is needed; the aarch64 Rust standard library comes
# from `rustup target add`.
#
#   scripts/wheels.sh [--out DIR] [--fast] [x86_64] [aarch64] [sdist]
#
# No kind named: all three. --fast: no LTO, 16 codegen units, its own cargo
# target folder (target/fast): for tests of the packaging, not for release
# (the hot path is slower and the wheel is not the one we measure).
CALLER_PWD="$PWD"
source "$(dirname "$0")/_env.sh"

OUT="$ROOT/wheelhouse"
FAST=0
KINDS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$(cd "$CALLER_PWD" && mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
        --fast) FAST=1; shift ;;
        x86_64|aarch64|sdist) KINDS+=("$1"); shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#KINDS[@]} -gt 0 ] || KINDS=(x86_64 aarch64 sdist)
# A wheel over this many bytes fails the release build (an edge node's
# download): the release wheels are 1.79-1.85 MB, dependencies built for
# size; see "Building from source" in the README for why not 1 MB.
MAX_WHEEL_BYTES=1900000

ensure_venv
step "installing the build tools into .venv (ziglang, auditwheel)"
"$PY" -m pip install -q "ziglang>=0.11" "auditwheel>=6"
# maturin runs zig as `python -m ziglang` of the python3 it finds first.
export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV"

targets=()
for kind in "${KINDS[@]}"; do
    [ "$kind" = sdist ] || targets+=("$kind-unknown-linux-gnu")
done
if [ ${#targets[@]} -gt 0 ]; then
    command -v rustup >/dev/null || { echo "error: rustup is needed to add the Rust targets ${targets[*]}" >&2; exit 1; }
    installed="$(rustup target list --installed)"
    for t in "${targets[@]}"; do
        grep -qx "$t" <<<"$installed" || { step "rustup target add $t"; rustup target add "$t"; }
    done
fi

if [ "$FAST" = 1 ]; then
    export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
    export CARGO_TARGET_DIR="$ROOT/target/fast"
fi

mkdir -p "$OUT"
built=()
for kind in "${KINDS[@]}"; do
    start=$SECONDS
    if [ "$kind" = sdist ]; then
        rm -f "$OUT"/edgeless_telemetry-*.tar.gz
        step "sdist"
        maturin sdist --out "$OUT"
        built+=("$(ls -t "$OUT"/edgeless_telemetry-*.tar.gz | head -n1)")
    else
        rm -f "$OUT"/edgeless_telemetry-*_"$kind".whl "$OUT"/edgeless_telemetry-*_"$kind".whl.fast-build
        step "wheel for $kind (maturin --zig, manylinux2014; $([ "$FAST" = 1 ] && echo "no LTO" || echo "fat LTO, minutes when cold"))"
        maturin build --release --strip --zig --compatibility manylinux2014 \
            --target "$kind-unknown-linux-gnu" --out "$OUT"
        wheel="$(ls -t "$OUT"/edgeless_telemetry-*_"$kind".whl | head -n1)"
        built+=("$wheel")
        step "auditwheel show $(basename "$wheel")"
        "$VENV/bin/auditwheel" show "$wheel" | tee "$OUT/.auditwheel-$kind.txt"
        tr -s ' \n' ' ' <"$OUT/.auditwheel-$kind.txt" | grep -q "consistent with the following platform tag: \"manylinux_2_17_$kind\"" \
            || { echo "error: $(basename "$wheel") is not manylinux_2_17_$kind (see above)" >&2; exit 1; }
        rm -f "$OUT/.auditwheel-$kind.txt"
        size=$(stat -c %s "$wheel")
        # Tells tests/test_wheels.py that this wheel is not a release build
        # (its size is not held to the limit).
        rm -f "$wheel.fast-build"
        [ "$FAST" = 1 ] && touch "$wheel.fast-build"
        if [ "$size" -gt "$MAX_WHEEL_BYTES" ]; then
            if [ "$FAST" = 1 ]; then
                echo "note: $(basename "$wheel") is $size bytes (over $MAX_WHEEL_BYTES; --fast builds are not release builds)" >&2
            else
                echo "error: $(basename "$wheel") is $size bytes, over $MAX_WHEEL_BYTES" >&2
                exit 1
            fi
        fi
    fi
    step "$kind done in $((SECONDS - start)) s"
done

step "artefacts in $OUT:"
for f in "${built[@]}"; do
    printf '%10d bytes  %s\n' "$(stat -c %s "$f")" "$(basename "$f")" >&2
done
