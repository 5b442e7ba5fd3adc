"""Control's HTTP API: `/api/auth`, `/api/sync`, `/.well-known`."""
