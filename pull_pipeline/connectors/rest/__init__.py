"""The REST connector: httpx with auth, pagination, retries and a rate limit per source.

Where things live: `auth.py` (api_key, bearer, basic), `pagination.py` (page_number,
offset, cursor, next_link, none, and the loop guards), `client.py` (TLS, retries, status
codes, rate limit, body size), `deadline.py` (request and window deadlines down to each
socket read), `body.py` (JSON and `records_path`), `connector.py` (the window loop).
A new auth type is one `Auth` subclass registered with `@AUTH_TYPES.register`, a new
pagination type one `Paginator` subclass registered with `@PAGINATORS.register`.
"""

from pull_pipeline.config.models import AUTH_TYPES, PAGINATORS
from pull_pipeline.connectors.rest.auth import Auth
from pull_pipeline.connectors.rest.connector import RestConnector
from pull_pipeline.connectors.rest.pagination import Page, Paginator

__all__ = ["AUTH_TYPES", "PAGINATORS", "Auth", "Page", "Paginator", "RestConnector"]
