"""The projector: the only writer into Khala. Tails the journal, folds, commits atomically."""
