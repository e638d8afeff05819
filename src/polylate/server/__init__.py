"""HTTP server: Jina-compatible /v1/multi-vector and /v1/rerank, PLAID index endpoints, API
keys, request limits and a search page. Build the app with ``create_app(ServerSettings(...))``."""

from polylate.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def create_app(*args, **kwargs):
    from polylate.server.app import create_app as _create_app

    return _create_app(*args, **kwargs)
