"""Storage: the registry:2 key layout (pure) and the drivers that read it (S3, filesystem)."""
