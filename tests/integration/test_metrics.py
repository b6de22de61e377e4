"""Prometheus metrics at /metrics (README, "Health, readiness and metrics"): requests by
interaction, type and status with latency histograms, flags raised by code, the sweep's duration
and items due, and the outbox's metrics as the outbox (issue 14) will feed them.

The metrics of one process accumulate over the test run, so each test compares the values
before and after what it does. The multiprocess mode under gunicorn is tested in
tests/e2e/test_observability_serve.py."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from service.observability import metrics
from tests.integration.test_clinical_watch import ORDER, PREGNANT_OBSERVATION, put
from tests.integration.test_sweep_concurrency import _condition as toh_condition

FHIR = {"Content-Type": "application/fhir+json"}


def scraped(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics, parsed: (sample name, sorted labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_are_counted_by_interaction_type_and_status_with_latency(client: Any) -> None:
    before = {
        "create": value("toh_http_requests_total", interaction="create", type="Patient", status="201"),
        "read": value("toh_http_requests_total", interaction="read", type="Patient", status="200"),
        "missing": value("toh_http_requests_total", interaction="read", type="Patient", status="404"),
        "search": value("toh_http_requests_total", interaction="search-type", type="Patient", status="200"),
        "odd": value("toh_http_requests_total", interaction="read", type="other", status="404"),
        "latency": value("toh_http_request_duration_seconds_count", interaction="create", type="Patient"),
    }
    created = client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient"}), headers=FHIR)
    assert created.status_code == 201
    pid = created.get_json()["id"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    assert client.get("/fhir/Patient/nobody").status_code == 404
    assert client.get("/fhir/Patient?gender=female").status_code == 200
    assert client.get("/fhir/NotAType123/x").status_code == 404     # a client cannot mint a label
    series = scraped(client)

    def delta(key: str, name: str, **labels: str) -> float:
        return series.get((name, tuple(sorted(labels.items()))), 0.0) - before[key]

    assert delta("create", "toh_http_requests_total", interaction="create", type="Patient", status="201") == 1
    assert delta("read", "toh_http_requests_total", interaction="read", type="Patient", status="200") == 1
    assert delta("missing", "toh_http_requests_total", interaction="read", type="Patient", status="404") == 1
    assert delta("search", "toh_http_requests_total", interaction="search-type", type="Patient", status="200") == 1
    assert delta("odd", "toh_http_requests_total", interaction="read", type="other", status="404") == 1
    assert delta("latency", "toh_http_request_duration_seconds_count", interaction="create", type="Patient") == 1
    assert not any("NotAType123" in str(labels) for _name, labels in series)
    # the histogram's buckets are cumulative and end with +Inf = count
    inf = series[("toh_http_request_duration_seconds_bucket", (("interaction", "create"), ("le", "+Inf"),
                                                               ("type", "Patient")))]
    assert inf == series[("toh_http_request_duration_seconds_count", (("interaction", "create"), ("type", "Patient")))]


def test_flags_raised_are_counted_by_code_once_committed(client: Any) -> None:
    code = "bisphosphonate-in-pregnancy"
    before = value("toh_flags_raised_total", code=code)
    put(client, {"resourceType": "Patient", "id": "p1", "gender": "female"})
    put(client, ORDER)
    assert value("toh_flags_raised_total", code=code) == before
    put(client, PREGNANT_OBSERVATION)                       # the rules raise the flag here
    assert value("toh_flags_raised_total", code=code) == before + 1
    put(client, PREGNANT_OBSERVATION | {"effectiveDateTime": "2026-01-03"})   # still raised: not again
    assert value("toh_flags_raised_total", code=code) == before + 1
    refused = client.put("/fhir/Observation/broken", data=json.dumps({"resourceType": "Observation"}), headers=FHIR)
    assert refused.status_code in (400, 422)                 # rolled back: nothing counted
    assert value("toh_flags_raised_total", code=code) == before + 1


def test_a_client_written_flag_is_not_counted(client: Any) -> None:
    before = sum(value("toh_flags_raised_total", code=c) for c in ("other", "bisphosphonate-in-pregnancy"))
    flag = {"resourceType": "Flag", "status": "active", "subject": {"reference": "Patient/p9"},
            "code": {"coding": [{"system": "http://example.org", "code": "bisphosphonate-in-pregnancy"}]}}
    put(client, {"resourceType": "Patient", "id": "p9"})
    assert client.post("/fhir/Flag", data=json.dumps(flag), headers=FHIR).status_code == 201
    assert sum(value("toh_flags_raised_total", code=c) for c in ("other", "bisphosphonate-in-pregnancy")) == before


def test_a_sweep_records_its_duration_and_items_due(app: Any, client: Any, clock: Any, monkeypatch: Any) -> None:
    """The metrics are the process's own, so a sweep run by another thread of this test
    process (a scheduler an earlier test left) may add to them: the sweeps of this test are
    told apart by their thread, and the totals must have grown by at least theirs."""
    import threading

    from service.scheduling import run_sweep
    svc = app.extensions["toh"]
    mine: list[tuple[float, int, float]] = []   # (seconds, items due, the gauge then) of this thread's sweeps
    real = metrics.observe_sweep

    def observing(seconds: float, handled: int, failed: int, deferred: int) -> None:
        real(seconds, handled, failed, deferred)
        if threading.current_thread() is this:
            mine.append((seconds, handled + failed + deferred, value("toh_sweep_items_due")))
    this = threading.current_thread()
    monkeypatch.setattr(metrics, "observe_sweep", observing)
    runs = value("toh_sweep_duration_seconds_count")
    handled = value("toh_sweep_items_total", outcome="handled")
    run_sweep(svc)
    assert len(mine) == 1 and mine[0][0] > 0 and mine[0][1] == 0 and mine[0][2] == 0
    assert value("toh_sweep_duration_seconds_count") >= runs + 1
    put(client, {"resourceType": "Patient", "id": "p1", "gender": "female"})
    put(client, toh_condition("p1"))                         # a plan whose follow-up Tasks fall due
    clock.advance(timedelta(days=800))                       # past its reviews and the 24-month check
    run_sweep(svc)
    assert len(mine) == 2
    due = mine[1][1]
    assert mine[1][2] == due                                  # the gauge holds the sweep's items due
    assert value("toh_sweep_duration_seconds_count") >= runs + 2
    assert due >= 1 and value("toh_sweep_items_total", outcome="handled") >= handled + due
    # the scrape shows the gauge (which another thread's sweep may set meanwhile: then either value)
    before = value("toh_sweep_items_due")
    shown = scraped(client)[("toh_sweep_items_due", ())]
    assert shown in (before, value("toh_sweep_items_due"))


def test_outbox_metrics_are_ready_for_the_outbox(client: Any) -> None:
    outbox = metrics.outbox_metrics()
    assert metrics.outbox_metrics() is outbox                # registered once per process
    attempts = value("toh_delivery_attempts_total", channel="email", outcome="delivered")
    outbox.attempt("email", "delivered")

    def probe(database: Any) -> None:                          # as the outbox would measure its queue
        assert database is client.application.extensions["toh"].database
        outbox.observe_queue(depth=3, oldest_age_seconds=42.5)

    def broken(_database: Any) -> None:
        raise RuntimeError("a broken probe")

    metrics.add_scrape_probe(broken)
    metrics.add_scrape_probe(probe)
    try:
        series = scraped(client)
    finally:
        metrics._probes.clear()  # noqa: SLF001
    assert series[("toh_outbox_depth", ())] == 3
    assert series[("toh_outbox_oldest_age_seconds", ())] == 42.5
    assert series[("toh_delivery_attempts_total", (("channel", "email"), ("outcome", "delivered")))] == attempts + 1
