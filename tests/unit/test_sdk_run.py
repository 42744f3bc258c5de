"""A run registers models only while it is active: the check lives in the run itself."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlplat import sdk
from mlplat.errors import TrackingRequired


class RecordingTracker:
    """Only what a run calls on its tracker while it starts and ends."""

    def __init__(self):
        self.calls: list[tuple] = []

    def log_batch(self, run_id, *, params=(), metrics=(), tags=()):
        self.calls.append(("log_batch", run_id, dict(tags)))

    def deactivate(self, handle, status):
        self.calls.append(("deactivate", status))

    def end_run(self, run_id, status):
        self.calls.append(("end_run", run_id, status))


def _run(tracker) -> sdk.Run:
    # spec and ctx are empty on purpose: registration reading either would fail loudly
    run = sdk.Run(tracker, "r1", spec=SimpleNamespace(), experiment="e", lineage={}, ctx=SimpleNamespace())
    with sdk._lock:
        sdk._active.append(run)
    return run


def test_an_ended_run_refuses_to_register_before_reaching_the_registry(monkeypatch):
    reached = []
    monkeypatch.setattr(sdk.registry_service, "log_model", lambda *a, **k: reached.append(a))
    tracker = RecordingTracker()
    run = _run(tracker)
    run.end("FINISHED")
    assert ("end_run", "r1", "FINISHED") in tracker.calls and run not in sdk._active
    with pytest.raises(TrackingRequired, match="run r1 has ended") as refused:
        run.log_model(object(), name="scorer")
    assert "mlplat.start_run" in refused.value.hint
    assert reached == []


def test_an_active_run_hands_registration_to_the_registry(monkeypatch):
    seen = []
    monkeypatch.setattr(sdk.registry_service, "log_model", lambda run, model, name, **kw: seen.append((run, name)) or 7)
    monkeypatch.setattr(sdk.Run, "_say_reference", lambda self, name, version: None)
    run = _run(RecordingTracker())
    try:
        assert run.log_model(object(), name="scorer") == 7
        assert seen == [(run, "scorer")]
    finally:
        run.end("FINISHED")
