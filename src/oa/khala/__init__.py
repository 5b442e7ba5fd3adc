"""Khala: the derived, rebuildable sync layer; the runtime is its only writer."""
