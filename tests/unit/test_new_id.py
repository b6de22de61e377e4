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


def test_a_forked_worker_does_not_repeat_its_masters_ids() -> None:
    """gunicorn forks its workers from a master that has built the app (and may have drawn ids):
    uuid_utils's generator, kept in the process, must not hand a worker the ids its master or
    a sibling draws next (two workers' creates in the same millisecond would collide)."""
    import os
    new_id()   # the generator is seeded in the master
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child reports through the pipe
        os.write(write, " ".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    parent = {new_id() for _ in range(50)}
    assert len(child) == 50
    assert not child & parent
    assert {value[24:] for value in child}.isdisjoint(value[24:] for value in parent)   # their last 48 random bits
