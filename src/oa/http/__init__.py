"""The HTTP plumbing runtime, control and Khala share: app factory, error envelope,
strict JSON bodies and query parameters, body size limit.

Neutral like `oa.exceptions`: it imports no room (tests/unit/test_room_boundaries.py), so
every room may use it, and a fix here reaches all three services at once.
"""

from oa.http.app import create_app, json_response
from oa.http.errors import documented_errors, error_body, error_response

__all__ = ["create_app", "documented_errors", "error_body", "error_response", "json_response"]
