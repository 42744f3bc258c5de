"""Promotion to staging with the container engine (buildah + podman, vfs storage) against the same
promotion with the model server as a local process. Three versions of one small scikit-learn model:

* v1: no container engine (local process) — the baseline;
* v2: container, cold storage: debootstrap base image, runtime image (venv + pinned wheels), model image;
* v3: container, warm storage: base and runtime images cached, only the model image is built.

The cold run uses a throwaway storage folder under benchmarks/.work (removed afterwards); the host's
pip cache is warm either way, so "cold" means cold images, not a cold network."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from _common import REPO, WORK, fresh_project, table, timed_promotion

TRAIN = """
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
import mlplat
from pathlib import Path
data = Path("data"); data.mkdir(exist_ok=True)
X, y = make_classification(n_samples=4000, n_features=8, n_informative=5, random_state=7)
frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)]); frame["label"] = y
frame.iloc[:3000].to_parquet(data / "train.parquet", index=False)
frame.iloc[3000:].to_parquet(data / "holdout.parquet", index=False)
train = frame.iloc[:3000]
for c in (1.0, 0.5, 0.25):
    with mlplat.start_run(experiment="bench-container", datasets={"train": "data/train.parquet"}, autolog=False) as run:
        model = LogisticRegression(C=c, max_iter=500).fit(train.drop(columns=["label"]), train["label"])
        run.log_model(model, name="bench-container", input_example=train.drop(columns=["label"]).head(5),
                      holdout={"path": "data/holdout.parquet", "label": "label"})
"""


def main() -> None:
    if not (shutil.which("buildah") and shutil.which("podman")):
        print("### Promotion to staging with the container engine\n\nskipped: buildah and podman are not installed")
        return
    root = fresh_project("container-promote")
    os.environ["MLPLAT_PROJECT_DIR"] = str(root)
    os.environ.setdefault("MLPLAT_USER", "ds@example.com")
    subprocess.run([sys.executable, "-c", TRAIN], cwd=root, check=True, env=os.environ)

    def promote(version: int) -> dict[str, float]:
        return timed_promotion(root, "bench-container", version)

    storage = WORK / "container-storage"
    shutil.rmtree(storage, ignore_errors=True)
    try:
        os.environ["MLPLAT_CONTAINER_ENGINE"] = "none"
        process = promote(1)
        os.environ["MLPLAT_CONTAINER_ENGINE"] = "podman"
        os.environ["MLPLAT_CONTAINER_STORAGE"] = str(storage)
        cold = promote(2)
        warm = promote(3)
    finally:
        from mlplat_providers.local import delivery

        if storage.exists():
            subprocess.run(delivery.podman_command("rm", "-a", "-f"), capture_output=True, env=delivery.engine_env())
            subprocess.run(delivery.buildah_command("rm", "-a"), capture_output=True, env=delivery.engine_env())
            subprocess.run(delivery.podman_command("rmi", "-a", "-f"), capture_output=True, env=delivery.engine_env())
        shutil.rmtree(storage, ignore_errors=True)

    names = {"gate": "gate", "package": "package (context; images when a container)",
             "endpoint": "staging endpoint until healthy", "integration": "integration tests",
             "stage": "stage change", "total": "total"}
    rows = []
    for key, label in names.items():
        p, c, w = process.get(key, 0.0), cold.get(key, 0.0), warm.get(key, 0.0)
        rows.append((label, f"{p:.2f} s", f"{c:.2f} s", f"{w:.2f} s",
                     f"{w / p:.1f}×" if min(p, w) >= 0.1 else "–"))
    print("### Promotion to staging with the container engine (buildah + podman, vfs storage) "
          "— `benchmarks/bench_container_promote.py`\n")
    print(table(rows, ("step", "local process (v1)", "container, cold images (v2)", "container, cached base + "
                       "runtime (v3)", "v3 / v1")))
    print(f"\nCold: debootstrap of the Debian base, the runtime image (venv + {len(_pins(root))} pinned "
          f"requirements from a wheel folder) and the model image. Cached: only the model image (one layer on "
          f"the runtime image). With vfs, every new layer and every new container is a full copy of the image's "
          f"file system (≈ 0.7 GB), which dominates the container path. v1's gate includes the first "
          f"imports of the process.")


def _pins(root) -> list[str]:
    path = root / ".mlplat" / "dev" / "packages" / "bench-container" / "3" / "requirements.txt"
    return path.read_text().split() if path.is_file() else []


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
