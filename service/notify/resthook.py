"""The rest-hook channel: POST a notification to a subscriber's endpoint with requests.

Every send: the endpoint is checked again (EndpointPolicy.resolve, after DNS resolution) and
the connection goes to the address that was checked (the host name still used for TLS SNI,
certificate checking and the Host header); connect and read timeouts; redirects are not
followed (a 3xx is a failure); at most `max_response_bytes` of the answer is read. The
Standard Webhooks headers are signed per attempt (a new timestamp, the same webhook-id).
"""
from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from service.notify.channels import Outcome
from service.notify.signing import signature_headers
from service.notify.ssrf import EndpointPolicy, EndpointRefused, Target

USER_AGENT = "toh-service-notifier/1"


class _PinnedAdapter(HTTPAdapter):
    """Connects to the checked address whatever the URL's host resolves to now."""

    def __init__(self, target: Target) -> None:
        self.target = target
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None
                                             ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = self.target.address
        if host_params.get("scheme") == "https":
            pool_kwargs["server_hostname"] = self.target.host
            pool_kwargs["assert_hostname"] = self.target.host
        return host_params, pool_kwargs


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP-date), None if absent or
    unreadable (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    current = datetime.fromtimestamp(now if now is not None else time.time(), timezone.utc)
    return max(0.0, (moment - current).total_seconds())


class RestHookSender:
    """Sends one signed POST per call (see module docstring); thread-safe (no shared session)."""

    def __init__(self, policy: EndpointPolicy, *, connect_timeout: float = 3.0, read_timeout: float = 10.0,
                 max_response_bytes: int = 64 * 1024) -> None:
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_response_bytes = max_response_bytes

    def send(self, endpoint: str, body: bytes, *, msg_id: str, secret: str | None,
             headers: Sequence[str] = (), content_type: str = "application/fhir+json",
             timestamp: int | None = None) -> Outcome:
        """POST body to endpoint; never raises for the receiver's or the network's faults."""
        try:
            target = self.policy.resolve(endpoint)
        except EndpointRefused as exc:
            return Outcome(False, str(exc), permanent=True)
        sent_headers = _channel_headers(headers)
        sent_headers.update({"Content-Type": content_type, "User-Agent": USER_AGENT,
                             "Host": target.url.netloc.rpartition("@")[2]})
        stamp = int(time.time()) if timestamp is None else timestamp
        if secret:
            sent_headers.update(signature_headers(secret, msg_id, stamp, body))
        else:
            sent_headers["webhook-id"] = msg_id
            sent_headers["webhook-timestamp"] = str(stamp)
        session = requests.Session()
        session.trust_env = False          # no proxies or .netrc from the environment
        session.mount(f"{target.url.scheme}://", _PinnedAdapter(target))
        try:
            with session.post(endpoint, data=body, headers=sent_headers, allow_redirects=False, stream=True,
                              timeout=(self.connect_timeout, self.read_timeout)) as response:
                self._drain(response)
                return self._outcome(response)
        except requests.Timeout as exc:
            return Outcome(False, f"timed out ({type(exc).__name__})")
        except requests.RequestException as exc:
            return Outcome(False, f"{type(exc).__name__}: {_short(exc)}")
        finally:
            session.close()

    def _drain(self, response: requests.Response) -> None:
        """Read at most max_response_bytes of the answer, within the read timeout overall."""
        deadline = time.monotonic() + self.read_timeout
        read = 0
        for chunk in response.iter_content(8192):
            read += len(chunk)
            if read >= self.max_response_bytes or time.monotonic() > deadline:
                break

    @staticmethod
    def _outcome(response: requests.Response) -> Outcome:
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(True, status=status)
        error = f"HTTP {status}"
        if 300 <= status < 400:
            return Outcome(False, f"{error} (redirects are not followed)", status=status)
        if status == 410:
            return Outcome(False, f"{error}: the receiver is gone", status=status, gone=True)
        retry_after = retry_after_seconds(response.headers.get("Retry-After")) if status in (429, 503) else None
        return Outcome(False, error, status=status, retry_after=retry_after)


def _channel_headers(headers: Sequence[str]) -> dict[str, str]:
    """The Subscription's channel.header lines ("Name: value") as a dict."""
    out: dict[str, str] = {}
    for line in headers:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."

