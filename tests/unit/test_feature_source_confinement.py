"""A client of `mlplat server` names feature sources inside the server's project, never other files of its machine."""
from __future__ import annotations

import os

import pytest

from mlplat.api.ops.features import DefinitionsDoc, _definitions
from mlplat.features.errors import FeatureDefinitionError


def doc(path: str) -> DefinitionsDoc:
    return DefinitionsDoc.model_validate({
        "entities": [{"name": "driver", "join_key": "driver_id"}],
        "views": [{"name": "driver_stats", "entities": [{"name": "driver", "join_key": "driver_id"}],
                   "features": [{"name": "trips"}], "source": {"kind": "parquet", "path": path}}],
    })


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.parquet", "data/../../outside.parquet", "link/x.parquet"])
def test_a_source_leaving_the_project_is_refused_on_the_server(tmp_path, path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    os.symlink(tmp_path, project / "link")  # a symbolic link out of the project
    with pytest.raises(FeatureDefinitionError) as caught:
        _definitions(doc(path), confine_to=project)
    assert "outside the server's project" in caught.value.message and caught.value.hint


def test_a_source_inside_the_project_and_embedded_calls_are_not_confined(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    assert _definitions(doc("data/driver_stats.parquet"), confine_to=project).views[0].source.path == \
        "data/driver_stats.parquet"
    assert _definitions(doc("/elsewhere/x.parquet")).views  # embedded: the user's own machine
