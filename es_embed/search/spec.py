"""A search request, validated once for every front end (HTTP API, CLI, bench).

``spec_from_json`` turns a decoded JSON object into a ``SearchSpec`` and names the
offending field in every error, so the API answers 400 with ``param`` set and the CLI
prints one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from es_embed.errors import invalid, valid_unicode
from es_embed.search.boundary import check_filter

Mode = Literal["bm25", "knn", "hybrid"]
Fusion = Literal["auto", "rrf", "linear", "sum", "native_rrf", "native_linear"]
Source = bool | list[str] | dict[str, Any] | None

MODES: tuple[Mode, ...] = ("bm25", "knn", "hybrid")
FUSIONS: tuple[str, ...] = (
    "auto", "rrf", "linear", "sum", "native", "native_rrf", "native_linear",
)  # fmt: skip
# Hybrid without a fusion: relative-evidence fusion (search/fusion.py ``auto``), which does not
# let a leg that cannot tell its hits apart override the other (README, "Retrieval quality").
DEFAULT_FUSION: Fusion = "auto"
# Fused here, from one _msearch of both legs (every licence).
CLIENT_FUSIONS = ("auto", "rrf", "linear")
LEGS = ("bm25", "knn")
# Elasticsearch's own ceilings: index.max_result_window and knn's num_candidates.
MAX_WINDOW = 10_000
MAX_NUM_CANDIDATES = 10_000
DEFAULT_WINDOW = 100
DEFAULT_RANK_CONSTANT = 60
DEFAULT_PASSAGES = 3
MAX_PASSAGES = 100  # Elasticsearch's index.max_inner_result_window
# Elasticsearch reads rank_constant as a Java int.
MAX_RANK_CONSTANT = 2**31 - 1
# Weights only matter relative to each other (linear) or to the other leg's scale (sum); a
# bound keeps every fused score finite (two legs at 1.7e308 would sum to Infinity).
MAX_WEIGHT = 1e6


@dataclass(frozen=True)
class SearchSpec:
    index: str
    query: str
    mode: Mode = "hybrid"
    fusion: Fusion = DEFAULT_FUSION
    k: int = 10  # page size
    from_: int = 0
    filter: tuple[dict[str, Any], ...] = ()  # query DSL objects, applied to every leg
    weights: Mapping[str, float] = field(default_factory=lambda: {"bm25": 1.0, "knn": 1.0})
    source: Source = None  # None: everything but the vector field
    window: int = DEFAULT_WINDOW  # hits per leg that are fused; pages come from inside it
    rank_constant: int = DEFAULT_RANK_CONSTANT
    num_candidates: int | None = None  # None: max(100, 2 * the knn leg's k)
    passages: int = DEFAULT_PASSAGES  # best passages per hit, on an index with passages
    rerank: int | None = None  # rerank the ranked list's top N in the sidecar (None: no)

    def __post_init__(self) -> None:
        _check_int(self.window, "window", 1, MAX_WINDOW)
        _check_int(self.k, "k", 1, None)
        if self.k > self.window:
            raise invalid(
                f"k ({self.k}) must not exceed window ({self.window}): pages come from inside "
                "the fused window",
                "k",
            )
        _check_int(self.from_, "from", 0, MAX_WINDOW)
        _check_int(self.rank_constant, "rank_constant", 1, MAX_RANK_CONSTANT)
        if self.num_candidates is not None:
            _check_int(self.num_candidates, "num_candidates", self.window, MAX_NUM_CANDIDATES)
        _check_int(self.passages, "passages", 0, MAX_PASSAGES)
        if self.rerank is not None:
            # The reranked list is the fused window (or a single leg's first window hits).
            _check_int(self.rerank, "rerank.window", 1, self.window)

    @property
    def needs_vector(self) -> bool:
        return self.mode != "bm25"

    @property
    def client_fusion(self) -> bool:
        """Two legs in one _msearch, fused here (works on every licence)."""
        return self.mode == "hybrid" and self.fusion in CLIENT_FUSIONS


_KNOWN = (
    "index", "query", "mode", "fusion", "k", "from", "filter", "weights", "source",
    "window", "rank_constant", "num_candidates", "passages", "rerank",
)  # fmt: skip


def spec_from_json(raw: Any, *, allow_scripts: bool = False) -> SearchSpec:
    """Validate a decoded JSON request body; every error names its field.

    The filter may read only the searched index (``boundary``); scripts in it pass only
    with ``allow_scripts`` (the ``search.allow_scripts`` setting).
    """
    if not isinstance(raw, Mapping):
        raise invalid("the request body must be a JSON object", None)
    for key in raw:
        if key not in _KNOWN:
            raise invalid(f"unknown field {key!r}; known fields: {', '.join(_KNOWN)}", str(key))
    index = _string(raw.get("index"), "index")
    query = _string(raw.get("query"), "query")
    mode = raw.get("mode", "hybrid")
    if mode not in MODES:
        raise invalid(f"mode must be one of {', '.join(MODES)}, got {mode!r}", "mode")
    fusion = raw.get("fusion", DEFAULT_FUSION)
    if fusion not in FUSIONS:
        raise invalid(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}", "fusion")
    if fusion == "native":
        fusion = "native_rrf"
    num_candidates = raw.get("num_candidates")
    return SearchSpec(
        index=index,
        query=query,
        mode=cast(Mode, mode),
        fusion=cast(Fusion, fusion),
        k=_int(raw.get("k", 10), "k"),
        from_=_int(raw.get("from", 0), "from"),
        filter=parse_filter(raw.get("filter"), allow_scripts=allow_scripts),
        weights=parse_weights(raw.get("weights")),
        source=parse_source(raw.get("source")),
        window=_int(raw.get("window", DEFAULT_WINDOW), "window"),
        rank_constant=_int(raw.get("rank_constant", DEFAULT_RANK_CONSTANT), "rank_constant"),
        num_candidates=None if num_candidates is None else _int(num_candidates, "num_candidates"),
        passages=_int(raw.get("passages", DEFAULT_PASSAGES), "passages"),
        rerank=parse_rerank(raw.get("rerank")),
    )


def parse_rerank(value: Any, param: str = "rerank") -> int | None:
    """``{"window": N}``: how many of the ranked list's first hits the reranker rescores."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise invalid(f'{param} must be an object like {{"window": 50}}', param)
    for key in value:
        if key != "window":
            where = f"{param}.{key}"
            raise invalid(f"{where}: unknown field; rerank has one field, window", where)
    if "window" not in value:
        raise invalid(f"{param}.window is required: how many top hits to rerank", f"{param}.window")
    return _int(value["window"], f"{param}.window")


