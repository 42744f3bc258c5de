"""A fake of Cloud Monitoring's ``MetricService`` (gRPC, ``google.monitoring.v3``) on 127.0.0.1.

``ListTimeSeries`` answers the per-deployed-model metrics Vertex AI publishes for online prediction
(https://cloud.google.com/monitoring/api/metrics_gcp_a_b#gcp-aiplatform, resource type
``aiplatform.googleapis.com/Endpoint`` with labels ``resource_container``, ``location``, ``endpoint_id``;
metric label ``deployed_model_id``): ``prediction/online/prediction_count``, ``error_count``,
``response_count`` and the ``prediction_latencies`` distribution; tests feed their points with
:meth:`MonitoringState.feed`. ``CreateTimeSeries`` takes the platform's own metrics under Cloud
Monitoring's rules on custom metrics (``rules.create_time_series_error``) and keeps them for reading back.

Filters: conjunctions (``AND``) of ``metric.type``, ``resource.type``, ``metric.labels.K`` and
``resource.labels.K`` compared with ``=`` to a quoted string, the subset the runtime uses; anything else
is refused with INVALID_ARGUMENT. Aggregation is not modelled (UNIMPLEMENTED): callers sum raw points.
"""
from __future__ import annotations

import re
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from tests.contract.gcp_fake import rules

VERTEX_METRIC = "aiplatform.googleapis.com/prediction/online/"
ENDPOINT_RESOURCE = "aiplatform.googleapis.com/Endpoint"
_CLAUSE = re.compile(r'^\s*(metric\.type|resource\.type|metric\.labels\.\w+|resource\.labels\.\w+)\s*=\s*"([^"]*)"\s*$')


@dataclass
class Series:
    metric_type: str
    metric_labels: dict[str, str]
    resource_type: str
    resource_labels: dict[str, str]
    kind: str  # GAUGE | DELTA | CUMULATIVE
    value_type: str  # INT64 | DOUBLE | DISTRIBUTION
    points: list[tuple[float, float, Any]] = field(default_factory=list)  # (start, end, value)


class RpcError(Exception):
    def __init__(self, code: Any, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def parse_filter(text: str) -> list[tuple[str, str]]:
    clauses = []
    for part in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        match = _CLAUSE.match(part)
        if not match:
            import grpc

            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"Could not parse filter clause: {part!r}")
        clauses.append((match.group(1), match.group(2)))
    if not any(key == "metric.type" for key, _ in clauses):
        import grpc

        raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "A filter must specify a metric type (metric.type = \"...\")")
    return clauses


def matches(series: Series, clauses: list[tuple[str, str]]) -> bool:
    for key, value in clauses:
        if key == "metric.type":
            actual: str | None = series.metric_type
        elif key == "resource.type":
            actual = series.resource_type
        elif key.startswith("metric.labels."):
            actual = series.metric_labels.get(key[len("metric.labels."):])
        else:
            actual = series.resource_labels.get(key[len("resource.labels."):])
        if actual != value:
            return False
    return True


@dataclass
class MonitoringState:
    lock: threading.RLock = field(default_factory=threading.RLock)
    series: dict[tuple[Any, ...], Series] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def reset(self) -> None:
        with self.lock:
            self.series.clear()
            self.requests.clear()

    def _series(self, metric_type: str, metric_labels: dict[str, str], resource_type: str,
                resource_labels: dict[str, str], kind: str, value_type: str) -> Series:
        key = (metric_type, tuple(sorted(metric_labels.items())), resource_type, tuple(sorted(resource_labels.items())))
        if key not in self.series:
            self.series[key] = Series(metric_type, dict(metric_labels), resource_type, dict(resource_labels), kind,
                                      value_type)
        return self.series[key]

    def feed(self, *, project: str, location: str, endpoint_id: str, deployed_model_id: str, at: float,
             requests: int = 0, errors: int = 0, latencies_ms: list[float] | None = None,
             seconds: float = 60.0) -> None:
        """Points as Vertex publishes them for one deployed model over ``(at - seconds, at]``."""
        resource = {"resource_container": project, "location": location, "endpoint_id": endpoint_id}
        with self.lock:
            start = at - seconds
            labels = {"deployed_model_id": deployed_model_id}
            if requests:
                self._series(VERTEX_METRIC + "prediction_count", labels, ENDPOINT_RESOURCE, resource, "DELTA",
                             "INT64").points.append((start, at, int(requests)))
            if errors:
                self._series(VERTEX_METRIC + "error_count", labels, ENDPOINT_RESOURCE, resource, "DELTA",
                             "INT64").points.append((start, at, int(errors)))
            if latencies_ms:
                self._series(VERTEX_METRIC + "prediction_latencies", labels | {"latency_type": "model"},
                             ENDPOINT_RESOURCE, resource, "DELTA", "DISTRIBUTION").points.append(
                    (start, at, list(latencies_ms)))


def _ts(seconds: float) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(round(seconds * 1e9)))
    return stamp


def _seconds(stamp: Any) -> float:
    if stamp is None:
        return 0.0
    if hasattr(stamp, "timestamp"):  # proto-plus answers datetimes
        return float(stamp.timestamp())
    return stamp.seconds + stamp.nanos / 1e9


