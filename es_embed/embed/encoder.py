"""The real encoder: a Hugging Face model behind the ``Encoder`` protocol.

``load_encoder`` picks device and dtype, reads the pooling the model's authors declare
(``st_config``), loads tokenizer and model with ``AutoTokenizer``/``AutoModel`` (weights in
the target dtype, placed by ``accelerator.py``) and runs a start-up self-check (last-token
models must end every input with the end-of-text token; a probe embedding must be finite) so
a wrong set-up fails at start, not as bad vectors later.

Tokenisation calls the Rust tokenizer directly on a private copy (no padding/truncation
state to mutate, so several threads may share it) and adds special tokens itself, which is
what lets truncation keep ``<|endoftext|>`` last and still report the original length.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from es_embed.config import ConfigError, ModelSettings
from es_embed.embed import accelerator
from es_embed.embed.accelerator import load_pretrained
from es_embed.embed.pooling import normalize, pool
from es_embed.embed.protocol import ModelInfo, Spans, Tokenized
from es_embed.embed.shape import supports_matryoshka
from es_embed.embed.st_config import PoolingSpec, local_dir, read_pooling_spec

log = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"
SANE_MAX_LENGTH = 1_000_000  # tokenizers without a limit report int(1e30)
PROBE_TEXTS = ("es-embed start-up probe: is every vector finite?", "a")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class NonFiniteOutputError(RuntimeError):
    """The model produced NaN or infinity (typically float16 overflow)."""


class HFEncoder:
    """Tokenize on any thread; ``forward`` only on the device's model threads."""

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        spec: PoolingSpec,
        info: ModelInfo,
        *,
        prefix: Sequence[int],
        suffix: Sequence[int],
        pad_id: int,
    ) -> None:
        self._model = model
        self._tok = tokenizer
        self._spec = spec
        self._info = info
        self._prefix = tuple(prefix)
        self._suffix = tuple(suffix)
        self._pad_id = pad_id
        self._device = torch.device(info.device)
        params = inspect.signature(model.forward).parameters
        # Left padding shifts absolute positions; give the real ones so a batched input is
        # computed exactly as it would be alone.
        self._pass_positions = spec.padding_side == "left" and "position_ids" in params

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def spec(self) -> PoolingSpec:
        return self._spec

    def token_budget(self, configured: int) -> tuple[int, str]:
        """Padded tokens one forward pass may hold, and how that was chosen (accelerator.py)."""
        dtype = DTYPES[self._info.dtype]
        return accelerator.token_budget(configured, self._device, self._model.config, dtype)

    def memory_in_use(self) -> str:
        return accelerator.memory_in_use(self._device)

    def on_layer(self, hook: Callable[[], None]) -> int:
        """Call ``hook`` before each transformer layer of every pass, on the thread running
        it (``turns.py``: where a bulk pass stands aside for a query); returns the layers."""
        layers = transformer_layers(self._model)
        keep_pace = accelerator.run_ahead(self._device)

        def before_layer(_module: torch.nn.Module, _args: Any) -> None:
            if keep_pace is not None:  # so the boundary the host reaches is near the device's
                keep_pace()
            hook()

        for layer in layers:
            layer.register_forward_pre_hook(before_layer)
        return len(layers)

    @property
    def end_of_text_id(self) -> int | None:
        """The token last-token pooling reads (None for other poolings)."""
        if self._spec.pooling != "lasttoken" or not self._suffix:
            return None
        return self._suffix[-1]

    def tokenize(self, texts: Sequence[str]) -> list[Tokenized]:
        encodings = self._tok.encode_batch_fast(list(texts), add_special_tokens=False)
        return [self.wrap(enc.ids) for enc in encodings]

    def spans(self, texts: Sequence[str]) -> list[Spans]:
        # encode_batch (not _fast): the fast path skips the offsets.
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [Spans(tuple(enc.ids), tuple((a, b) for a, b in enc.offsets)) for enc in encodings]

    def wrap(self, ids: Sequence[int]) -> Tokenized:
        specials = len(self._prefix) + len(self._suffix)
        room = self._info.max_length - specials
        wrapped = (*self._prefix, *ids[:room], *self._suffix)
        return Tokenized(ids=wrapped, original_length=len(ids) + specials)

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self._info.hidden_size), dtype=np.float32)
        ids, mask = self._pad(batch)
        with torch.inference_mode():
            input_ids = self._to_device(ids)
            attention = self._to_device(mask)
            kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention}
            if self._pass_positions:
                kwargs["position_ids"] = real_positions(attention)
            hidden = self._model(**kwargs).last_hidden_state
            vectors = normalize(pool(hidden, attention, self._spec.pooling))
            # The one host sync of a pass: the result copy. Finiteness is checked on the copy,
            # not with a device-side test first (a second sync, a GPU round trip per batch). A
            # non-finite pooled row normalises to NaN, so the check sees exactly the same rows.
            out: np.ndarray = vectors.cpu().numpy()
        if not np.isfinite(out).all():
            raise NonFiniteOutputError(
                f"model output is not finite ({self._info.dtype} on {self._info.device})"
            )
        return out

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(array)
        if self._device.type != "cuda":
            return host.to(self._device)
        # From pageable memory a copy to the GPU is synchronous: the host waits for it before
        # it can launch the first layer. From pinned memory (torch's caching host allocator,
        # so no cudaHostAlloc per batch) it is queued on the stream like a kernel and the
        # launch goes on at once; the stream orders it before the kernels that read it.
        return host.pin_memory().to(self._device, non_blocking=True)

    def _pad(self, batch: Sequence[Tokenized]) -> tuple[np.ndarray, np.ndarray]:
        left = self._spec.padding_side == "left"
        return pad_ids(batch, self._pad_id, left=left), attention_mask(batch, left=left)


