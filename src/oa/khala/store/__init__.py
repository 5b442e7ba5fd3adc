"""The `khala` schema: the writer API (the projector's only door) and the readers' queries."""
