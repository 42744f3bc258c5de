"""A version trained on feature views is served from the same view versions: the gateway fills the
features in from the online store by entity key."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from tests.conftest import BIN
from tests.integration.test_features_cli import _copy_example

pytestmark = pytest.mark.integration


def test_gateway_enriches_requests_by_entity_key(up_project, cli):
    stack = up_project / "stacks" / "Pulumi.dev.yaml"  # the example model is weak: a gate it can pass
    stack.write_text(stack.read_text().replace("thresholds: {roc_auc: 0.80, accuracy: 0.70}", "thresholds: {roc_auc: 0.55}"))
    assert cli("up", "--stack", "dev", "--yes").returncode == 0
    _copy_example(up_project)
    assert cli("features", "apply", "-d", "examples/features/definitions.py", "--yes").returncode == 0
    env = {**os.environ, "MLPLAT_PROJECT_DIR": str(up_project)}
    trained = subprocess.run([sys.executable, "examples/features/train.py", "--register", "eta"], cwd=up_project,
                             env=env, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-3000:]
    promoted = cli("models", "promote", "eta", "1", "--to", "staging")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert cli("deploy", "eta", "1").returncode == 0
    assert cli("features", "materialize", "--start", "2024-03-01", "--end", "2024-03-31").returncode == 0

    port_file = up_project / "gateway.port"
    gateway = subprocess.Popen([str(BIN / "mlplat"), "serve", "--port", "0", "--port-file", str(port_file),
                                "--no-monitor"], cwd=up_project, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert gateway.poll() is None and time.monotonic() < deadline, gateway.communicate()[1][-3000:]
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}/endpoints/eta/invocations"
        orders = pd.read_parquet(up_project / "examples" / "features" / "data" / "orders.parquet").head(60)
        keys = [{"driver_id": int(r.driver_id), "customer_id": str(r.customer_id)} for r in orders.itertuples()]

        # the same rows scored in process on the online values of the view versions the model was trained on
        import mlflow.pyfunc

        from mlplat.context import Context
        from mlplat.features import FeatureStore
        from mlplat.services.registry import verified_model_dir
        from mlplat.stack import load_stack

        columns = ["conv_rate", "acc_rate", "avg_daily_trips", "lifetime_orders"]
        online = pd.DataFrame(FeatureStore(stack="dev").get_online_features(
            keys, ["driver_stats@2:conv_rate", "driver_stats@2:acc_rate", "driver_stats@2:avg_daily_trips",
                   "customer_profile@1:lifetime_orders"]))
        complete = online[columns].notna().all(axis=1).to_numpy()
        assert complete.sum() >= 10
        keys = [k for k, ok in zip(keys, complete) if ok]
        model = mlflow.pyfunc.load_model(str(verified_model_dir(load_stack("dev"), Context(), "eta", 1)))
        expected = [int(v) for v in model.predict(online.loc[complete, columns].astype("float64"))]

        served = httpx.post(url, json={"dataframe_records": keys}, timeout=30)  # entity keys only
        assert served.status_code == 200, served.text
        assert served.json()["predictions"] == expected
        split = httpx.post(url, json={"dataframe_split": {"columns": ["driver_id", "customer_id"],
                                                          "data": [[k["driver_id"], k["customer_id"]] for k in keys]}},
                           timeout=30)
        assert split.status_code == 200 and split.json()["predictions"] == expected

        # features sent by the caller win over the store's; an unknown entity has no features: a clear 4xx
        unknown = httpx.post(url, json={"dataframe_records": [{"driver_id": 10**9, "customer_id": "nobody"}]}, timeout=30)
        assert unknown.status_code == 422 and "conv_rate" in unknown.json()["message"]
        explicit = httpx.post(url, json={"dataframe_records": [{"driver_id": 10**9, "customer_id": "nobody",
                                                                 "conv_rate": 0.5, "acc_rate": 0.5,
                                                                 "avg_daily_trips": 3.0, "lifetime_orders": 4.0}]},
                              timeout=30)
        assert explicit.status_code == 200, explicit.text
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
