"""The optional ``default_pipeline``: drop a vector whose ``_embed.hash`` no longer matches.

When a client re-indexes a document and sends its old vector and ``_embed`` along (a
read-modify-write, a reindex with edited text), kNN would serve the vector of the old
text until the follower catches up. This pipeline recomputes the hash the same way as
``hashing.py`` (Painless has ``String.sha256()``; the model/dims prefix and the field
joiner come in as params, since Painless string literals have no escapes for them) and
removes the stale vector and ``_embed``, so the document is only BM25-searchable until
its new vector lands. Partial updates skip pipelines; the follower covers those.
"""

from __future__ import annotations

from typing import Any

from es_embed.indices.document import FIELD_JOINER, hash_prefix

# Mirrors hashing.document_text: nested lookup with a literal dotted-key fallback, strings
# and lists of strings only, blank = trim() leaves nothing.
PAINLESS = """
def lookup(def node, String path) {
  if (node instanceof Map && ((Map) node).containsKey(path)) { return ((Map) node).get(path); }
  for (String part : path.splitOnToken('.')) {
    if (!(node instanceof Map) || !((Map) node).containsKey(part)) { return null; }
    node = ((Map) node).get(part);
  }
  return node;
}
void add(List out, def value) {
  if (value instanceof String) {
    if (!((String) value).trim().isEmpty()) { out.add(value); }
  } else if (value instanceof List) {
    for (def v : (List) value) {
      if (v instanceof String && !((String) v).trim().isEmpty()) { out.add(v); }
    }
  }
}
void removePath(def node, String path) {
  if (node instanceof Map && ((Map) node).containsKey(path)) { ((Map) node).remove(path); return; }
  String[] steps = path.splitOnToken('.');
  for (int i = 0; i < steps.length - 1; i++) {
    if (!(node instanceof Map)) { return; }
    node = ((Map) node).get(steps[i]);
  }
  if (node instanceof Map) { ((Map) node).remove(steps[steps.length - 1]); }
}
def embed = ctx['_embed'];
if (!(embed instanceof Map) || !(((Map) embed).get('hash') instanceof String)) { return; }
List parts = new ArrayList();
for (String f : params.fields) { add(parts, lookup(ctx, f)); }
StringBuilder text = new StringBuilder();
for (int i = 0; i < parts.size(); i++) {
  if (i > 0) { text.append(params.joiner); }
  text.append(parts.get(i));
}
String current = (params.prefix + text.toString()).sha256();
if (!current.equals(((Map) embed).get('hash'))) {
  removePath(ctx, params.vector_field);
  ctx.remove('_embed');
}
""".strip()


def pipeline_body(
    index: str,
    fields: tuple[str, ...],
    vector_field: str,
    model: str,
    dims: int,
    passages: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """``passages``: (max_tokens, overlap_tokens) of a passage index, part of its hash; the
    whole nested field goes when the hash no longer matches."""
    return {
        "description": f"es-embed: drop the vector of {index} when its text no longer matches",
        "processors": [
            {
                "script": {
                    "lang": "painless",
                    "source": PAINLESS,
                    "params": {
                        "fields": list(fields),
                        "vector_field": vector_field,
                        "prefix": hash_prefix(model, dims, passages),
                        "joiner": FIELD_JOINER,
                    },
                }
            }
        ],
        "_meta": {"managed_by": "es-embed", "index": index},
    }
