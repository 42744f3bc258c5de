#!/usr/bin/env bash
# The golden path on the local provider, as far as it exists. Run by `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }

step "Validate every stack file"
mlplat stack validate --all

step "Check every stack against the policy pack (offline: Pulumi mocks, no cloud account)"
mlplat policy check --all

step "Start a second team in one command: a stack file that validates and passes the policy pack, and a starter project"
TEAM_DIR=$(mktemp -d)
mlplat init --dir "$TEAM_DIR/churn" --team churn --env dev --provider local --owner churn-leads@example.com \
    --cost-center CC-2040 --risk-tier critical --approver risk-office@example.com --approver head-of-ds@example.com \
    --no-input
MLPLAT_PROJECT_DIR="$TEAM_DIR/churn" mlplat stack validate --stack churn-dev
MLPLAT_PROJECT_DIR="$TEAM_DIR/churn" mlplat policy check --stack churn-dev
rm -rf "$TEAM_DIR"

step "Preview the AWS team stack offline (the SageMaker program under Pulumi mocks)"
mlplat preview --stack fraud-prod --offline

step "Preview the GCP team stack offline (the Vertex AI program under Pulumi mocks)"
mlplat preview --stack search-staging --offline

step "Preview the Azure team stack offline (the Azure Machine Learning program under Pulumi mocks)"
mlplat preview --stack nlp-prod --offline

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

step "The staging package: build context and, where podman and buildah are installed, the OCI image it was tested in"
mlplat models show credit-risk "$VERSION" --stack dev --json | python -c 'import json, sys
d = json.load(sys.stdin)["promotions"][-1]["steps"]["package"]["detail"]
print("build context:", d["context_dir"])
print("image:", d.get("image") or "none (no container engine: the staging endpoint ran as a local process)")'

step "credit-risk is critical: an approver (not the author) approves, bound to the artifact and gate report"
mlplat approvals list --stack dev
MLPLAT_USER=risk-office@example.com mlplat models approve credit-risk "$VERSION" --stack dev --reason "validated on the holdout"

step "Promote to production (one production version per model and environment)"
mlplat models promote credit-risk "$VERSION" --to production --stack dev
mlplat models show credit-risk "$VERSION" --stack dev

step "Every decision is in the keyed, hash-chained audit log, with who decided and how their identity was established"
mlplat whoami --stack dev
mlplat audit log --stack dev --model credit-risk --limit 10
mlplat audit verify --stack dev
rm -f .mlplat/audit-archive.tar.gz
mlplat audit export --stack dev --out .mlplat/audit-archive.tar.gz
mlplat audit verify --stack dev --archive .mlplat/audit-archive.tar.gz

step "Serve: deploy the production version; one gateway on 127.0.0.1 serves every deployment of the environment"
mlplat deploy credit-risk "$VERSION" --stack dev
PORT_FILE=$(mktemp -u)
mlplat serve --stack dev --port 0 --port-file "$PORT_FILE" --no-monitor &
GATEWAY_PID=$!
trap 'kill "$GATEWAY_PID" 2>/dev/null || true' EXIT
until [ -s "$PORT_FILE" ]; do kill -0 "$GATEWAY_PID"; sleep 0.2; done
GATEWAY="http://127.0.0.1:$(cat "$PORT_FILE")"
echo "gateway: $GATEWAY"

step "Score the held-out set through the gateway (MLflow scoring protocol); keep request ids to join labels later"
python - "$GATEWAY" <<'PY'
import sys, httpx, pandas as pd
url = sys.argv[1]
holdout = pd.read_parquet("examples/sklearn_tabular/data/holdout.parquet").head(300)
features = [c for c in holdout.columns if c != "label"]
ids = []
with httpx.Client(base_url=url, timeout=10) as client:
    for record, label in zip(holdout[features].to_dict("records"), holdout["label"]):
        r = client.post("/endpoints/credit-risk/invocations", json={"dataframe_records": [record]})
        r.raise_for_status()
        ids.append((r.headers["x-request-id"], int(label)))
pd.DataFrame(ids, columns=["request_id", "label"]).to_csv(".mlplat/demo-labels.csv", index=False)
print(f"{len(ids)} predictions served; e.g. {r.json()}")
PY

