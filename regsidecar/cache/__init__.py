"""Local blob cache: content-addressed files (store), LRU accounting (lru), one fetch per digest."""
