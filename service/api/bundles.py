"""POST [base]: batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction).

The view is listed twice in rest.INTERACTIONS (system interactions 'batch' and
'transaction', one route: the Bundle's type decides). The work is done by
service.store.bundles over the request's unit of work, so a transaction commits with the
request or not at all, and a batch keeps each entry in its own savepoint.
"""
from __future__ import annotations

from flask import Response

from service.api.context import base_url, current_uow, services
from service.api.negotiation import json_response, prefer_return, request_resource
from service.store.bundles import process_bundle


def batch_or_transaction() -> Response:
    """POST [base] with a batch or transaction Bundle; answers the response Bundle (200).

    Raises BadRequest if the body is not a batch or transaction Bundle, PayloadTooLarge
    (413) over the configured number of entries, and for a transaction the failing entry's
    error (EntryFailed: its status, naming the entry) — nothing of the bundle is kept then.
    """
    bundle = request_resource()
    response = process_bundle(current_uow().repo, bundle, base_url=base_url(),
                              max_entries=services().settings.max_bundle_entries,
                              minimal=prefer_return() == "minimal")
    return json_response(response)
