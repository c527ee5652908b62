#!/bin/bash
# Checks dirpv's Prometheus alerting rules (manifests/monitoring/dirpv-alerts.yaml) and runs
# their unit tests (dirpv-alerts_test.yaml) with promtool. When promtool is missing, installs
# Debian's prometheus package, which has it (root and the network, once).
#
# usage: promtool-test.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v promtool >/dev/null; then
  "$HACK_DIR/install-deps.sh" prometheus
fi

cd "$REPO_ROOT/manifests/monitoring"
log "$(promtool --version 2>&1 | head -n 1)"
log "promtool check rules dirpv-alerts.yaml"
promtool check rules dirpv-alerts.yaml
log "promtool test rules dirpv-alerts_test.yaml"
promtool test rules dirpv-alerts_test.yaml
