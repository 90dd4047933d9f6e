#!/usr/bin/env bash
# Builds the example weights if the mounted repository lacks them (fixed seed, nothing is
# downloaded), then runs Triton in explicit model-control mode: the control plane decides
# what is loaded. Auto-complete is off: it costs an extra Python stub process per load and
# our configs are complete.
# Several Tritons share the repository (docker-compose.yml): the lock on the directory lets one
# build while the others wait, then find the files there and keep them.
set -euo pipefail
if [[ -f /models/build_models.py ]]; then
    flock /models python3 /models/build_models.py --repository /models --quiet
fi
exec tritonserver \
    --model-repository=/models \
    --model-control-mode=explicit \
    --disable-auto-complete-config \
    --backend-directory=/opt/tritonserver/backends \
    "$@"
