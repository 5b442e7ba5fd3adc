"""Service layer: use cases over the domain and the adapters."""
