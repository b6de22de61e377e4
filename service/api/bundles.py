"""POST [base]: batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction).

The view is listed twice in rest.INTERACTIONS (system interactions 'batch' and
'transaction', one route: the Bundle's type decides). The work is done by
service.store.bundles over the request's unit of work, so a transaction commits with the
request or not at all, and a batch keeps each entry in its own savepoint. Search entries
(GET [type]?params) run through service.store.search.searchset, as the search routes do.
"""
from __future__ import annotations

from typing import Any

from flask import Response

from service.api.auth import guard
from service.api.context import base_url, current_uow, services
from service.api.negotiation import json_response, prefer_return, prefer_strict, request_resource
from service.api.search import owned_only
from service.store.bundles import Criteria, prechecked_creates, process_bundle
from service.store.search.searchset import searchset


def batch_or_transaction() -> Response:
    """POST [base] with a batch or transaction Bundle; answers the response Bundle (200).

    Search entries answer with their searchset Bundle; under Prefer: handling=strict an
    unknown or malformed search parameter fails the entry (400).

    Raises BadRequest if the body is not a batch or transaction Bundle, PayloadTooLarge
    (413) over the configured number of entries, and for a transaction the failing entry's
    error (EntryFailed: its status, naming the entry) — nothing of the bundle is kept then.
    """
    bundle = request_resource()
    access = guard()
    database = services().database
    max_entries = services().settings.max_bundle_entries
    # before the unit of work (and on SQLite its write lock): what depends on the resources alone,
    # and the index rows that do not depend on the ids the transaction assigns
    checked = prechecked_creates(bundle, database.prepare_create, max_entries)
    uow = current_uow()
    base = base_url()
    strict = prefer_strict()

    def search(res_type: str, params: Criteria) -> dict[str, Any]:
        compartment = access.search_compartment(res_type, None)
        return searchset(services().search, uow.conn, res_type, owned_only(res_type, list(params)), base_url=base,
                         now=uow.clock.now(),
                         strict=strict, compartment=compartment, visible=access.visible)

    response = process_bundle(uow.repo, bundle, base_url=base, max_entries=max_entries,
                              minimal=prefer_return() == "minimal", search=search, guard=access, checked=checked)
    return json_response(response)
