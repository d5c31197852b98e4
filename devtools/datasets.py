"""Where the shared datasets live (BEIR layout; see each folder's README).

``$ES_EMBED_DATA_DIR`` if set; else ``shared/data`` beside the checkout (``../shared/data``);
else ``/work/shared/data``, so a clean clone elsewhere on this machine still finds them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    if os.environ.get("ES_EMBED_DATA_DIR"):
        return Path(os.environ["ES_EMBED_DATA_DIR"])
    beside = ROOT.parent / "shared" / "data"
    return beside if beside.exists() else Path("/work/shared/data")


def first_jsonl(path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` objects of a JSONL file (one JSON object a line)."""
    docs: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if len(docs) == n:
                break
            docs.append(json.loads(line))
    return docs
