"""Clock handling for S3 request signing."""
