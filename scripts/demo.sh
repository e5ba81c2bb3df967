#!/usr/bin/env bash
# The main job: a simulated node and an in-process orchestrator, no Redis.
source "$(dirname "$0")/_env.sh"
ensure_venv
build_package
exec "$VENV/bin/edgeless-telemetry" demo "$@"
