#!/usr/bin/env bash
# The main job on the embedded default model: set up, start the daemon, create smollm2:135m,
# answer one chat prompt, stop the daemon. Usage: scripts/demo.sh ["your question"]
# With OLLA_DEMO_UI=1 the daemon stays up after the answer, for the web chat page at the URL
# printed, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
olla=.venv/bin/olla
export OLLA_HOST=${OLLA_HOST:-127.0.0.1:11435}

log=$(mktemp -t olla-demo.XXXXXX)
"$olla" serve 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 150); do
    "$olla" list >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "olla serve failed to start:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.2
done

"$olla" create smollm2:135m -f modelfiles/smollm2.Modelfile
echo
"$olla" run smollm2:135m "${1:-Why is the sky blue? Answer in two sentences.}"

if [ "${OLLA_DEMO_UI:-0}" = 1 ]; then
    echo
    echo "Chat in a browser: http://$OLLA_HOST/ui/  (Ctrl-C stops olla)"
    wait "$pid"
fi
