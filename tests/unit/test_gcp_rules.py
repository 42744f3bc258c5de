"""GCP label normalisation and the service rules the GCP program is checked against."""
from __future__ import annotations

import pytest

from mlplat_providers.gcp import labels as gl
from mlplat_providers.gcp import service_rules as sr


@pytest.mark.parametrize("value,label", [
    ("CC-1042", "cc-1042"), ("search-ml@example.com", "search-ml_at_example_com"), ("staging", "staging"),
    ("Team Search/EU", "team_search_eu"), ("", ""),
])
def test_values_normalise_deterministically(value, label):
    assert gl.normalise_value(value, key="k") == label
    assert gl.label_problem("k", label) is None


def test_long_values_keep_a_digest_so_they_stay_distinct():
    a, b = "x" * 70 + "a", "x" * 70 + "b"
    la, lb = gl.normalise_value(a), gl.normalise_value(b)
    assert len(la) == len(lb) == 63 and la != lb and la == gl.normalise_value(a)


def test_keys_start_with_a_letter():
    assert gl.normalise_key("Cost-Center") == "cost-center"
    assert gl.normalise_key("2fa") == "k_2fa"
    assert gl.label_problem(gl.normalise_key("2fa"), "x") is None


def test_originals_are_kept_for_what_labels_cannot_hold():
    tags = {"team": "search", "cost-center": "CC-2077", "owner": "search-ml@example.com"}
    assert gl.originals(tags) == {"cost-center": "cost-center=CC-2077", "owner": "owner=search-ml@example.com"}
    assert gl.describe("bucket", tags) == "bucket [cost tags: cost-center=CC-2077; owner=search-ml@example.com]"
    assert gl.describe("bucket", {"team": "search"}) == "bucket"


@pytest.mark.parametrize("tags,needle", [
    ({"owner": "研究チーム"}, "cannot be a GCP label value"),
    ({"owner": "!!!"}, "cannot be a GCP label value"),
    ({"???": "x"}, "cannot be a GCP label key"),
    ({"cost.center": "a", "cost_center": "b"}, "both become the GCP label key"),
    ({f"k{i}": "v" for i in range(65)}, "at most 64 labels"),
])
def test_tags_that_cannot_be_labels_are_refused_with_the_fix(tags, needle):
    with pytest.raises(gl.LabelError) as info:
        gl.labels_from_tags(tags)
    assert needle in info.value.message and info.value.hint


def test_label_problem_refuses_what_gcp_refuses():
    assert gl.label_problem("Team", "x") and gl.label_problem("team", "X") and gl.label_problem("team", "a" * 64)
    assert gl.label_problem("_team", "x") and gl.label_problem("team", "a.b")


@pytest.mark.parametrize("fn,good,bad", [
    (sr.bucket_name_problem, "mlplat-search-staging-artifacts", ["ab", "Upper", "-lead", "goog-x", "my-google-b"]),
    (sr.service_account_id_problem, "ml-search-platform", ["short", "9starts", "ends-", "x" * 31]),
    (sr.repository_id_problem, "mlplat-search", ["Mlplat", "-x", "x-", "a" * 64]),
    (sr.cloud_run_name_problem, "mlplat-server", ["a" * 50, "Server", "1x"]),
    (sr.dataset_id_problem, "mlplat_requests", ["a-b", "a.b"]),
    (lambda v: sr.feature_resource_problem(v), "search_online", ["9x", "a-b", "a" * 61]),
    (sr.role_problem, "roles/aiplatform.user", ["roles/owner", "roles/editor", "admin"]),
])
def test_name_rules(fn, good, bad):
    assert fn(good) is None
    for value in bad:
        assert fn(value), value


def test_sql_instance_counts_the_project_in_its_length():
    assert sr.sql_instance_problem("mlplat-ledger", "acme-search-ml") is None
    assert "98" in sr.sql_instance_problem("a" * 70, "p" * 30)


def test_metric_types_must_be_published():
    assert sr.metric_type_problem("aiplatform.googleapis.com/prediction/online/error_count") is None
    assert sr.metric_type_problem("custom.googleapis.com/mlplat/drift/share") is None
    assert "not one Vertex AI publishes" in sr.metric_type_problem("aiplatform.googleapis.com/prediction/online/bogus")
    assert "published neither" in sr.metric_type_problem("custom.googleapis.com/other/x")
    assert sr.filter_metric_types('metric.type="a/b" AND resource.type="c"') == ["a/b"]


def test_settings_patterns():
    import re

    assert re.match(sr.BILLING_ACCOUNT, "01A2B3-C4D5E6-F7A8B9") and not re.match(sr.BILLING_ACCOUNT, "0123")
    assert sr.MACHINE_TYPE_RE.match("n1-standard-4") and sr.MACHINE_TYPE_RE.match("e2-custom-2-4096")
    assert not sr.MACHINE_TYPE_RE.match("ml.m5.large")
    assert re.match(sr.KMS_KEY, "projects/acme-kms/locations/europe-west4/keyRings/ml/cryptoKeys/search")
