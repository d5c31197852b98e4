"""Settings: declared once (type, default, doc), loaded at start-up into frozen dataclasses.

Sources, later wins: the dataclass defaults, the YAML file, then environment variables named
``ES_EMBED_<SECTION>_<KEY>`` (e.g. ``ES_EMBED_ELASTICSEARCH_URL``). Secrets (API keys,
passwords) come from the file or the environment, never from the command line.
Every error names the offending key, and suggests the closest known key for a typo.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from es_embed.config_checks import problems, read_text_file, read_yaml_mapping

ENV_PREFIX = "ES_EMBED_"
MAX_NUMBER = 2**63  # no setting needs more; Elasticsearch's own numbers are 64-bit
DEFAULT_QUERY_TASK = "Given a web search query, retrieve relevant passages that answer the query"


class ConfigError(ValueError):
    """A setting is missing, misspelt or out of range; the message names the key."""


def setting(default: Any, doc: str, *, secret: bool = False, alone: tuple[str, ...] = ()) -> Any:
    """A dataclass field that carries its own documentation (shown in errors and the example);
    ``alone``: words a list setting also takes bare, as a one-item list (``devices: auto``)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    # repr=False: a logged or printed Settings must never show a key or a password.
    meta = {"doc": doc, "secret": secret, "alone": alone}
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("127.0.0.1", "Address the HTTP API listens on.")
    port: int = setting(8080, "Port the HTTP API listens on.")
    max_body_bytes: int = setting(16 * 1024 * 1024, "Largest request body accepted (413 above).")
    max_inputs: int = setting(2048, "Most inputs in one /v1/embeddings request (413 above).")
    drain_seconds: float = setting(10.0, "On SIGTERM, time allowed for in-flight work to finish.")
    api_keys: tuple[str, ...] = setting(
        (), "Accepted bearer keys; prefer ES_EMBED_SERVER_API_KEYS (comma-separated).", secret=True
    )
    api_keys_file: str | None = setting(None, "File with one accepted bearer key per line.")
    protect_health: bool = setting(False, "Require an API key for /health.")
    protect_metrics: bool = setting(False, "Require an API key for /metrics.")


