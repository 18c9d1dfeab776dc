"""Reading `/metrics` the way Prometheus does (prometheus-client's own text parser)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def families(text: str) -> dict[str, Any]:
    """The exposition's metric families by name (a counter's name without `_total`)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def scrape(client: Any, **kwargs: Any) -> dict[str, Any]:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    return families(response.text)


def samples(scraped: dict[str, Any], family: str, sample: str) -> list[Sample]:
    """The samples called `sample` of `family` (empty when the family has none yet)."""
    found = scraped.get(family)
    return [s for s in found.samples if s.name == sample] if found is not None else []


def value(scraped: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    """The value of the one sample with exactly these labels (0 when there is none yet)."""
    for s in samples(scraped, family, sample):
        if s.labels == labels:
            return float(s.value)
    return 0.0
