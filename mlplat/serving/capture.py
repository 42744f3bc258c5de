"""Data capture: sampled request/response records, written to the platform database in
batches by a background thread, off the request path (a full queue sheds records, never
blocks a request)."""
from __future__ import annotations

import json
import logging
import queue
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mlplat.db import open_database
from mlplat.serving.protocol import Inputs, to_list

log = logging.getLogger("mlplat.gateway")


class CaptureWriter:
    """Sampled request/response records, written in batches by a background thread."""

    def __init__(self, db_path: Path, sampling: float, *, batch: int = 256, interval: float = 0.2):
        self.db_path = db_path
        self.sampling = sampling
        self.batch = batch
        self.interval = interval
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.dropped = 0
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlplat-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sampled(self) -> bool:
        return self.sampling >= 1.0 or (self.sampling > 0 and random.random() < self.sampling)

    def put(self, item: tuple) -> None:
        if self.queue.qsize() > 50_000:  # the writer cannot keep up: shed load, never block requests
            self.dropped += 1
            return
        self.queue.put(item)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        db = open_database(self.db_path)
        conn = db.connect()
        try:
            # a ledger not yet migrated (mlplat up not rerun) has no column for the caller's request id
            correlated = "client_request_id" in {r[1] for r in conn.execute("PRAGMA table_info(captures)")}
            columns = ("request_id, ts, model, version, variant, environment, inputs, outputs, latency_ms, status, "
                       "shadow" + (", client_request_id" if correlated else ""))
            sql = f"INSERT OR IGNORE INTO captures ({columns}) VALUES ({','.join('?' * (12 if correlated else 11))})"
            while True:
                stopping = self._stop.wait(self.interval)
                while True:
                    rows = self._drain()
                    if not rows:
                        break
                    if not correlated:
                        rows = [row[:11] for row in rows]
                    try:
                        with db.transaction(conn):
                            conn.executemany(sql, rows)
                        self.written += len(rows)
                    except Exception as exc:  # keep serving; the rows are lost, say so
                        log.warning("capture write failed (%d rows dropped): %s", len(rows), exc)
                        self.dropped += len(rows)
                if stopping:
                    return
        finally:
            conn.close()

    def _drain(self) -> list[tuple]:
        items = []
        while len(items) < self.batch:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                break
        scores = _batch_scores(items)
        rows = []
        for index, item in enumerate(items):
            try:
                rows.append(capture_row(*item[:11], scores=scores.get(index), client_id=item[12]))
            except Exception as exc:  # an odd payload must not stop the writer
                log.warning("cannot capture request %s: %s", item[0], exc)
        return rows


def _batch_scores(items: list[tuple]) -> dict[int, Any]:
    """Scores of every captured item that has a scorer: one call per model for the whole batch."""
    groups: dict[Any, list[int]] = {}
    for index, item in enumerate(items):
        scorer, inputs = item[11], item[6]
        if scorer is not None and inputs.array is not None and inputs.array.ndim == 2:
            groups.setdefault(scorer, []).append(index)
    out: dict[int, Any] = {}
    for scorer, indexes in groups.items():
        arrays = [items[i][6].array for i in indexes]
        try:
            if len({a.shape[1] for a in arrays}) != 1:
                raise ValueError("inputs of different widths")
            scores = scorer(np.vstack(arrays))
        except Exception as exc:  # monitoring loses the scores of this batch, never the captures
            log.warning("cannot score %d captured requests: %s", len(indexes), exc)
            continue
        start = 0
        for i, array in zip(indexes, arrays):
            out[i] = scores[start:start + len(array)]
            start += len(array)
    return out


def capture_row(request_id: str, ts: float, model: str, version: int, variant: str, environment: str,
                 inputs: Inputs, predictions: Any, latency_ms: float, status: int, shadow: bool,
                 scores: Any = None, client_id: str | None = None) -> tuple:
    records = inputs.records()
    payload = records[0] if inputs.rows == 1 and records and isinstance(records[0], dict) else records
    if predictions is None:
        outputs = None
    elif scores is not None:
        outputs = json.dumps({"predictions": to_list(predictions), "probabilities": to_list(scores)}, default=str)
    else:
        outputs = json.dumps(to_list(predictions), default=str)
    return (request_id, ts, model, int(version), variant, environment, json.dumps(payload, default=str), outputs,
            float(latency_ms), int(status), int(shadow), client_id)
