"""How Prometheus names appear: metric names in PromQL and the sample names each metric type exposes."""

from __future__ import annotations

import re

# a Postwire metric name inside a PromQL expression or a document
METRIC = re.compile(r"\bpostwire_[a-z0-9_]+\b")

# the sample names a family of each type exposes (prometheus_client's exposition)
SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}
