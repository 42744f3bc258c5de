#!/usr/bin/env bash
# The golden path as a team: one `mlplat server` (ledger in PostgreSQL, MLflow's tracking server beside it)
# and two project folders that share nothing but its URL - a data scientist's and a risk officer's.
# Everything lives in a temporary directory and stops at the end. Needs PostgreSQL's server binaries
# (initdb, pg_ctl under /usr/lib/postgresql/<version>/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
unset MLPLAT_PROJECT_DIR MLPLAT_STACK MLPLAT_CONTROL_PLANE_URL MLPLAT_DATABASE_URL MLPLAT_USER
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {  # wait_for URL PID: until URL answers 200, while PID lives
  python - "$1" "$2" <<'PY'
import os, sys, time, httpx
url, pid, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + 120
while time.monotonic() < deadline:
    os.kill(pid, 0)  # gone: the error says so, and the script stops
    try:
        if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.3)
sys.exit(f"{url} did not answer within 120s")
PY
}

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  echo "PostgreSQL's server binaries are not installed (apt-get install postgresql)" >&2
  exit 1
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlplat-team-XXXXXX")
PGROOT=$(mktemp -d "${TMPDIR:-/tmp}/mlplat-team-pg-XXXXXX")
as_pg=()
if [ "$(id -u)" = 0 ]; then  # PostgreSQL refuses to run as root
  chown postgres:postgres "$PGROOT"
  as_pg=(runuser -u postgres --)
fi
SERVER_PID="" GATEWAY_PID=""
cleanup() {
  set +e
  [ -n "$GATEWAY_PID" ] && kill "$GATEWAY_PID" 2>/dev/null && wait "$GATEWAY_PID" 2>/dev/null
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  [ -f "$PGROOT/data/postmaster.pid" ] && "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGROOT/data" -m fast -w stop >/dev/null
  rm -rf "$WORK" "$PGROOT"
}
trap cleanup EXIT

step "A throw-away PostgreSQL on a free loopback port (the team's ledger)"
PGPORT=$(free_port)
"${as_pg[@]}" "$PGBIN/initdb" -D "$PGROOT/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
"${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/server.log" -w -t 60 start \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories=$PGROOT" >/dev/null
"$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres mlplat
DATABASE="postgresql://postgres@127.0.0.1:$PGPORT/mlplat"
echo "ledger: $DATABASE"

# Three folders: the server's project, and one per person. Each has the dev stack; the people's stack
# files name the control plane (and its tracking server) instead of keeping state of their own.
PORT=$(free_port) TRACKING_PORT=$(free_port)
URL="http://127.0.0.1:$PORT" TRACKING="http://127.0.0.1:$TRACKING_PORT"
SERVER="$WORK/platform" ALICE="$WORK/alice" BOB="$WORK/bob"
for folder in "$SERVER" "$ALICE" "$BOB"; do
  mkdir -p "$folder/stacks" "$folder/examples/sklearn_tabular"
  cp Pulumi.yaml "$folder/"
  cp stacks/Pulumi.dev.yaml "$folder/stacks/"
  cp examples/sklearn_tabular/train.py "$folder/examples/sklearn_tabular/"
done
printf '  mlplat:controlPlane:\n    tracking: %s\n' "$TRACKING" >> "$SERVER/stacks/Pulumi.dev.yaml"
for folder in "$ALICE" "$BOB"; do
  printf '  mlplat:controlPlane:\n    url: %s\n    tracking: %s\n' "$URL" "$TRACKING" >> "$folder/stacks/Pulumi.dev.yaml"
done
platform() { (cd "$SERVER" && MLPLAT_USER=platform@example.com "$@"); }
alice() { (cd "$ALICE" && MLPLAT_USER=ds@example.com "$@"); }    # a data scientist: trains, promotes
bob() { (cd "$BOB" && MLPLAT_USER=risk-office@example.com "$@"); }  # a risk officer: approves, deploys

step "The platform: provision the dev stack (its governance applied), then move its ledger into PostgreSQL"
platform mlplat up --stack dev --yes
platform mlplat db export "$WORK/ledger.json" --stack dev
platform mlplat db import "$WORK/ledger.json" --stack dev --database "$DATABASE"

step "mlplat server on the ledger, MLflow's tracking server beside it; the gateway, a platform process, beside both"
(cd "$SERVER" && MLPLAT_USER=platform@example.com exec mlplat server --stack dev --port "$PORT" \
  --tracking-port "$TRACKING_PORT" --database "$DATABASE") &
