"""Transactions posted by real FHIR clients from PyPI (fhirpy, fhirclient) to a real `toh serve`."""
from __future__ import annotations


import pytest
import requests
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

from tests.data.synthea.generator import synthea_bundle
from tests.integration.test_bundles import references

pytestmark = pytest.mark.slow


def history_total(base: str) -> int:
    return requests.get(f"{base}/_history", timeout=10).json()["total"]


def test_fhirpy_posts_a_synthea_transaction_and_reads_it_back(live_server) -> None:  # type: ignore[no-untyped-def]
    client = SyncFHIRClient(live_server.base, extra_headers={"Content-Type": "application/fhir+json"})
    bundle = synthea_bundle(seed=11, encounters=2, conditional=False)
    response = client.execute("", method="post", data=bundle)
    assert response["type"] == "transaction-response"
    assert len(response["entry"]) == len(bundle["entry"])
    checked: set[str] = set()
    for sent, got in zip(bundle["entry"], response["entry"]):
        assert got["response"]["status"] == "201 Created"
        assert got["response"]["location"].startswith(live_server.base + "/")
        res_type, res_id = got["fullUrl"].rsplit("/", 2)[-2:]
        assert res_type == sent["resource"]["resourceType"]
        stored = client.reference(res_type, res_id).to_resource()
        assert stored["meta"]["versionId"] == "1"
        for ref in references(stored.serialize()):
            assert not ref.startswith("urn:"), ref
            if ref not in checked:
                client.reference(*ref.split("/")).to_resource()  # raises ResourceNotFound if dangling
                checked.add(ref)
    assert len(checked) >= 10

    before = history_total(live_server.base)
    broken = synthea_bundle(seed=12, encounters=2, conditional=False)
    broken["entry"][-3]["resource"]["status"] = {"not": "a code"}
    with pytest.raises(OperationOutcome) as failure:
        client.execute("", method="post", data=broken)
    assert f"Bundle.entry[{len(broken['entry']) - 3}]" in str(failure.value)
    assert history_total(live_server.base) == before


def test_fhirclient_posts_a_transaction_and_a_batch(live_server) -> None:  # type: ignore[no-untyped-def]
    server = FHIRServer(None, base_uri=live_server.base + "/")
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:4a1c", "resource": {"resourceType": "Condition", "code": {"text": "TOH left hip"},
                                                  "subject": {"reference": "urn:uuid:9b2d"}},
         "request": {"method": "POST", "url": "Condition"}},
        {"fullUrl": "urn:uuid:9b2d", "resource": {"resourceType": "Patient", "id": "toh-1", "gender": "female"},
         "request": {"method": "PUT", "url": "Patient/toh-1"}},
    ]}
    got = server.post_json("", transaction).json()
    assert [e["response"]["status"] for e in got["entry"]] == ["201 Created", "201 Created"]
    condition = server.request_json(got["entry"][0]["fullUrl"].replace(live_server.base + "/", ""))
    assert condition["subject"]["reference"] == "Patient/toh-1"

    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/toh-1"}},
        {"request": {"method": "GET", "url": "Patient/nobody"}},
        {"resource": {"resourceType": "Patient", "id": "toh-1", "gender": "other"},
         "request": {"method": "PUT", "url": "Patient/toh-1", "ifMatch": 'W/"1"'}},
    ]}
    got = server.post_json("", batch).json()
    assert [e["response"]["status"] for e in got["entry"]] == ["200 OK", "404 Not Found", "200 OK"]
    assert got["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert server.request_json("Patient/toh-1")["gender"] == "other"
