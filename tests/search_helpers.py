"""Test helpers for search: read Kibana Dev Tools text back, and the documented fusion
formulas written out a second time, independently of es_embed.search.fusion."""

from __future__ import annotations

import json
import re
from typing import Any

_REQUEST_LINE = re.compile(r"^(GET|POST|PUT|DELETE|HEAD) (\S+)$")


def parse_dev_console(text: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, body) per request, the way Kibana reads the console: a request line,
    then a JSON body up to the next blank line; lines starting with # are comments."""
    requests: list[tuple[str, str, dict[str, Any]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.startswith("#"):
            continue
        match = _REQUEST_LINE.match(line)
        assert match, f"not a request line: {line!r}"
        body_lines = []
        while i < len(lines) and lines[i].strip() and not _REQUEST_LINE.match(lines[i]):
            body_lines.append(lines[i])
            i += 1
        body = json.loads("\n".join(body_lines)) if body_lines else {}
        requests.append((match.group(1), match.group(2), body))
    return requests


def reference_rrf(
    legs: list[list[str]], rank_constant: int = 60, window: int = 100
) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for ids in legs:
        for r, doc in enumerate(ids[:window], start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (rank_constant + r)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def reference_linear(
    legs: list[list[tuple[str, float]]], weights: list[float], window: int = 100
) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for hits, w in zip(legs, weights, strict=True):
        top = hits[:window]
        if not top:
            continue
        low, high = min(s for _, s in top), max(s for _, s in top)
        for doc, s in top:
            mm = (s - low) / (high - low) if high > low else 1.0
            scores[doc] = scores.get(doc, 0.0) + w * mm
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def reference_auto(
    legs: list[list[tuple[str, float]]],
    weights: list[float],
    zeros: list[float],
    window: int = 100,
) -> list[tuple[str, float]]:
    """As ``--dev-console`` states it: ``sum of w * (e - f)``, ``e = max(0, (s - z) / (max -
    z))``, ``f`` = e of the leg's last hit when the leg returned ``window`` hits, else 0."""
    scores: dict[str, float] = {}
    for hits, w, z in zip(legs, weights, zeros, strict=True):
        top = hits[:window]
        if not top:
            continue
        best = max(s for _, s in top)

        def e(s: float, z: float = z, best: float = best) -> float:
            return max(0.0, (s - z) / (best - z)) if best > z else 0.0

        floor = e(min(s for _, s in top)) if len(top) == window else 0.0
        for doc, s in top:
            scores[doc] = scores.get(doc, 0.0) + w * (e(s) - floor)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def send(es: Any, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """What pasting one request into Kibana Dev Tools does (es: a sync Elasticsearch)."""
    headers = {"content-type": "application/json", "accept": "application/json"}
    return dict(es.perform_request(method, "/" + path, body=body, headers=headers).body)