SERVER_PID=$!
wait_for "$URL/readyz" "$SERVER_PID"
PORT_FILE="$WORK/gateway.port"
(cd "$SERVER" && MLPLAT_USER=platform@example.com exec mlplat serve --stack dev --port 0 --port-file "$PORT_FILE" \
  --no-monitor --database "$DATABASE" >"$WORK/gateway.log" 2>&1) &
GATEWAY_PID=$!
wait_for "$TRACKING/health" "$SERVER_PID"

step "Alice's folder: nothing to provision, the stack is served by the control plane"
alice mlplat up --stack dev --yes

step "Alice trains and registers credit-risk (the example's data; runs and files go to the tracking server)"
alice python - <<'PY'
import runpy
import mlplat
from sklearn.ensemble import GradientBoostingClassifier
import pandas as pd

make_data = runpy.run_path("examples/sklearn_tabular/train.py")["make_data"]  # the example's generator
train_path, holdout_path = make_data(7)  # relative to the project: each machine reads its own copy
train = pd.read_parquet(train_path)
X, y = train.drop(columns=["label"]), train["label"]
with mlplat.start_run(experiment="credit-risk", stack="dev", datasets={"train": train_path}, autolog=False) as run:
    run.log_params({"model": "GradientBoostingClassifier", "n_estimators": 40})
    model = GradientBoostingClassifier(n_estimators=40, random_state=7).fit(X, y)
    version = run.log_model(model, name="credit-risk", input_example=X.head(5),
                            holdout={"path": str(holdout_path), "label": "label"})
    print(f"registered credit-risk version {version}")
PY
# the gate runs on the server, on its copy of the held-out set (and Bob keeps one too)
cp -r "$ALICE/examples/sklearn_tabular/data" "$SERVER/examples/sklearn_tabular/"
cp -r "$ALICE/examples/sklearn_tabular/data" "$BOB/examples/sklearn_tabular/"

step "Bob's folder sees the same registry"
bob mlplat models list --stack dev

step "Alice promotes to staging: gate, package, staging endpoint, integration tests - all on the server"
alice mlplat models promote credit-risk 1 --to staging --stack dev

step "credit-risk is critical: Bob approves (four eyes: never the author), bound to the artifact and gate report"
bob mlplat approvals list --stack dev
bob mlplat models approve credit-risk 1 --stack dev --reason "validated on the holdout"

step "Alice promotes to production"
alice mlplat models promote credit-risk 1 --to production --stack dev

step "Bob deploys the version Alice promoted; Alice sees the deployment"
bob mlplat deploy credit-risk 1 --stack dev
alice mlplat deployments list --stack dev

step "Predictions through the gateway, which picked Bob's deployment up from the ledger"
until [ -s "$PORT_FILE" ]; do kill -0 "$GATEWAY_PID"; sleep 0.2; done
GATEWAY="http://127.0.0.1:$(cat "$PORT_FILE")"
echo "gateway: $GATEWAY"
alice python - "$GATEWAY" <<'PY'
import sys, time, httpx, pandas as pd
holdout = pd.read_parquet("examples/sklearn_tabular/data/holdout.parquet").head(20)
records = holdout.drop(columns=["label"]).to_dict("records")
with httpx.Client(base_url=sys.argv[1], timeout=10, trust_env=False) as client:
    deadline = time.monotonic() + 60
    def loaded() -> bool:
        r = client.get("/endpoints/credit-risk")
        return r.status_code == 200 and all(r.json()["loaded"].values())
    while not loaded():  # the gateway polls the ledger, then loads (and verifies) the version
        if time.monotonic() > deadline:
            sys.exit("the gateway did not load credit-risk within 60s")
        time.sleep(0.3)
    versions = []
    for record in records:
        r = client.post("/endpoints/credit-risk/invocations", json={"dataframe_records": [record]})
        r.raise_for_status()
        versions.append(r.headers["x-mlplat-version"])
print(f"{len(versions)} predictions served by version(s) {sorted(set(versions))}; e.g. {r.json()}")
PY
bob mlplat rollout status credit-risk --stack dev

step "One audit log for the team, the same from both folders, and it verifies"
alice mlplat audit log --stack dev --model credit-risk --limit 10
bob mlplat audit verify --stack dev

step "Done. Stopping the gateway, the server, its tracking server and PostgreSQL"
