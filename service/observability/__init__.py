"""Seeing how the service is doing: Prometheus metrics (`metrics`, `multiproc`) and structured
JSON logs carrying request ids (`logs`). The HTTP side (/healthz, /readyz, /metrics and the
per-request hooks) is in service/api/observability.py."""