def _distribution(values: list[float]) -> Any:
    from google.api import distribution_pb2

    # explicit buckets in ms: Vertex publishes latencies as an exponential distribution; exact bounds
    # suffice for percentile reading
    bounds = sorted(set(values))
    counts = [sum(1 for v in values if v < bounds[0])] if bounds else [0]
    for i, bound in enumerate(bounds):
        upper = bounds[i + 1] if i + 1 < len(bounds) else float("inf")
        counts.append(sum(1 for v in values if bound <= v < upper))
    mean = sum(values) / len(values) if values else 0.0
    return distribution_pb2.Distribution(count=len(values), mean=mean,
                                         bucket_options=distribution_pb2.Distribution.BucketOptions(
                                             explicit_buckets=distribution_pb2.Distribution.BucketOptions.Explicit(
                                                 bounds=bounds)),
                                         bucket_counts=counts)


class MetricService:
    def __init__(self, state: MonitoringState):
        self.state = state

    def list_time_series(self, request: Any) -> Any:
        import grpc
        from google.cloud import monitoring_v3

        if not request.name.startswith("projects/"):
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid resource name {request.name!r}")
        clauses = parse_filter(request.filter)
        aligner = request.aggregation.per_series_aligner if request.aggregation else 0
        if aligner or (request.aggregation and request.aggregation.cross_series_reducer):
            raise RpcError(grpc.StatusCode.UNIMPLEMENTED, "the fake answers raw points only (no aggregation)")
        if not request.interval or not request.interval.end_time:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "Field interval.endTime is required")
        start, end = _seconds(request.interval.start_time), _seconds(request.interval.end_time)
        project = request.name.split("/")[1]
        out = []
        with self.state.lock:
            self.state.requests.append(f"ListTimeSeries {request.filter}")
            for series in self.state.series.values():
                if series.resource_labels.get("resource_container", series.resource_labels.get("project_id",
                                                                                                project)) != project:
                    continue
                if not matches(series, clauses):
                    continue
                points = [p for p in series.points if start <= p[1] <= end]
                if not points:
                    continue
                ts = monitoring_v3.TimeSeries(
                    metric={"type": series.metric_type, "labels": series.metric_labels},
                    resource={"type": series.resource_type, "labels": series.resource_labels},
                    metric_kind=series.kind, value_type=series.value_type)
                for p_start, p_end, value in sorted(points, key=lambda p: -p[1]):  # newest first, as the API
                    if series.value_type == "DISTRIBUTION":
                        typed = {"distribution_value": _distribution(value)}
                    elif series.value_type == "DOUBLE":
                        typed = {"double_value": float(value)}
                    else:
                        typed = {"int64_value": int(value)}
                    ts.points.append(monitoring_v3.Point(
                        interval={"start_time": _ts(p_start), "end_time": _ts(p_end)}, value=typed))
                out.append(ts)
        return monitoring_v3.ListTimeSeriesResponse(time_series=out)

    def create_time_series(self, request: Any) -> Any:
        import grpc
        from google.api import metric_pb2
        from google.protobuf import empty_pb2

        problem = rules.create_time_series_error(
            [(ts.metric.type, dict(ts.metric.labels), len(ts.points)) for ts in request.time_series])
        if problem:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, problem)
        with self.state.lock:
            self.state.requests.append(f"CreateTimeSeries {len(request.time_series)}")
            staged = []
            for ts in request.time_series:
                point = ts.points[0]
                end = _seconds(point.interval.end_time)
                # google.api's MetricKind is a raw protobuf enum: an int here, named through its descriptor
                kind = metric_pb2.MetricDescriptor.MetricKind.Name(int(ts.metric_kind)) if ts.metric_kind else "GAUGE"
                value_type = "DOUBLE" if "double_value" in point.value else "INT64"
                series = self.state._series(ts.metric.type, dict(ts.metric.labels), ts.resource.type,
                                            dict(ts.resource.labels), kind, value_type)
                if series.points and end <= series.points[-1][1]:
                    # https://cloud.google.com/monitoring/custom-metrics/creating-metrics#writing-ts
                    raise RpcError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "Points must be written in order. One or more of the points specified had an "
                                   "older start time than the most recent point.")
                value = point.value.double_value if value_type == "DOUBLE" else point.value.int64_value
                staged.append((series, (_seconds(point.interval.start_time) or end, end, value)))
            for series, point_tuple in staged:
                series.points.append(point_tuple)
        return empty_pb2.Empty()


def _handler(function: Any, request_type: Any, response_serializer: Any) -> Any:
    import grpc

    def behaviour(request: Any, context: Any) -> Any:
        try:
            return function(request)
        except RpcError as exc:
            context.abort(exc.code, exc.message)

    return grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=request_type.deserialize,
                                               response_serializer=response_serializer)


class MonitoringServer:
    """A gRPC server on 127.0.0.1 (free port) serving ``google.monitoring.v3.MetricService``."""

    def __init__(self, state: MonitoringState):
        import grpc
        from google.cloud import monitoring_v3

        service = MetricService(state)
        handlers = {
            "ListTimeSeries": _handler(service.list_time_series, monitoring_v3.ListTimeSeriesRequest,
                                       monitoring_v3.ListTimeSeriesResponse.serialize),
            "CreateTimeSeries": _handler(service.create_time_series, monitoring_v3.CreateTimeSeriesRequest,
                                         lambda message: message.SerializeToString()),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("google.monitoring.v3.MetricService", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def start(self) -> MonitoringServer:
        self.server.start()
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=None)
