"""Root conftest: fixtures live in tests/*_fixtures.py, one module per kind of real part."""

pytest_plugins = ["tests.es_fixtures", "tests.model_fixtures", "tests.reranker_fixtures"]
