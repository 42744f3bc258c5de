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

step "Train and register a model version (lineage, sealed manifest, reference sample)"
VERSION=$(python examples/sklearn_tabular/train.py --stack dev --register credit-risk | tee /dev/stderr | sed -n 's/^registered credit-risk version //p')
mlplat models list --stack dev

step "Promote to staging: gate on the held-out set, package, staging endpoint, integration tests"
mlplat models promote credit-risk "$VERSION" --to staging --stack dev

step "credit-risk is critical: an approver (not the author) approves, bound to the artifact and gate report"
mlplat approvals list --stack dev
MLPLAT_USER=risk-office@example.com mlplat models approve credit-risk "$VERSION" --stack dev --reason "validated on the holdout"

step "Promote to production (one production version per model and environment)"
mlplat models promote credit-risk "$VERSION" --to production --stack dev
mlplat models show credit-risk "$VERSION" --stack dev

step "Every decision is in the hash-chained audit log"
mlplat audit log --stack dev --model credit-risk --limit 10
mlplat audit verify --stack dev

step "Monitoring pass over captured traffic: drift per feature, quality with labels, cost, alerts"
mlplat monitor run --stack dev
mlplat monitor status --stack dev

step "Cost per prediction and per team, against the monthly budget"
mlplat cost report --stack dev --by team
mlplat cost report --stack dev --by version --period 7d --format csv

step "Feature store: register versioned definitions (the diff is shown first)"
python examples/features/make_data.py
mlplat features apply --stack dev --definitions examples/features/definitions.py --yes

step "Feature store: a point-in-time training set inside a tracked run (records the view versions it read)"
python examples/features/train.py --stack dev
mlplat features list --stack dev

step "Feature store: materialize the online store and check training/serving skew"
mlplat features materialize --stack dev --start 2024-03-01 --end 2024-03-31
mlplat features skew driver_stats --stack dev

step "Done. Next: mlplat ui --stack dev  (MLflow UI on http://127.0.0.1:5000)"
