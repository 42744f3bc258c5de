"""Online serving: request protocols, a single-model server, and the rollout gateway.

``protocol`` parses MLflow scoring payloads and Open Inference Protocol v2 requests
into numpy arrays checked against a model signature (no pandas on the hot path);
``model_server`` serves one model directory; ``gateway`` serves every deployment
of a stack with A/B, canary and shadow routing, metrics and data capture.
"""
