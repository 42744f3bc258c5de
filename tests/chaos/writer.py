"""One of the concurrent writers (``python -m tests.chaos.writer ID GO_FILE``): once GO_FILE exists, two
tracked runs with metrics, the second registering a version of ``concurrent``. Prints ``VERSION n``."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression

import mlplat

writer, go = int(sys.argv[1]), Path(sys.argv[2])
train = pd.read_parquet("data/train.parquet")
X, y = train.drop(columns=["label"]), train["label"]
model = LogisticRegression(C=1.0 / (writer + 1), max_iter=500).fit(X, y)
while not go.exists():  # start together, so the writes race
    time.sleep(0.01)
with mlplat.start_run(experiment="writers", name=f"writer-{writer}-a", params={"writer": writer}) as run:
    run.log_metric("writer", writer)
    print(f"RUN {run.run_id}")
with mlplat.start_run(experiment="writers", name=f"writer-{writer}-b", params={"writer": writer}) as run:
    run.log_metric("writer", writer)
    version = run.log_model(model, name="concurrent", input_example=X.head(3))
    print(f"RUN {run.run_id}")
    print(f"VERSION {version}")
