"""Prometheus metrics of the transformer (default registry, served on the ops port's /metrics).

- ``postwire_transformer_requests_total{outcome}``: Transform calls by outcome: ``changed``,
  ``unchanged``, ``invalid`` (INVALID_ARGUMENT), ``too_large`` (RESOURCE_EXHAUSTED: the message, or the
  transformed one, is over POSTWIRE_MAX_MESSAGE_SIZE), ``limit`` (RESOURCE_EXHAUSTED: the time limit,
  the memory limit, too many MIME parts or HTML tags, a worker that died on it), ``error`` (INTERNAL).
- ``postwire_transformer_worker_restarts_total{reason}``: worker processes killed and replaced:
  ``timeout`` (a message over POSTWIRE_TRANSFORM_TIMEOUT_S), ``died`` (the worker exited while
  transforming, e.g. past POSTWIRE_TRANSFORM_MEMORY_MB), ``cancelled`` (the client gave up mid-job).
- ``postwire_transformer_runs_total{place}``: messages transformed ``in_process`` (cheap enough, see
  postwire.transformer.cost) or sent to a ``worker`` process.
- ``postwire_transformer_request_duration_seconds{engine}``: wall time of a Transform call, queueing
  for a worker process included.
- ``postwire_transformer_html_parts_transformed_total{engine}``: text/html parts rewritten (CSS inlined
  and/or tracking placeholders added).
- ``postwire_transformer_bytes_total{direction}``: MIME bytes received (``in``) and returned (``out``).
- ``postwire_transformer_template_parts_total{result}``: text/html parts of templates
  (``TransformOptions.template``): ``transformed`` (rewritten with every tag kept in place) or
  ``unprotectable`` (left exactly as they were: a tag inside tag markup, a tag the inliner moved, copied
  or dropped, or HTML the inliner cannot read with the tags protected).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

OUTCOMES: Final = ("changed", "unchanged", "invalid", "too_large", "limit", "error")

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
WORKER_RESTARTS = Counter(
    "postwire_transformer_worker_restarts", "Worker processes killed and replaced, by reason.", ["reason"]
)
RUNS = Counter(
    "postwire_transformer_runs", "Messages transformed in the server process or in a worker.", ["place"]
)
TEMPLATE_PARTS = Counter(
    "postwire_transformer_template_parts",
    "text/html parts of templates: transformed with their tags kept, or left as they were (unprotectable).",
    ["result"],
)
