"""A model trained on feature views carries their versions into the registry's lineage."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.test_features_cli import _copy_example

pytestmark = pytest.mark.integration


def test_registered_version_names_the_feature_views_it_was_trained_on(up_project, cli):
    _copy_example(up_project)
    assert cli("features", "apply", "-d", "examples/features/definitions.py", "--yes").returncode == 0
    trained = subprocess.run([sys.executable, "examples/features/train.py", "--stack", "dev", "--register", "eta"],
                             cwd=up_project, capture_output=True, text=True,
                             env={**os.environ, "MLPLAT_PROJECT_DIR": str(up_project)})
    assert trained.returncode == 0, trained.stderr[-3000:]
    shown = cli("models", "show", "eta", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["lineage"]["features"] == ["customer_profile@1", "driver_stats@2"]
    assert "features: customer_profile@1, driver_stats@2" in cli("models", "show", "eta", "1").stdout