def pad_rows(rows: Sequence[Sequence[int]], fill: int, *, left: bool) -> np.ndarray:
    """Rows of token-level values padded with ``fill`` to the longest, on the given side."""
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        out[i, cols] = row
    return out


def pad_ids(batch: Sequence[Tokenized], pad_id: int, *, left: bool) -> np.ndarray:
    return pad_rows([t.ids for t in batch], pad_id, left=left)


def attention_mask(batch: Sequence[Tokenized], *, left: bool) -> np.ndarray:
    return pad_rows([(1,) * len(t.ids) for t in batch], 0, left=left)


def transformer_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's stack of layers: its longest outermost ``ModuleList`` (``encoder.layer`` in
    BERT, ``layers`` in Qwen3; a list inside a layer, such as a mixture of experts' experts,
    is not a stack of layers); empty for a model without one."""
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)]
    outer = [
        list(m)
        for name, m in lists
        if not any(name.startswith(f"{other}.") for other, _ in lists if other != name)
    ]
    return max(outer, key=len, default=[])


def real_positions(attention: torch.Tensor) -> torch.Tensor:
    """Each token's position within its own input: left padding must not shift them, so a
    batched input is computed exactly as it would be alone."""
    return (attention.cumsum(dim=1) - 1).clamp(min=0)


def load_encoder(model: ModelSettings) -> HFEncoder:
    """Load, configure and self-check the model named by the settings."""
    from transformers import AutoModel

    device = resolve_device(model.device)
    dtype = resolve_dtype(model.dtype, device)
    config, hf_tokenizer = load_config_and_tokenizer(model.name, model.trust_remote_code)
    if hasattr(config, "use_cache"):
        config.use_cache = False  # no generation: a KV cache only costs memory
    spec = read_pooling_spec(local_dir(model.name), config)
    if spec.from_files and not spec.normalize:
        # The protocol promises unit vectors (Elasticsearch's cosine/dot_product need them).
        log.warning("%s declares no Normalize module; es-embed normalises anyway", model.name)
    net = load_pretrained(AutoModel, model.name, config, device, dtype, model.trust_remote_code)

    tokenizer = private_tokenizer(hf_tokenizer)
    prefix, suffix = _special_tokens(tokenizer, spec, hf_tokenizer, model.name)
    pad_id = hf_tokenizer.pad_token_id
    if pad_id is None:
        pad_id = suffix[-1] if suffix else 0  # masked out anyway
    info = ModelInfo(
        model_id=model.model_id,
        hidden_size=int(getattr(config, "hidden_size", 0) or 0),
        max_length=token_limit(
            model.max_length, config, hf_tokenizer, spec.max_seq_length, len(prefix) + len(suffix)
        ),
        device=str(device),
        dtype=dtype_name(dtype),
        pooling=spec.pooling,
        matryoshka_dims=spec.matryoshka_dims,
        matryoshka=supports_matryoshka(
            model, str(getattr(config, "model_type", "")), spec.matryoshka_dims
        ),
        query_prompt=spec.query_prompt,
        special_tokens=len(prefix) + len(suffix),
    )
    encoder = HFEncoder(net, tokenizer, spec, info, prefix=prefix, suffix=suffix, pad_id=pad_id)
    return _self_check(encoder, model)


def load_config_and_tokenizer(
    name: str, trust_remote_code: bool = False, section: str = "model"
) -> tuple[Any, Any]:
    """The model's config and its fast tokenizer; a ConfigError naming ``section.name``."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # A weight-loading progress bar on stderr is noise in a service log and in CLI errors.
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
        hf_tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{section}.name: cannot load {name!r}: {exc}") from None
    if not getattr(hf_tokenizer, "is_fast", False):
        raise ConfigError(f"{section}.name: {name!r} has no fast (tokenizers) tokenizer")
    return config, hf_tokenizer


