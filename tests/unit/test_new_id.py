"""Resource ids made by the server (service.fhir.resources.new_id): valid FHIR ids
(https://hl7.org/fhir/R4/datatypes.html#id) that sort in the order they were made, as UUIDs of
version 7 do (RFC 9562, section 5.7), so the store's id-keyed B-trees take new ids at their end."""
from __future__ import annotations

import time
import uuid

from service.fhir.resources import is_addressable_id, new_id


def test_new_ids_are_valid_fhir_ids_and_version_7_uuids() -> None:
    made = [new_id() for _ in range(1000)]
    assert len(set(made)) == len(made)
    for value in made:
        assert is_addressable_id(value) and len(value) == 36
        assert uuid.UUID(value).version == 7


def test_new_ids_sort_in_the_order_they_were_made() -> None:
    made = []
    for _ in range(200):
        made.append(new_id())
        if len(made) % 50 == 0:
            time.sleep(0.002)   # across milliseconds, and within one
    assert made == sorted(made)


def test_a_new_id_carries_the_time_it_was_made() -> None:
    before = int(time.time() * 1000)
    value = new_id()
    after = int(time.time() * 1000)
    assert before <= uuid.UUID(value).int >> 80 <= after
