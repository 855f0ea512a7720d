"""Writing poems: the loaded poetry bundle, requests, the poet style prior and constrained decoding."""
