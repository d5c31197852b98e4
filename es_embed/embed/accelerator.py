"""Where the model's memory goes: placing weights as they load (with the fastest attention
kernel the model supports), sizing batches from the free memory of a CUDA device, and saying
how much the model holds; and how far the host may launch a pass ahead of a CUDA device.

The token budget on CUDA is CUDA_MEMORY_FRACTION of the memory free after the weights are
loaded, divided by an estimate of the activations one padded token needs
(``activation_bytes_per_token``). Elsewhere it is fixed (``FIXED_TOKEN_BUDGET``): host memory
is shared with everything else on the machine and swaps rather than failing. Either way an
estimate that is too generous costs one split batch, not a failed request (``memory.py``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import resource
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from es_embed.config import ConfigError
from es_embed.embed.memory import FIXED_TOKEN_BUDGET

log = logging.getLogger(__name__)

# Share of the CUDA memory free after loading that batches may fill: the rest is headroom
# for cuBLAS and attention workspaces and allocator fragmentation.
CUDA_MEMORY_FRACTION = 0.8
GIB = 2**30
# Eager attention's scores grow with the padded length; the estimate assumes inputs this
# long at most (longer ones are rare and get split like any batch that does not fit).
EAGER_SCORES_LENGTH = 8192


# A bulk pass stands aside for a query at the layer boundary the host has reached
# (``turns.py``), but on a GPU the host launches kernels far ahead of the device: unchecked,
# the whole pass could still be queued on the stream in front of the query's kernels. Two
# layers: the device always has the next layer queued (no idle gap between layers), and a
# query waits for at most those.
LAYERS_AHEAD = 2


class RunAhead:
    """Called at each layer boundary: keeps the calling thread's launches at most
    ``LAYERS_AHEAD`` layers ahead of the device, by recording an event on the device's stream
    at every boundary and waiting for the one ``LAYERS_AHEAD`` back (per thread: each lane's
    passes have their own)."""

    def __init__(self, new_event: Callable[[], Any], stream: Callable[[], Any]) -> None:
        self._new_event = new_event
        self._stream = stream
        self._local = threading.local()

    def __call__(self) -> None:
        events: deque[Any] = self._local.__dict__.setdefault("events", deque())
        event = self._new_event()
        event.record(self._stream())
        events.append(event)
        if len(events) > LAYERS_AHEAD:
            events.popleft().synchronize()


def run_ahead(device: torch.device) -> RunAhead | None:
    """The layer-boundary limit for a CUDA device; None elsewhere (a CPU pass runs as the
    host calls it). The stream is named by device: a model thread's current device is
    cuda:0 whatever device its model is on."""
    if device.type != "cuda":
        return None
    return RunAhead(torch.cuda.Event, lambda: torch.cuda.current_stream(device))


def placement(device: torch.device) -> dict[str, Any]:
    """Arguments for from_pretrained that put the weights where they belong as they load.

    With ``accelerate`` (``pip install es-embed[gpu]``) the model is built on the meta device
    and each weight goes straight onto the CUDA device, so host memory never holds a copy of
    the model. Without it transformers accepts neither argument: the weights are read into
    host memory (in the target dtype, never float32 first) and moved to the device once.
    """
    if importlib.util.find_spec("accelerate") is None:
        if device.type == "cuda":
            log.info("accelerate is not installed: the weights pass through host memory once")
        return {}
    out: dict[str, Any] = {"low_cpu_mem_usage": True}  # transformers 5 always does this
    if device.type == "cuda":
        out["device_map"] = {"": str(device)}
    return out


def activation_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Peak memory one padded token needs during a forward pass.

    Under inference_mode a layer's tensors are freed when the next layer starts, so the peak
    is one layer's: the residual stream, norm output, q/k/v and attention output (counted as 8
    hidden-wide rows, with margin) and the MLP's gate, up, activation and product (4
    intermediate-wide). Eager attention also keeps heads x length scores per token; sdpa and
    flash attention do not.
    """
    hidden = int(getattr(config, "hidden_size", 0) or 1024)
    intermediate = int(getattr(config, "intermediate_size", 0) or 4 * hidden)
    per_token = dtype_bytes * (8 * hidden + 4 * intermediate)
    if getattr(config, "_attn_implementation", None) == "eager":
        heads = int(getattr(config, "num_attention_heads", 0) or 1)
        positions = int(getattr(config, "max_position_embeddings", 0) or EAGER_SCORES_LENGTH)
        per_token += dtype_bytes * heads * min(positions, EAGER_SCORES_LENGTH)
    return per_token


def token_budget(
    configured: int, device: torch.device, config: Any, dtype: torch.dtype
) -> tuple[int, str]:
    """Padded tokens one forward pass may hold, and how that was chosen: ``configured`` when
    positive, else from free CUDA memory, else fixed."""
    if configured > 0:
        return configured, "batching.max_batch_tokens"
    if device.type != "cuda":
        return FIXED_TOKEN_BUDGET, f"fixed on {device.type}"
    free, _total = torch.cuda.mem_get_info(device)
    per_token = activation_bytes_per_token(config, dtype.itemsize)
    tokens = max(1, int(free * CUDA_MEMORY_FRACTION / per_token))
    how = (
        f"{CUDA_MEMORY_FRACTION:.0%} of {free / GIB:.1f} GiB free, "
        f"{per_token / 1024:.0f} KiB of activations per token"
    )
    return tokens, how


def memory_in_use(device: torch.device) -> str:
    """What the model holds: CUDA memory allocated, else the process's resident memory."""
    if device.type == "cuda":
        return f"{torch.cuda.memory_allocated(device) / GIB:.2f} GiB of CUDA memory"
    return f"{resident_bytes() / GIB:.2f} GiB resident"


def resident_bytes() -> int:
    """The process's resident set (Linux /proc), else its peak (getrusage)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def attention_choices(device: torch.device, dtype: torch.dtype) -> list[str]:
    """Attention kernels to try, fastest first. flash-attention 2 (when installed) runs padded
    bf16/fp16 batches on CUDA without computing the padding; torch's sdpa picks a fused kernel
    (flash or memory-efficient; with a padding mask, memory-efficient) and never holds the
    length x length scores; eager, last, materialises them (more memory, slower)."""
    choices = ["sdpa", "eager"]
    flash = importlib.util.find_spec("flash_attn") is not None
    if flash and device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        choices.insert(0, "flash_attention_2")
    return choices


def load_pretrained(
    auto_class: Any,
    name: str,
    config: Any,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    section: str = "model",
) -> Any:
    """``auto_class.from_pretrained`` with the fastest attention kernel the model supports."""
    last: Exception | None = None
    for attention in attention_choices(device, dtype):
        try:
            net = auto_class.from_pretrained(
                name,
                config=config,
                dtype=dtype,
                attn_implementation=attention,
                trust_remote_code=trust_remote_code,
                **placement(device),
            )
        except (ValueError, ImportError) as exc:  # this architecture lacks that kernel
            log.info("attention %s unavailable for %s: %s", attention, name, exc)
            last = exc
            continue
        except OSError as exc:
            raise ConfigError(f"{section}.name: cannot load {name!r}: {exc}") from None
        log.info("loaded %s with %s attention, %s on %s", name, attention, dtype, device)
        return net.to(device).eval()
    raise ConfigError(f"{section}.name: cannot load {name!r}: {last}")
