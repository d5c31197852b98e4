"""What a setting must be beyond its type: numbers in range, Elasticsearch names and field
paths that cannot destroy or flood data, URLs the client can use, files that can be read,
and a YAML loader that refuses duplicate keys.

Pure: ``problems(settings)`` yields one-line messages, each starting with the setting it
names; ``config.py`` raises the first as a ConfigError. Nothing here imports ``config`` at
run time, so the settings module stays the one place settings are declared.
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from es_embed.config import IndexSettings, Settings

MAX_VECTOR_DIMS = 4096
# Elasticsearch's default index.max_result_window: a page past it fails on every read.
MAX_PAGE_SIZE = 10_000
WEEK = 7 * 24 * 3600.0  # no wait or timeout needs longer; larger values overflow timers
INF = math.inf
MAX_TEXT_FILE = 8 * 2**20  # bytes; settings and key files are a few KiB
EMBED_FIELD = "_embed"  # where the follower keeps each vector's hash, model and time

# Ranges. Counts and sizes: > 0 (optional ones: 0 = auto). Waits: > 0 and at most a week.
# Optional waits (0 = none): >= 0 and at most a week (the _ms ones in milliseconds).
COUNTS = (
    "server.max_body_bytes server.max_inputs model.max_length reranker.max_length "
    "batching.max_batch_size batching.query_queue batching.bulk_queue"
).split()
OPTIONAL_COUNTS = ["batching.max_batch_tokens"]
WAITS = (
    "batching.probe_interval_seconds elasticsearch.request_timeout follow.poll_interval "
    "follow.max_backoff follow.give_up_seconds follow.lease_seconds"
).split()
OPTIONAL_WAITS = "server.drain_seconds batching.retry_after_seconds".split()
OPTIONAL_WAITS_MS = (
    "batching.max_bulk_batch_ms batching.max_rerank_batch_ms batching.query_anticipation_ms "
    "batching.bulk_max_hold_ms"
).split()
# setting -> (may it be 0?, largest allowed)
BOUNDS: dict[str, tuple[bool, float]] = {
    "server.port": (False, 65535),
    "follow.page_size": (False, MAX_PAGE_SIZE),
    **dict.fromkeys(COUNTS, (False, INF)),
    **dict.fromkeys(OPTIONAL_COUNTS, (True, INF)),
    **dict.fromkeys(WAITS, (False, WEEK)),
    **dict.fromkeys(OPTIONAL_WAITS, (True, WEEK)),
    **dict.fromkeys(OPTIONAL_WAITS_MS, (True, WEEK * 1000)),
}
WHY_BOUND = {"follow.page_size": " (Elasticsearch's default index.max_result_window)"}

# One entry of model.devices ("auto" stands alone); "cuda" is cuda:0, as torch reads it.
DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")

# Characters Elasticsearch refuses in index names (':' is the remote-cluster separator).
FORBIDDEN_NAME_CHARS = '\\/*?"<>|,# :'


def problems(s: Settings) -> Iterator[str]:
    """Every problem of ``s``, in the order of the settings, each naming its setting."""
    yield from _number_problems(s)
    yield from _device_problems(s)
    state = s.follow.state_index
    if problem := index_name_problem(state):
        yield f"follow.state_index: {problem}"
    if s.elasticsearch.ca_certs and (problem := file_problem(s.elasticsearch.ca_certs)):
        yield f"elasticsearch.ca_certs: {problem}"
    for url in split_urls(s.elasticsearch.url) or [""]:
        if problem := url_problem(url):
            yield f"elasticsearch.url: {problem}"
    for i, conf in enumerate(s.indices):
        yield from _index_problems(conf, i, state)


def _number_problems(s: Settings) -> Iterator[str]:
    for key, (zero_ok, most) in BOUNDS.items():
        section, _, name = key.partition(".")
        value = getattr(getattr(s, section), name)
        if value < 0 or (value == 0 and not zero_ok):
            yield f"{key}: must be {'at least' if zero_ok else 'greater than'} 0, got {value}"
        elif value > most:
            yield f"{key}: must be at most {most:.0f}{WHY_BOUND.get(key, '')}, got {value}"


def _device_problems(s: Settings) -> Iterator[str]:
    """model.devices: well formed, one replica per GPU, and not mixed with the one-device
    settings it replaces (the reranker follows the same devices)."""
    devices = s.model.devices
    if not devices:
        return
    if s.model.device != "auto":
        yield (
            f"model.devices: set together with model.device ({s.model.device!r}); give one "
            "(devices loads a replica of the model on each)"
        )
    if s.reranker.device != "auto":
        yield (
            f"reranker.device: {s.reranker.device!r} with model.devices; the reranker gets a "
            "replica on each of model.devices, so leave reranker.device at auto"
        )
    if "auto" in devices and len(devices) > 1:
        yield f"model.devices: auto stands alone (every visible GPU), got {list(devices)}"
        return
    seen: dict[str, int] = {}
    for i, device in enumerate(devices):
        if device == "auto":
            continue
        if not DEVICE.fullmatch(device):
            yield (
                f"model.devices[{i}]: expected cpu, cuda or cuda:N (or auto alone), got {device!r}"
            )
            continue
        gpu = "cuda:0" if device == "cuda" else device
        if gpu != "cpu" and gpu in seen:
            yield (
                f"model.devices[{i}]: {device!r} is also devices[{seen[gpu]}]; one replica per "
                "GPU (only cpu may repeat: CPU replicas share the host's cores)"
            )
        seen.setdefault(gpu, i)


def _index_problems(conf: IndexSettings, i: int, state_index: str) -> Iterator[str]:
    if problem := index_name_problem(conf.name):
        yield f"indices[{i}].name: {problem}"
        return  # the name is part of every later message: it must be printable first
    where = f"indices[{i}] ({conf.name})"
    if conf.name == state_index:
        yield (
            f"{where}.name: {conf.name!r} is follow.state_index, where checkpoints are kept; "
            "it cannot also be followed"
        )
    if not conf.text_fields:
        yield f"{where}.text_fields: needs at least one field"
    for j, path in enumerate(conf.text_fields):
        if problem := field_path_problem(path):
            yield f"{where}.text_fields[{j}]: {problem}"
    if problem := field_path_problem(conf.vector_field) or vector_field_problem(
        conf.vector_field, conf.text_fields
    ):
        yield f"{where}.vector_field: {problem}"
    if conf.dims < 0 or conf.dims > MAX_VECTOR_DIMS or 0 < conf.dims < 32:
        yield (
            f"{where}.dims: expected 32..{MAX_VECTOR_DIMS} (or 0 for the model's), got {conf.dims}"
        )
    unknown = set(conf.analyzers) - set(conf.text_fields)
    if unknown:
        yield (
            f"{where}.analyzers: {sorted(unknown)[0]!r} is not one of text_fields "
            f"{list(conf.text_fields)}"
        )
    if conf.passages is not None:
        yield from _passage_problems(conf.passages.max_tokens, conf.passages.overlap_tokens, where)


MIN_PASSAGE_TOKENS = 16  # special tokens, a short title and a sentence


def _passage_problems(max_tokens: int, overlap: int, where: str) -> Iterator[str]:
    """Bounds without the model (its window is checked when the index is resolved)."""
    if max_tokens < MIN_PASSAGE_TOKENS:
        yield f"{where}.passages.max_tokens: at least {MIN_PASSAGE_TOKENS}, got {max_tokens}"
    # As Elastic's chunking settings: more overlap than half a window repeats most tokens.
    elif not 0 <= overlap <= max_tokens // 2:
        yield (
            f"{where}.passages.overlap_tokens: expected 0..{max_tokens // 2} (half of "
            f"max_tokens), got {overlap}"
        )


def index_name_problem(name: str) -> str | None:
    """Why Elasticsearch would refuse ``name`` as an index, alias or data stream name, or why
    it would match more than itself (a wildcard, a comma list), or be hidden or a system index.
    """
    bad = sorted({ch for ch in name if ch in FORBIDDEN_NAME_CHARS or ch < " "})
    if bad:
        shown = " ".join(repr(ch) for ch in bad)
        return (
            f"{name!r} contains {shown}; index names cannot hold wildcards, commas, spaces "
            f'or any of \\ / * ? " < > | , # :'
        )
    if not name or name in (".", ".."):
        return f"{name!r} is not an index name"
    if name.startswith((".", "_", "-", "+")):
        return f"{name!r} starts with {name[0]!r}; index names cannot (those are hidden or system)"
    if name != name.lower():
        return f"{name!r} has uppercase letters; Elasticsearch index names are lowercase"
    if len(name.encode("utf-8")) > 255:
        return f"{name[:40]!r}... is longer than Elasticsearch's 255 bytes for an index name"
    return None


def field_path_problem(path: str) -> str | None:
    if not path or any(not part.strip() for part in path.split(".")):
        return f"{path!r} is not a field path (names joined by single dots)"
    if path == EMBED_FIELD or path.startswith(EMBED_FIELD + "."):
        return f"{path!r} is where es-embed keeps each vector's hash; choose another field"
    return None


def vector_field_problem(vector_field: str, text_fields: tuple[str, ...]) -> str | None:
    """The vector must not overwrite text, nor an object holding text, nor sit inside text."""
    for text in text_fields:
        if vector_field == text:
            return f"{vector_field!r} is also a text field; the vectors would overwrite the text"
        if text.startswith(vector_field + ".") or vector_field.startswith(text + "."):
            return (
                f"{vector_field!r} and the text field {text!r} are one inside the other; "
                "writing the vector would overwrite the text"
            )
    return None


def split_urls(text: str) -> list[str]:
    return [u.strip() for u in text.split(",") if u.strip()]


def url_problem(url: str) -> str | None:
    """Why the Elasticsearch client cannot use ``url`` (shown without its password)."""
    if not url:
        return "needs at least one URL, e.g. http://localhost:9200"
    shown = repr(redact_url(url))
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{shown} is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"{shown} is not an http:// or https:// URL"
    host = parts.hostname or ""
    if not host or any(ch.isspace() or ch in "<>\"'`{}|\\^" for ch in host):
        return f"{shown} has no valid host"
    if port == 0 or (port is None and parts.scheme.lower() == "http"):
        return f"{shown} needs a port from 1 to 65535 (e.g. http://{host}:9200)"
    return None


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: messages name URLs, never secrets."""
    head, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{head}{sep}{userinfo.split(':', 1)[0]}:***@{hostpart}"


