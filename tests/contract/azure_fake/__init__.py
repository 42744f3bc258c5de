"""Fakes of Azure's APIs for the azure provider's tests, run as real servers on 127.0.0.1.

- ``arm.py``: Azure Resource Manager and the Azure Machine Learning REST API (workspaces, models and
  versions, online endpoints with traffic and mirror traffic, online deployments, long-running
  operations through ``Azure-AsyncOperation``) on one Starlette app whose route table other modules of
  this package extend: every module with a ``ROUTES`` list is mounted.
- ``rules.py``: the services' documented rules, each a small function citing its documentation page.
- ``features.py``: the managed feature store's entities and feature sets (containers and versions) and
  workspace connections, with ``feature_rules.py`` (its documented rules); ``feature_support.py``: the
  feature-store workspace as the program leaves it and a Redis server on 127.0.0.1 (fakeredis over TCP)
  standing in for Azure Cache for Redis.
- ``metrics.py``: Azure Monitor's metrics of online endpoints (``$filter`` on the dimensions each metric
  has, requests split by status code and class); ``registries.py``: Azure ML registries shared across
  workspaces and their model versions (a shared version names an existing workspace asset).
- ``fixtures.py``: starts the server once per test session and points the runtime at it
  (``MLPLAT_AZURE_ARM_ENDPOINT``; the runtime then uses a fixed fake token).
"""
