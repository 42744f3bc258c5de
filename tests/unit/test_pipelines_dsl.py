"""The pipeline DSL: what a pipeline file builds, and one clear refusal per mistake; five-field cron."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from mlplat import pipelines as dsl
from mlplat.contracts.pipelines import PipelineDefinition
from mlplat.errors import MlplatError, NotFound
from mlplat.pipelines import Pipeline, PipelineError
from mlplat.pipelines import cron as cron_mod
from tests.conftest import REPO


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def three() -> Pipeline:
    p = Pipeline("demo", model="scorer")
    a = p.step("prepare", "python steps/prepare.py --rows 10", inputs={"raw": "data/raw.csv"}, outputs=["dataset"])
    b = p.step("train", ["python", "steps/train.py"], inputs={"dataset": a.output("dataset")}, retries=2)
    gate = p.evaluate(b)
    reg = p.register(b, after=gate)
    p.promote(reg)
    return p


def test_the_dsl_builds_a_validated_definition_in_dependency_order():
    definition = three().definition()
    assert [s.name for s in definition.steps] == ["prepare", "train", "evaluate", "register", "promote"]
    steps = {s.name: s for s in definition.steps}
    assert steps["prepare"].command == ("python", "steps/prepare.py", "--rows", "10")
    assert steps["train"].inputs == {"dataset": "prepare.dataset"} and steps["train"].retries == 2
    assert steps["evaluate"].kind == "evaluate" and steps["evaluate"].params == {"model": "scorer", "training_step": "train"}
    assert steps["register"].depends_on == ("evaluate", "train")
    assert steps["promote"].params == {"model": "scorer", "version_step": "register", "target": "staging"}
    assert not steps["evaluate"].cache and steps["prepare"].cache
    assert dsl.order(definition) == ["prepare", "train", "evaluate", "register", "promote"]
    assert dsl.from_dict(dsl.to_dict(definition)) == definition


def test_the_credit_risk_example_loads():
    definition = dsl.load(REPO / "examples" / "pipelines" / "credit_risk.py")
    assert definition.name == "credit-risk" and definition.model == "credit-risk"
    assert [s.kind for s in definition.steps] == ["command", "command", "evaluate", "register", "promote"]
    assert definition.schedule == "0 3 * * 1"


def bad(definition: PipelineDefinition) -> str:
    with pytest.raises(MlplatError) as caught:
        dsl.validate(definition)
    return str(caught.value)


def base() -> PipelineDefinition:
    return three().definition()


def with_step(definition: PipelineDefinition, step: str, /, **changes) -> PipelineDefinition:
    return replace(definition, steps=tuple(replace(s, **changes) if s.name == step else s for s in definition.steps))


def test_an_input_naming_an_unknown_step_is_refused_by_name():
    message = bad(with_step(base(), "train", inputs={"dataset": "prepar.dataset"}))
    assert "step train" in message and "unknown step 'prepar'" in message and "known steps: prepare" in message


def test_an_input_naming_an_undeclared_output_is_refused():
    message = bad(with_step(base(), "train", inputs={"dataset": "prepare.features"}))
    assert "output 'features'" in message and "does not declare" in message
    with pytest.raises(PipelineError, match="has no output 'features'"):
        Pipeline("x").step("a", "true", outputs=["dataset"]).output("features")


def test_a_cycle_is_refused_naming_its_steps():
    definition = with_step(base(), "prepare", depends_on=("train",))
    message = bad(definition)
    assert "the steps form a cycle: prepare -> train -> prepare" in message


def test_duplicate_step_names_are_refused():
    p = Pipeline("dup")
    p.step("train", "python a.py")
    p.step("train", "python b.py")
    with pytest.raises(PipelineError, match="two steps are named 'train'"):
        p.definition()


@pytest.mark.parametrize("change, expected", [
    ({"depends_on": ("nowhere",)}, "depends on unknown step 'nowhere'"),
    ({"retries": -1}, "retries must be a whole number"),
    ({"command": ()}, "a command step needs a command"),
    ({"outputs": ("my-output",)}, "invalid output name 'my-output'"),
    ({"name": "Train"}, "invalid step name 'Train'"),
])
def test_other_malformed_steps_are_refused(change, expected):
    assert expected in bad(with_step(base(), "prepare" if "name" not in change else "promote", **change))


def test_platform_steps_need_a_model_and_a_real_training_step():
    p = Pipeline("nomodel")
    t = p.step("train", "python t.py")
    p.evaluate(t)
    with pytest.raises(PipelineError, match="needs the model"):
        p.definition()
    definition = with_step(base(), "evaluate", params={"model": "scorer", "training_step": "promote"})
    assert "takes its version from a command step" in bad(definition)
    definition = with_step(base(), "promote", params={"model": "scorer", "version_step": "register",
                                                      "target": "production"})
    assert "promotes to staging only" in bad(definition)


def test_step_and_from_select_steps_or_name_the_unknown_one():
    definition = base()
    assert dsl.select(definition, start="evaluate") == ["evaluate", "register", "promote"]
    assert dsl.select(definition, step="train") == ["train"]
    with pytest.raises(NotFound, match=r"no step 'trian' \(--step\)") as caught:
        dsl.select(definition, step="trian")
    assert "prepare, train" in (caught.value.hint or "")
    with pytest.raises(NotFound, match=r"no step 'x' \(--from\)"):
        dsl.select(definition, start="x")


def test_a_pipeline_file_that_is_missing_or_declares_nothing_is_refused(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        dsl.load(tmp_path / "nope.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(PipelineError, match="declares no pipeline"):
        dsl.load(empty)
    broken = tmp_path / "broken.py"
    broken.write_text("from mlplat.pipelines import Pipeline\np = Pipeline('b')\np.step('a', 'true', inputs={'x': 'zz.out'})\n")
    with pytest.raises(PipelineError, match="unknown step 'zz'") as caught:
        dsl.load(broken)
    assert str(broken) in str(caught.value)


# --- cron -------------------------------------------------------------------------------------


@pytest.mark.parametrize("expression, expected", [
    ("0 3 * *", "has 4 field(s), a cron expression has 5"),
    ("61 * * * *", "minute 61 is outside 0-59"),
    ("* 24 * * *", "hour 24 is outside 0-23"),
    ("* * 0 * *", "day of month 0 is outside 1-31"),
    ("* * * 13 *", "month 13 is outside 1-12"),
    ("* * * * 8", "day of week 8 is outside 0-7"),
    ("*/0 * * * *", "step '0' must be a positive number"),
    ("5-1 * * * *", "range '5-1' runs backwards"),
    ("a * * * *", "minute field has 'a', not a number"),
    ("1,,2 * * * *", "empty list item"),
    ("@sometimes", "unknown alias"),
    ("", "the schedule is empty"),
    ("0 0 30 2 *", "never fires"),
])
def test_invalid_cron_expressions_get_one_clear_message(expression, expected):
    with pytest.raises(cron_mod.CronError) as caught:
        cron_mod.validate(expression)
    assert expected in str(caught.value)
    assert "minute hour day-of-month month day-of-week" in (caught.value.hint or "")


def test_a_pipeline_with_an_invalid_schedule_is_refused():
    p = three()
    p.schedule = "0 3 * * mon-xyz"
    with pytest.raises(cron_mod.CronError, match="day of week field has 'xyz'"):
        p.definition()


@pytest.mark.parametrize("expression, after, expected", [
    ("0 3 * * 1", "2026-03-04T00:00", "2026-03-09T03:00"),  # Wednesday → next Monday 03:00
    ("*/15 * * * *", "2026-03-04T10:07", "2026-03-04T10:15"),
    ("*/15 * * * *", "2026-03-04T10:15", "2026-03-04T10:30"),  # strictly after
    ("30 23 31 12 *", "2026-03-04T00:00", "2026-12-31T23:30"),
    ("0 0 1 jan-mar sun", "2026-03-04T00:00", "2026-03-08T00:00"),  # both day fields restricted: either matches
    ("@daily", "2026-03-04T12:00", "2026-03-05T00:00"),
    ("0 12 * * 7", "2026-03-04T00:00", "2026-03-08T12:00"),  # 7 is Sunday too
    ("0 0 29 2 *", "2026-03-01T00:00", "2028-02-29T00:00"),
])
def test_next_fire_times(expression, after, expected):
    assert cron_mod.parse(expression).next_after(ts(after)) == ts(expected)