def file_problem(path: str) -> str | None:
    if not os.path.isfile(path):
        return f"{path!r}: no such file"
    if not os.access(path, os.R_OK):
        return f"{path!r}: not readable by this user"
    return None


def read_text_file(path: str | os.PathLike[str]) -> str:
    """A file as UTF-8 text; ValueError with a one-line reason otherwise (missing, a
    directory, unreadable, binary, huge), for the caller to put after the setting's name."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TEXT_FILE + 1)
    except OSError as exc:
        raise ValueError(exc.strerror or type(exc).__name__) from None
    if len(data) > MAX_TEXT_FILE:  # /dev/urandom, a log file: not a settings or keys file
        raise ValueError(f"larger than {MAX_TEXT_FILE // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start}: {data[exc.start]:#04x})") from None


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level mapping of a YAML settings file (empty for an empty file); ValueError
    with a one-line message naming the file otherwise."""
    try:
        text = read_text_file(path)
    except ValueError as exc:
        raise ValueError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except RecursionError:
        raise ValueError(f"{path}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        # One line (the CLI prints one): PyYAML's own text spans several with a caret drawing.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or "syntax error"
        raise ValueError(f"{path}: not valid YAML{where}: {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last
    silently) and reports PyYAML's bare ValueErrors (a 5,000-digit integer, 2020-13-45)
    as YAML errors at their line."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then overriding a key is what merge keys are for
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: the base class refuses it with its own message
            if first is not None:
                where = f"lines {first} and {line}" if first != line else f"twice on line {line}"
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} ({where}); give each key once",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(None, None, str(exc), node.start_mark) from None
