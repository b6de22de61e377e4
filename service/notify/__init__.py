"""Delivery channels: how a notification leaves the service (no database, no FHIR here).

    Outcome             what one attempt gave: delivered, or why not, and what that means
    EndpointPolicy      SSRF rules: which URLs and resolved addresses may be called
    RestHookSender      POST with requests (timeouts, no redirects, capped response, pinned IP)
    SmtpSender          email over SMTP (smtplib; plain text and HTML parts)
    sign / verify       Standard Webhooks signatures

Each sender turns every failure into an Outcome; none raises for a receiver's fault, so a
failing channel never stops the others.
"""
from __future__ import annotations

from service.notify.channels import Outcome
from service.notify.email import EmailMessageParts, SmtpSender, SmtpSettings
from service.notify.resthook import RestHookSender
from service.notify.signing import sign, signature_headers, verify
from service.notify.ssrf import EndpointPolicy, EndpointRefused

__all__ = ["EmailMessageParts", "EndpointPolicy", "EndpointRefused", "Outcome", "RestHookSender", "SmtpSender",
           "SmtpSettings", "sign", "signature_headers", "verify"]
