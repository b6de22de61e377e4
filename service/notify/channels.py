"""What one delivery attempt gave."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One attempt: delivered, or the error; `status` is the HTTP status (None: no answer or
    not HTTP); `retry_after` seconds asked by a 429/503; `gone` when the receiver said 410 (the
    subscription is to be disabled); `permanent` when retrying cannot help (a refused endpoint)."""

    delivered: bool
    error: str | None = None
    status: int | None = None
    retry_after: float | None = None
    gone: bool = False
    permanent: bool = False

    def describe(self) -> str:
        """A short text for the attempt's record."""
        if self.delivered:
            return f"delivered (HTTP {self.status})" if self.status else "delivered"
        return self.error or f"HTTP {self.status}"
