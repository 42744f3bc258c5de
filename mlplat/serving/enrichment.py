"""Online feature enrichment of scoring requests: entity keys in, the feature values a model
version was trained on filled from the online store."""
from __future__ import annotations

import json
from collections.abc import Callable

from mlplat.features.errors import FeatureDataError
from mlplat.serving import jsonlimit
from mlplat.serving.protocol import RequestError


def enrich_body(body: bytes, enrich: Callable[[list[dict]], list[dict]]) -> bytes:
    """Fill feature columns from the online store into ``dataframe_records`` / ``dataframe_split``
    rows that carry entity keys. Anything else passes through untouched (the parser judges it)."""
    try:
        payload = jsonlimit.loads(body)
    except ValueError:  # malformed, too deep, a repeated key: the parser refuses it with the reason
        return body
    if not isinstance(payload, dict):
        return body
    if isinstance(payload.get("dataframe_records"), list) and all(isinstance(r, dict) for r in payload["dataframe_records"]):
        rows = payload["dataframe_records"]
    elif isinstance(payload.get("dataframe_split"), dict):
        split = payload["dataframe_split"]
        columns, data = split.get("columns"), split.get("data")
        if not (isinstance(columns, list) and isinstance(data, list) and all(isinstance(r, list) for r in data)):
            return body
        rows = [dict(zip(columns, r)) for r in data]
    else:
        return body
    enriched = enrich(rows)
    # values the caller sent win over the store's
    merged = [{**e, **{k: v for k, v in r.items() if v is not None}} for r, e in zip(rows, enriched)]
    return json.dumps({"dataframe_records": merged}).encode()


def enrich_request(body: bytes, enrich: Callable[[list[dict]], list[dict]]) -> bytes:
    """:func:`enrich_body`, with the entity keys a client got wrong refused as ``RequestError(422)``."""
    try:
        return enrich_body(body, enrich)
    except FeatureDataError as exc:
        raise RequestError(f"online features: {exc.message}", 422) from None
    except OverflowError as exc:  # an integer entity key beyond 64 bits cannot be looked up
        raise RequestError(f"online features: an entity key is out of range ({exc})", 422) from None
