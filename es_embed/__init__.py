"""es-embed: self-hosted embeddings, vector back-fill and hybrid search for Elasticsearch."""

__version__ = "0.1.0"
