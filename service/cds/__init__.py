"""CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/): the TOH rules inside the EHR, at the moment a
clinician opens a chart or signs an order. Pure over plain JSON, apart from remote.py (which
reads the EHR's FHIR server with requests); service.api.cds_hooks serves it.

    discovery()                                   GET  /cds-services
    parse_hook_request(body, SERVICES[id])        POST /cds-services/{id}
    read_prefetch(...) / remote.fetch(...)        the patient's resources
    patient_view(...) / judge_orders(...)         cards, from service.clinical.assess
    parse_feedback(body)                          POST /cds-services/{id}/feedback

Modules: services (the three services, prefetch templates), request, prefetch, remote,
cards (card shapes, advice, indicators), judge (the decisions), feedback.
"""
from __future__ import annotations

from .cards import CardContext
from .feedback import Feedback, parse_feedback
from .judge import judge_orders, patient_view
from .prefetch import read_prefetch
from .request import HookRequest, parse_hook_request
from .services import ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW, SERVICES, TEMPLATES, CdsService, Template, discovery

__all__ = ["ORDER_SELECT", "ORDER_SIGN", "PATIENT_VIEW", "SERVICES", "TEMPLATES", "CardContext", "CdsService",
           "Feedback", "HookRequest", "Template", "discovery", "judge_orders", "parse_feedback",
           "parse_hook_request", "patient_view", "read_prefetch"]
