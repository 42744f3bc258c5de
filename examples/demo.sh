#!/usr/bin/env bash
# The golden path on the local provider, as far as it exists. Run by `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }

step "Validate every stack file"
mlplat stack validate --all

step "Check every stack against the policy pack (offline: Pulumi mocks, no cloud account)"
mlplat policy check --all

step "Preview the AWS team stack offline (the SageMaker program under Pulumi mocks)"
mlplat preview --stack fraud-prod --offline

step "Provision the dev stack (local provider)"
mlplat up --stack dev --yes

step "Train a tracked model (scikit-learn example)"
python examples/sklearn_tabular/train.py --stack dev

step "The runs of the stack"
mlplat runs list --stack dev --limit 5

step "Done. Next: mlplat ui --stack dev  (MLflow UI on http://127.0.0.1:5000)"
