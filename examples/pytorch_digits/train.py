"""A small PyTorch MLP on scikit-learn's digits (8×8 images, 10 classes) inside a tracked run.

The digits ship with scikit-learn (no download). The network ends in a softmax, so a served
version answers one probability per class (columns 0-9) for each row of 64 pixel values
(``pixel_0`` … ``pixel_63``, scaled to 0-1); the evaluation gate reads them as class
probabilities. Seeds are fixed and the data is shuffled by a seeded split, so two runs give
the same network.

    python examples/pytorch_digits/train.py [--stack dev] [--epochs 150] [--seed 5]
        [--register digits-mlp] [--predictions-out FILE]

``--predictions-out`` writes the model's in-process probabilities on the first held-out rows
(JSON: ``columns``, ``rows``, ``predictions``), the answer a served version must give.
The model is saved with ``torch.save`` (a pickle): the platform scores it only in separate
processes (the gate's scoring child, the model server), never in a lifecycle process.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import mlplat

HERE = Path(__file__).parent
DATA = HERE / "data"
FEATURES = [f"pixel_{i}" for i in range(64)]
LABEL = "digit"


def make_data(seed: int) -> tuple[Path, Path]:
    DATA.mkdir(exist_ok=True)
    digits = load_digits()
    frame = pd.DataFrame((digits.data / 16.0).astype(np.float32), columns=FEATURES)
    frame[LABEL] = digits.target.astype(int)
    train, holdout = train_test_split(frame, test_size=0.25, random_state=seed, stratify=frame[LABEL])
    train_path, holdout_path = DATA / "train.parquet", DATA / "holdout.parquet"
    train.to_parquet(train_path, index=False)
    holdout.to_parquet(holdout_path, index=False)
    return train_path, holdout_path


def build(hidden: int) -> nn.Module:
    # built-in layers only: the saved model needs no code of this script to load
    return nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.ReLU(), nn.Linear(hidden, 10), nn.Softmax(dim=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", default=None)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--register", default=None, help="register the model under this name")
    parser.add_argument("--predictions-out", type=Path, default=None,
                        help="write the in-process probabilities on the first held-out rows here (JSON)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # the same sums in the same order: reproducible weights
    train_path, holdout_path = make_data(args.seed)
    train = pd.read_parquet(train_path)
    X_fit, X_val, y_fit, y_val = train_test_split(train[FEATURES], train[LABEL], test_size=0.2,
                                                  random_state=args.seed)
    xs, ys = torch.from_numpy(X_fit.to_numpy(np.float32)), torch.from_numpy(y_fit.to_numpy(np.int64))
    xv, yv = torch.from_numpy(X_val.to_numpy(np.float32)), torch.from_numpy(y_val.to_numpy(np.int64))

    with mlplat.start_run(experiment="digits-mlp", name=f"mlp-{args.hidden}", stack=args.stack,
                          datasets={"train": train_path, "holdout": holdout_path}) as run:
        for key, value in vars(args).items():
            if key not in ("stack", "register", "predictions_out"):
                run.log_param(key, value)
        model = build(args.hidden)
        optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
        loss_fn = nn.NLLLoss()
        for epoch in range(args.epochs):  # full batch: the digits are small
            model.train()
            optimiser.zero_grad()
            loss = loss_fn(torch.log(model(xs) + 1e-9), ys)
            loss.backward()
            optimiser.step()
            if epoch % 10 == 9:
                model.eval()
                with torch.no_grad():
                    accuracy = float((model(xv).argmax(dim=1) == yv).float().mean())
                run.log_metric("train_loss", loss.item(), step=epoch)
                run.log_metric("val_accuracy", accuracy, step=epoch)
        model.eval()
        with torch.no_grad():
            accuracy = float((model(xv).argmax(dim=1) == yv).float().mean())
        run.log_metric("final_val_accuracy", accuracy)
        print(f"run {run.run_id}: val_accuracy={accuracy:.4f}")
        if args.register:
            version = run.log_model(model, name=args.register, input_example=X_val.head(5),
                                    holdout={"path": str(holdout_path), "label": LABEL}, task="classification")
            print(f"registered {args.register} version {version}")
    if args.predictions_out:
        X = pd.read_parquet(holdout_path)[FEATURES].head(20)
        with torch.no_grad():
            proba = model(torch.from_numpy(X.to_numpy(np.float32))).numpy()
        args.predictions_out.write_text(json.dumps({"columns": FEATURES, "rows": X.values.tolist(),
                                                    "predictions": proba.tolist()}))


if __name__ == "__main__":
    main()