def private_tokenizer(hf_tokenizer: Any) -> Tokenizer:
    """A copy of the Rust tokenizer with no truncation or padding state, so several threads
    may share it (the Hugging Face wrapper mutates that state on every call)."""
    tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def resolve_device(name: str, section: str = "model") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"{section}.device: expected auto, cpu, cuda or cuda:N, got {name!r}"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{section}.device: {name!r} requested but CUDA is not available")
        device = torch.device("cuda", device.index or 0)
    return device


def resolve_dtype(name: str, device: torch.device, section: str = "model") -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"{section}.dtype: expected auto, {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def _special_tokens(
    tokenizer: Tokenizer, spec: PoolingSpec, hf_tokenizer: Any, name: str
) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after every single input.

    Derived from the tokenizer's own post-processor; for last-token models the suffix must
    end with the end-of-text token, and is made to if an older tokenizer does not add it.
    """
    prefix, suffix = tokenizer_specials(tokenizer, name)
    if spec.pooling != "lasttoken":
        return prefix, suffix
    eot = tokenizer.token_to_id(END_OF_TEXT)
    if eot is None:
        eot = hf_tokenizer.eos_token_id
    if eot is None:
        log.warning("%s: no end-of-text token; last-token pooling reads the last input token", name)
        return prefix, suffix
    if not suffix or suffix[-1] != eot:
        log.warning(
            "%s: the tokenizer does not append %s; es-embed appends it to every input",
            name,
            tokenizer.id_to_token(eot),
        )
        suffix = [*suffix, eot]
    return prefix, suffix


def tokenizer_specials(
    tokenizer: Tokenizer, name: str, section: str = "model"
) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's post-processor puts before and after every single input."""
    prefix, suffix = _wrap(tokenizer, PROBE_TEXTS[0], section)
    if _wrap(tokenizer, PROBE_TEXTS[1], section) != (prefix, suffix):
        raise ConfigError(f"{section}.name: {name!r}: unsupported tokenizer post-processor")
    return prefix, suffix


def _wrap(tokenizer: Tokenizer, text: str, section: str) -> tuple[list[int], list[int]]:
    bare = tokenizer.encode(text, add_special_tokens=False).ids
    full = tokenizer.encode(text, add_special_tokens=True).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise ConfigError(f"{section}.name: the tokenizer's special tokens do not wrap the input")


def token_limit(
    setting: int,
    config: Any,
    hf_tokenizer: Any,
    declared: int | None,
    specials: int,
    section: str = "model",
) -> int:
    """The smallest of the setting, the model's positions, the tokenizer's limit and a
    declared sentence-transformers limit; it must leave room after ``specials`` tokens."""
    limits = [setting]
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    tokenizer_limit = getattr(hf_tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < SANE_MAX_LENGTH:
        limits.append(tokenizer_limit)
    if declared:
        limits.append(declared)
    limit = min(limits)
    if limit <= specials:
        raise ConfigError(
            f"{section}.max_length: {limit} leaves no room for text after {specials} special tokens"
        )
    return limit


def _self_check(encoder: HFEncoder, model: ModelSettings) -> HFEncoder:
    tokens = encoder.tokenize(PROBE_TEXTS)
    eot = encoder.end_of_text_id
    if encoder.info.pooling == "lasttoken" and eot is not None:
        if any(t.ids[-1] != eot for t in tokens):
            raise ConfigError(f"model.name: {model.name!r}: inputs do not end with end-of-text")
    try:
        vectors = encoder.forward(tokens)
    except NonFiniteOutputError as exc:
        if model.dtype == "float16":
            raise ConfigError(
                f"model.dtype: float16 gives non-finite embeddings for {model.name!r} "
                "(overflow); use bfloat16 or float32"
            ) from exc
        raise
    hidden = vectors.shape[1]
    info = encoder.info
    if hidden != info.hidden_size:
        # Some configs name the width differently; the output is the truth.
        encoder._info = replace(info, hidden_size=hidden)
    dims = info.matryoshka_dims
    if dims is not None:
        valid = tuple(d for d in dims if 0 < d <= hidden)
        encoder._info = replace(encoder.info, matryoshka_dims=tuple(sorted({*valid, hidden})))
    log.info("encoder ready: %s", encoder.info)
    return encoder
