"""The REST connector: httpx with auth, pagination, retries and a rate limit per source.

Where things live: `auth.py` (api_key, bearer, basic), `pagination.py` (page_number,
offset, cursor, next_link, none, and the loop guards), `client.py` (TLS, retries, status
codes, rate limit, body size), `deadline.py` (request and window deadlines down to each
socket read), `body.py` (JSON and `records_path`), `connector.py` (the window loop).
"""

from pull_pipeline.connectors.rest.connector import RestConnector

__all__ = ["RestConnector"]
