"""The ceiling: a bare FastAPI app calling model.predict on a numpy array (no validation beyond indexing).

    python bare_app.py MODEL_DIR PORT
"""
from __future__ import annotations

import sys

import mlflow.sklearn
import numpy as np
import uvicorn
from fastapi import FastAPI, Request

model = mlflow.sklearn.load_model(sys.argv[1])
columns = list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else None
app = FastAPI()


@app.post("/invocations")
async def invocations(request: Request):
    payload = await request.json()
    records = payload["dataframe_records"]
    X = np.array([[r[c] for c in columns] for r in records], dtype=np.float64)
    return {"predictions": model.predict(X).tolist()}


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
