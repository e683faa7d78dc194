"""Prometheus metrics of the transformer (default registry, served on the ops port's /metrics).

- ``postwire_transformer_requests_total{outcome}``: Transform calls by outcome: ``changed``,
  ``unchanged``, ``invalid`` (INVALID_ARGUMENT), ``too_large`` (RESOURCE_EXHAUSTED), ``error`` (INTERNAL).
- ``postwire_transformer_request_duration_seconds{engine}``: wall time of a Transform call, queueing
  for a worker process included.
- ``postwire_transformer_html_parts_transformed_total{engine}``: text/html parts rewritten (CSS inlined
  and/or tracking placeholders added).
- ``postwire_transformer_bytes_total{direction}``: MIME bytes received (``in``) and returned (``out``).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

OUTCOMES: Final = ("changed", "unchanged", "invalid", "too_large", "error")

REQUESTS = Counter("postwire_transformer_requests", "Transform calls by outcome.", ["outcome"])
DURATION = Histogram(
    "postwire_transformer_request_duration_seconds",
    "Wall time of a Transform call, including the wait for a worker.",
    ["engine"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTML_PARTS = Counter(
    "postwire_transformer_html_parts_transformed",
    "text/html parts rewritten (CSS inlined and/or tracking added).",
    ["engine"],
)
BYTES = Counter("postwire_transformer_bytes", "MIME bytes received (in) and returned (out).", ["direction"])
