"""The index-size precheck's quick bound decides exactly as the estimate does.

IndexSizeEstimator.exceeds(resource, limit) first compares leaves(resource) * parts with the
limit and only then runs the per-path estimate; it must answer estimate(resource, limit) > limit
for every resource and limit. Checked on every resource of the R4 examples package and of the
Synthea-shaped bundles bench_ingest posts, at limits on both sides of each resource's estimate.
"""
from __future__ import annotations

from typing import Any

import pytest

from service import _search_parameters
from service.fhir.search.index_size import IndexSizeEstimator, leaves
from tests.data.synthea.generator import synthea_bundle


def limits_around(estimator: IndexSizeEstimator, resource: dict[str, Any]) -> list[int]:
    """Limits below, at and above the resource's estimate, and where the quick bound sits."""
    exact = estimator.estimate(resource)
    quick = leaves(resource) * sum(estimator.paths(str(resource.get("resourceType"))).values())
    return sorted({0, 1, max(exact - 1, 0), exact, exact + 1, max(quick - 1, 0), quick, quick + 1, 50_000})


def assert_same_decisions(estimator: IndexSizeEstimator, resources: list[dict[str, Any]]) -> int:
    checked = 0
    for resource in resources:
        for limit in limits_around(estimator, resource):
            assert estimator.exceeds(resource, limit) == (estimator.estimate(resource, limit) > limit), \
                (resource.get("resourceType"), resource.get("id"), limit)
            checked += 1
    return checked


def test_the_quick_bound_decides_as_the_estimate_on_the_bench_bundles() -> None:
    estimator = IndexSizeEstimator(_search_parameters())
    resources = [e["resource"] for seed in (1, 2) for e in synthea_bundle(seed, 14)["entry"]]
    assert assert_same_decisions(estimator, resources) > 1000
    # and the quick bound is what answers a resource of ordinary size
    assert all(leaves(r) * sum(estimator.paths(r["resourceType"]).values()) <= 50_000 for r in resources)


def test_a_resource_over_the_bound_is_still_refused() -> None:
    estimator = IndexSizeEstimator(_search_parameters())
    patient = {"resourceType": "Patient", "name": [{"family": f"F{i}", "given": [f"G{i}"]} for i in range(30_000)]}
    assert estimator.exceeds(patient, 50_000)
    assert not estimator.exceeds(patient, estimator.estimate(patient))
    assert not estimator.exceeds({"resourceType": 3}, 0)


@pytest.mark.slow
def test_the_quick_bound_decides_as_the_estimate_on_every_r4_example() -> None:
    from tests.unit.search.test_search_accessors import all_examples
    estimator = IndexSizeEstimator(_search_parameters())
    resources = [resource for items in all_examples().values() for _, resource in items]
    assert assert_same_decisions(estimator, resources) > 20_000