step "Canary: a retrained version goes 50 % -> 100 %, each step judged on live traffic (errors, p95 latency, prediction shift)"
CANDIDATE=$(python examples/sklearn_tabular/train.py --stack dev --register credit-risk --n-estimators 80 | sed -n 's/^registered credit-risk version //p')
mlplat models promote credit-risk "$CANDIDATE" --to staging --stack dev
mlplat deploy credit-risk "$CANDIDATE" --stack dev --strategy canary --steps 50,100 --bake 3
python - "$GATEWAY" "$CANDIDATE" <<'PY'
import sys, time, httpx, pandas as pd
url = sys.argv[1]
# live-like traffic: rows of the held-out set in a seeded order (the canary judges prediction shift on it)
rows = pd.read_parquet("examples/sklearn_tabular/data/holdout.parquet").drop(columns="label")
records = rows.sample(frac=1.0, random_state=11).to_dict("records")
served, deadline, sent = {}, time.time() + 90, 0
with httpx.Client(base_url=url, timeout=10) as client:
    while time.time() < deadline:  # until the controller promotes (or rolls back) the candidate
        for _ in range(100):
            record, sent = records[sent % len(records)], sent + 1
            r = client.post("/endpoints/credit-risk/invocations", json={"dataframe_records": [record]})
            key = f"HTTP {r.status_code} from v{r.headers.get('x-mlplat-version')}"
            served[key] = served.get(key, 0) + 1
        endpoint = client.get("/endpoints/credit-risk").json()
        if endpoint["strategy"] == "direct":
            break
print("responses:", served)
# the controller's verdict rests on live latency too, so on a loaded machine it may roll the candidate back itself
outcome = ("running" if endpoint["strategy"] != "direct" else
           "promoted" if endpoint["stable_version"] == int(sys.argv[2]) else "rolled_back")
open(".mlplat/canary-outcome", "w").write(outcome)
PY
mlplat rollout status credit-risk --stack dev

step "Rollback: 100 % of traffic back to the previous stable version (kept warm), applied by the running gateway"
if [ "$(cat .mlplat/canary-outcome)" = rolled_back ]; then
    echo "the canary controller already rolled version $CANDIDATE back (its decision is above): nothing to roll back"
else
    mlplat rollback credit-risk --stack dev --reason "demo of a rollback"
fi
mlplat deployments list --stack dev
sleep 1
python -c "import sys, httpx; print(httpx.get(sys.argv[1] + '/metrics').text.count('mlplat_requests_total'), 'request series in /metrics')" "$GATEWAY"

step "Ground truth arrives: join labels to the captured predictions by request id"
mlplat monitor labels credit-risk --stack dev --file .mlplat/demo-labels.csv

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

step "Pipeline: prepare -> train -> gate -> register -> staging, each step a process; a second run takes the data step from its cache"
# seeded data and model (the same as the first version's), so the gate's verdict never depends on the machine;
# --allow-dirty: a checkout being edited runs as it is, with its diff recorded
mlplat pipeline run examples/pipelines/credit_risk.py --stack dev --allow-dirty
mlplat pipeline run examples/pipelines/credit_risk.py --stack dev --allow-dirty --from register
mlplat pipeline list --stack dev

step "Frameworks: an XGBoost and a PyTorch model, each registered and promoted to staging (gate, package, staging endpoint, tests)"
XGB=$(python examples/xgboost_tabular/train.py --stack dev --register churn-xgb | sed -n 's/^registered churn-xgb version //p')
mlplat models promote churn-xgb "$XGB" --to staging --stack dev
MLP=$(python examples/pytorch_digits/train.py --stack dev --register digits-mlp | sed -n 's/^registered digits-mlp version //p')
mlplat models promote digits-mlp "$MLP" --to staging --stack dev

step "Adoption and SLA: production models served through the platform vs outside it; service levels against docs/SLA.md"
kill "$GATEWAY_PID" 2>/dev/null || true
wait "$GATEWAY_PID" 2>/dev/null || true  # a gateway stopped by SIGTERM records its clean stop (not downtime)
mlplat adoption --stack dev
# this run's hour: the health samples, promotions and rollbacks the demo just made (exit 1 on a breach)
mlplat sla --stack dev --period 1h

step "Done. Next: mlplat serve --stack dev (gateway), mlplat dashboard --stack dev (http://127.0.0.1:8765), mlplat ui --stack dev (MLflow UI)"
