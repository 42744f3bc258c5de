"""The ceiling: a bare FastAPI app calling model.predict on a numpy array (no validation beyond indexing).

    python bare_app.py MODEL_DIR PORT                         one worker
    BARE_MODEL_DIR=DIR uvicorn bare_app:app --workers 2 ...   uvicorn's own multiprocess workers
"""
from __future__ import annotations

import os
import sys
import warnings

import mlflow.sklearn
import numpy as np
import uvicorn
from fastapi import FastAPI, Request

warnings.filterwarnings("ignore", message="X does not have valid feature names")
model = mlflow.sklearn.load_model(os.environ.get("BARE_MODEL_DIR") or sys.argv[1])
columns = list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else None
app = FastAPI()


@app.get("/pid")
async def pid():  # which worker answered (the bench waits until every worker does); not on the scoring path
    return {"pid": os.getpid()}


@app.post("/invocations")
async def invocations(request: Request):
    payload = await request.json()
    records = payload["dataframe_records"]
    X = np.array([[r[c] for c in columns] for r in records], dtype=np.float64)
    return {"predictions": model.predict(X).tolist()}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
