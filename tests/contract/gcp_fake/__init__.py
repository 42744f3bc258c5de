"""Fakes of Google Cloud's APIs for the gcp provider's tests, run as real servers on 127.0.0.1.

- ``vertex.py``: Vertex AI's REST API (models, versions, aliases, endpoints, deployed models, traffic,
  long-running operations) and GCS's JSON API for the artifacts, on one Starlette app whose route table
  other modules extend: every ``vertex_*.py`` module of this package with a ``ROUTES`` list is mounted.
- ``monitoring.py``: Cloud Monitoring's ``MetricService`` over gRPC.
- ``fixtures.py``: starts them once per test session and points the runtime at them
  (``MLPLAT_GCP_*_ENDPOINT``).

Request bodies are parsed into the services' own proto-plus types (``google.cloud.aiplatform_v1``,
``monitoring_v3``); unknown fields and wrong types are refused as the service refuses them, with a
``google.rpc.Status`` body. The services' documented rules are small functions in ``rules.py``, each
citing its documentation page, with their own tests.
"""
