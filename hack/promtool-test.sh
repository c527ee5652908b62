#!/bin/bash
# Checks dirpv's Prometheus alerting rules (manifests/monitoring/dirpv-alerts.yaml) and runs
# their unit tests (dirpv-alerts_test.yaml) with promtool, and parses every query of the Grafana
# dashboard (dirpv-dashboard.json) with promtool too. When promtool or jq is missing, installs
# Debian's prometheus and jq packages (root and the network, once). The e2e case Prometheus runs
# the same queries against a real Prometheus scraping dirpv.
#
# usage: promtool-test.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v promtool >/dev/null || ! command -v jq >/dev/null; then
  "$HACK_DIR/install-deps.sh" prometheus jq
fi

cd "$REPO_ROOT/manifests/monitoring"
log "$(promtool --version 2>&1 | head -n 1)"
log "promtool check rules dirpv-alerts.yaml"
promtool check rules dirpv-alerts.yaml
log "promtool test rules dirpv-alerts_test.yaml"
promtool test rules dirpv-alerts_test.yaml

# promtool parses PromQL in rule files only: each dashboard query becomes a recording rule (JSON
# is YAML), with Grafana's variables replaced by values as Grafana would ($job: the job the alerts
# assume). A variable left over is a typo or a new variable this list lacks.
log "promtool check rules on the queries of dirpv-dashboard.json"
rules=$(mktemp --suffix=.yaml)
trap 'rm -f "$rules"' EXIT
# A collapsed row holds its panels: .panels[].panels[] too.
panels='.panels[] | (., .panels[]?) | select(.type != "row")'
jq "{groups: [{name: \"dirpv-dashboard\", rules: [$panels"' as $p | $p.targets[]
      | {record: "dashboard:panel\($p.id):\(.refId)",
         expr: (.expr | gsub("\\$__rate_interval"; "5m") | gsub("\\$job"; "dirpv"))}]}]}' \
  dirpv-dashboard.json >"$rules"
if left=$(jq -r '.groups[].rules[] | select(.expr | contains("$")) | "\(.record): \(.expr)"' "$rules") && [ -n "$left" ]; then
  echo "dirpv-dashboard.json: queries with a variable promtool-test.sh does not replace:" >&2
  echo "$left" >&2
  exit 1
fi
promtool check rules "$rules"
# Every panel has a description in docs/monitoring.md, under its title.
missing=$(jq -r "$panels | .title" dirpv-dashboard.json | while read -r title; do
  grep -qxF -- "- **$title**" <(grep -o '^- \*\*[^*]*\*\*' "$REPO_ROOT/docs/monitoring.md") || echo "$title"
done)
if [ -n "$missing" ]; then
  echo "docs/monitoring.md describes no panel titled:" >&2
  echo "$missing" >&2
  exit 1
fi
