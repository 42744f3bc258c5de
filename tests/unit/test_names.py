"""Names are checked whole: a trailing newline makes a different name, so it is refused everywhere.

Python's ``$`` matches before a final newline (``re.match(r"^a$", "a\\n")`` succeeds); name checks
use ``re.fullmatch`` instead. Stack, team and environment names are covered in test_stack_spec.py.
"""
from __future__ import annotations

import pytest

from mlplat.errors import MlplatError
from mlplat.features.definitions import Entity, Feature, FeatureRef, FeatureView, parse_ttl
from mlplat.features.errors import FeatureDefinitionError

driver = Entity("driver", join_key="driver_id")


@pytest.mark.parametrize("make", [
    lambda: Entity("driver\n"),
    lambda: Entity("driver", join_key="driver_id\n"),
    lambda: Feature("trips\n", "int64"),
    lambda: FeatureView("stats\n", entities=[driver], features=[Feature("trips", "int64")], source="x.parquet"),
], ids=["entity", "join key", "feature", "view"])
def test_feature_store_names_with_a_trailing_newline_are_refused(make):
    with pytest.raises(FeatureDefinitionError, match="not a valid identifier"):
        make()


@pytest.mark.parametrize("text", ["stats:trips\n", "stats@2:trips\n", "stats\n", "stats@2\n"])
def test_feature_references_with_a_trailing_newline_are_refused(text):
    with pytest.raises(FeatureDefinitionError, match="malformed feature reference"):
        FeatureRef.parse(text)


def test_a_ttl_with_a_trailing_newline_is_refused():
    with pytest.raises(FeatureDefinitionError, match="is not a duration"):
        parse_ttl("30d\n", "stats")


@pytest.mark.parametrize("name", ["churn\n", "churn ", " churn", "", "a\tb", "-churn", "x" * 251, 7, None])
def test_bad_experiment_names_are_refused_before_anything_is_recorded(name, tmp_path, monkeypatch):
    import mlplat

    monkeypatch.chdir(tmp_path)  # no project here: the name is checked before a stack is looked for
    monkeypatch.delenv("MLPLAT_PROJECT_DIR", raising=False)
    with pytest.raises(MlplatError, match="invalid experiment name") as info:
        mlplat.start_run(experiment=name)
    assert "start_run(experiment=" in info.value.hint


@pytest.mark.parametrize("name", ["churn", "card-scorer", "team/churn v2", "a.b_c", "x" * 250])
def test_good_experiment_names_pass_the_name_check(name):
    import re

    from mlplat.sdk import EXPERIMENT_NAME

    assert re.fullmatch(EXPERIMENT_NAME, name)