def parse_filter(
    value: Any, param: str = "filter", *, allow_scripts: bool = False
) -> tuple[dict[str, Any], ...]:
    """One query DSL object or a list of them (ANDed, as in a bool filter), reading nothing
    but the searched index."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        where = param if not isinstance(value, list) else f"{param}[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise invalid(
                f"{where} must be a query DSL object with one key, e.g. "
                '{"term": {"lang": "en"}}',
                where,
            )
        check_filter(item, where, allow_scripts=allow_scripts)
    return tuple(items)


def parse_weights(value: Any, param: str = "weights") -> dict[str, float]:
    weights = {"bm25": 1.0, "knn": 1.0}
    if value is None:
        return weights
    if not isinstance(value, Mapping):
        raise invalid(f'{param} must be an object like {{"bm25": 1.0, "knn": 1.0}}', param)
    for key, w in value.items():
        where = f"{param}.{key}"
        if key not in LEGS:
            raise invalid(f"{where}: unknown leg; legs are bm25 and knn", where)
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= MAX_WEIGHT:
            raise invalid(f"{where} must be a number from 0 to {MAX_WEIGHT:g}, got {w!r}", where)
        weights[key] = float(w)
    if not any(weights.values()):
        raise invalid(f"{param}: at least one weight must be above 0", param)
    return weights


_SOURCE_KEYS = ("includes", "excludes", "include", "exclude")


def parse_source(value: Any, param: str = "source") -> Source:
    """true, false, a list of field names, or ``{includes, excludes}`` (strings or lists)."""
    if value is None or isinstance(value, bool):
        return cast(Source, value)
    if _field_names(value):
        return list(value)
    if isinstance(value, dict):
        for key, fields in value.items():
            where = f"{param}.{key}"
            if key not in _SOURCE_KEYS:
                raise invalid(f"{where}: unknown key; a source filter has includes and "
                              "excludes", where)  # fmt: skip
            if not isinstance(fields, str) and not _field_names(fields):
                raise invalid(f"{where} must be a field name or a list of them", where)
        return dict(value)
    raise invalid(f"{param} must be true, false, a list of field names or a source filter", param)


def _field_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{param} must be a non-empty string", param)
    return valid_unicode(value, param)


def _int(value: Any, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{param} must be an integer, got {value!r}", param)
    return value


def _check_int(value: int, param: str, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{param} must be an integer, got {value!r}", param)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise invalid(f"{param} must be {bound}, got {value}", param)