@dataclass(frozen=True)
class ModelSettings:
    name: str = setting("Qwen/Qwen3-Embedding-4B", "Hugging Face hub id or local directory.")
    served_name: str | None = setting(None, "Model id reported by the API (default: name).")
    aliases: tuple[str, ...] = setting((), "Other model names the API accepts for this model.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    devices: tuple[str, ...] = setting(
        (), "A replica per device: [cuda:0, cuda:1], [cpu, cpu], auto (every GPU).", alone=("auto",)
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting(
        "auto", "auto = bfloat16 on CUDA, float32 on CPU."
    )
    max_length: int = setting(8192, "Most tokens per input (capped at the model's limit).")
    truncation: Literal["truncate", "error"] = setting(
        "truncate", "What to do with longer inputs: cut them, or answer 400."
    )
    query_instruction: str = setting(DEFAULT_QUERY_TASK, "Task text put before queries.")
    trust_remote_code: bool = setting(False, "Allow model code from the model directory.")
    matryoshka: Literal["auto", "yes", "no"] = setting(
        "auto",
        "Whether the model was trained for Matryoshka truncation (index dims below its width); "
        "auto = it declares Matryoshka dims, or it is a known Matryoshka family (Qwen3).",
    )

    @property
    def model_id(self) -> str:
        """The served id: ``served_name``, else the hub id, else a local directory's name
        (a filesystem path is never shown to clients)."""
        if self.served_name:
            return self.served_name
        name = self.name.rstrip("/\\")
        if os.path.isabs(name) or name.startswith((".", "~")) or Path(name).is_dir():
            return Path(name).name or self.name
        return self.name


@dataclass(frozen=True)
class RerankerSettings:
    name: str | None = setting(None, "Reranker: hub id or local directory; empty = none.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting(
        "auto", "auto = bfloat16 on CUDA, float32 on CPU."
    )
    max_length: int = setting(8192, "Most tokens per pair, prompt included (capped: model's).")
    instruction: str = setting(DEFAULT_QUERY_TASK, "Qwen3-Reranker's <Instruct>; per request too.")


@dataclass(frozen=True)
class BatchSettings:
    max_batch_tokens: int = setting(
        0,
        "Token budget of one forward pass (padded length x n); 0 = auto: what free memory holds "
        "on CUDA, 16384 elsewhere. Lowered for a while after an out-of-memory error.",
    )
    max_batch_size: int = setting(64, "Most inputs in one forward pass.")
    query_queue: int = setting(512, "Most queued inputs on the query lane (429 above).")
    bulk_queue: int = setting(8192, "Most queued inputs on the bulk lane (429 above).")
    retry_after_seconds: int = setting(1, "Retry-After sent with a 429.")
    max_bulk_batch_ms: float = setting(
        100.0,
        "Cut every bulk batch to about this many ms of model time (from the measured speed); "
        "a query waits for a layer or two of it; 0 = no bound (token budget only).",
    )
    max_rerank_batch_ms: float = setting(
        100.0,
        "Cut every rerank batch to about this many ms of model time (from the reranker's "
        "measured speed), so an embedding query never waits long behind one; 0 = no bound.",
    )
    query_anticipation_ms: float = setting(
        5.0, "After answering a query, hold bulk work this long for the client's next query."
    )
    bulk_max_hold_ms: float = setting(
        1000.0, "Longest bulk work is held back by query_anticipation_ms holds in a row."
    )
    probe_interval_seconds: float = setting(1.0, "After a model failure, seconds between probes.")


@dataclass(frozen=True)
class ElasticsearchSettings:
    url: str = setting("http://localhost:9200", "Elasticsearch URL (comma-separate several).")
    api_key: str | None = setting(None, "API key (encoded form).", secret=True)
    username: str | None = setting(None, "Basic-auth user.")
    password: str | None = setting(None, "Basic-auth password.", secret=True)
    ca_certs: str | None = setting(None, "CA certificate file for TLS.")
    ssl_assert_fingerprint: str | None = setting(None, "SHA-256 fingerprint of the node's cert.")
    verify_certs: bool = setting(True, "Verify TLS certificates.")
    request_timeout: float = setting(30.0, "Seconds before an Elasticsearch request times out.")
    search_api_key: str | None = setting(
        None,
        "API key /v1/search runs with (encoded form; `es-embed setup --search-key` makes one "
        "that may only read the configured indices); none = the credentials above.",
        secret=True,
    )


@dataclass(frozen=True)
class FollowSettings:
    enabled: bool = setting(True, "Run the follower inside `es-embed serve`.")
    poll_interval: float = setting(0.5, "Seconds between checks of an idle shard.")
    page_size: int = setting(256, "Documents read and written per page.")
    state_index: str = setting("es-embed-state", "Index holding per-shard checkpoints.")
    max_backoff: float = setting(30.0, "Longest wait between retries while Elasticsearch is down.")
    give_up_seconds: float = setting(
        120.0,
        "One-shot commands (backfill) exit 1 after failing this long; serve retries forever.",
    )
    replica_id: str = setting(
        "", "This sidecar's name in shard leases and log lines; empty = host:pid."
    )
    lease_seconds: float = setting(
        30.0, "A shard lease lapses this long after its owner last renewed it."
    )


@dataclass(frozen=True)
class SearchSettings:
    allow_scripts: bool = setting(
        False, "Let /v1/search filters run scripts (script, script_score, function_score)."
    )


@dataclass(frozen=True)
class PassageSettings:
    max_tokens: int = setting(256, "Most tokens of one passage, title and specials included.")
    overlap_tokens: int = setting(32, "Tokens repeated from the passage before (<= max/2).")


@dataclass(frozen=True)
class IndexSettings:
    name: str = setting("", "Index, alias or data stream to keep filled.")
    text_fields: tuple[str, ...] = setting(("title", "text"), "Fields joined, in order, to embed.")
    vector_field: str = setting("embedding", "dense_vector field to fill.")
    dims: int = setting(0, "Vector length (Matryoshka truncation); 0 = the model's.")
    similarity: Literal["cosine", "dot_product", "max_inner_product"] = setting(
        "cosine", "dense_vector similarity."
    )
    index_options: str | None = setting(
        None, "hnsw, int8_hnsw, bbq_hnsw, flat, ... (default: the server's)."
    )
    analyzers: dict[str, str] = setting({}, "Analyzer per text field, e.g. {title: cjk}.")
    passages: PassageSettings | None = setting(None, "A vector per passage; null: per document.")


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    reranker: RerankerSettings = field(default_factory=RerankerSettings)
    batching: BatchSettings = field(default_factory=BatchSettings)
    elasticsearch: ElasticsearchSettings = field(default_factory=ElasticsearchSettings)
    follow: FollowSettings = field(default_factory=FollowSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    indices: tuple[IndexSettings, ...] = ()

    def index(self, name: str) -> IndexSettings:
        for conf in self.indices:
            if conf.name == name:
                return conf
        known = ", ".join(c.name for c in self.indices) or "none"
        raise ConfigError(f"index {name!r} is not configured (configured: {known})")


_SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "model": ModelSettings,
    "reranker": RerankerSettings,
    "batching": BatchSettings,
    "elasticsearch": ElasticsearchSettings,
    "follow": FollowSettings,
    "search": SearchSettings,
}


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the YAML file (if any), apply environment and explicit overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    env = os.environ if env is None else env
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    return settings_from_dict(raw, env)


def settings_from_dict(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    env = {} if env is None else env
    _reject_unknown(raw, [*_SECTIONS, "indices"], "")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{name}: expected a mapping, got {type(values).__name__}")
        sections[name] = _build(cls, values, name, env)
    indices_raw = raw.get("indices") or []
    if not isinstance(indices_raw, list):
        raise ConfigError(f"indices: expected a list, got {type(indices_raw).__name__}")
    indices = tuple(_build_index(item, f"indices[{i}]") for i, item in enumerate(indices_raw))
    names = [c.name for c in indices]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"indices: {sorted(dup)[0]!r} is configured more than once")
    settings = Settings(indices=indices, **sections)
    _validate(settings)
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        return read_yaml_mapping(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _reject_unknown(values: Mapping[str, Any], known: list[str], where: str) -> None:
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"unknown setting {where}{key!r}{hint}")


def _build(cls: type, values: Mapping[str, Any], section: str, env: Mapping[str, str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(values, list(fields), f"{section}.")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name in fields:
        env_key = f"{ENV_PREFIX}{section.upper()}_{name.upper()}"
        if env_key in env:
            kwargs[name] = _coerce(env[env_key], hints[name], env_key, from_env=True)
        elif name in values:
            value = values[name]
            if isinstance(value, str) and value in fields[name].metadata.get("alone", ()):
                value = [value]
            kwargs[name] = _coerce(value, hints[name], f"{section}.{name}")
    return cls(**kwargs)


def _build_index(item: Any, where: str) -> IndexSettings:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: expected a mapping with at least 'name'")
    if not item.get("name"):
        raise ConfigError(f"{where}.name: missing; every index entry needs a name")
    return typing.cast(IndexSettings, _build(IndexSettings, item, where, {}))


def _coerce(value: Any, hint: Any, key: str, from_env: bool = False) -> Any:
    """Check (and, for environment strings, parse) one value against its declared type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (from_env and value == ""):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, from_env)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        if origin is not dict:  # a nested section, e.g. an index's passages
            return _build(hint, value, key, {})
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        truthy, falsy = ("1", "true", "yes"), ("0", "false", "no")
        if from_env and isinstance(value, str) and value.lower() in truthy + falsy:
            return value.lower() in truthy
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        return _number(value, hint, key, from_env)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # "\ud800" in YAML, or undecodable environment bytes
            where = f"a lone surrogate at {exc.start}"
            raise ConfigError(f"{key}: not valid Unicode ({where})") from None
        return value
    return value


def _number(value: Any, hint: type, key: str, from_env: bool) -> Any:
    if from_env and isinstance(value, str):
        try:
            value = float(value) if hint is float else int(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if abs(value) > MAX_NUMBER:  # also keeps float() and str() of the value from failing
        raise ConfigError(f"{key}: too large (more than 2**63)")
    if hint is float:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    return int(value)


def _validate(s: Settings) -> None:
    for problem in problems(s):
        raise ConfigError(problem)


def api_keys(s: ServerSettings) -> frozenset[str]:
    """Accepted bearer keys: from the settings/environment and from api_keys_file."""
    keys = set(s.api_keys)
    if s.api_keys_file:
        try:
            lines = read_text_file(s.api_keys_file).splitlines()
        except ValueError as exc:
            where = f"server.api_keys_file: cannot read {s.api_keys_file!r}"
            raise ConfigError(f"{where}: {exc}") from None
        keys.update(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    return frozenset(keys)


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, doc) for every setting of a section, for docs and the example file."""
    out = []
    for f in dataclasses.fields(cls):
        factory: Any = f.default_factory
        default = f.default if f.default is not dataclasses.MISSING else factory()
        out.append((f.name, default, f.metadata.get("doc", "")))
    return out
