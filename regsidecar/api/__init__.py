"""HTTP edge: the aiohttp application, thin handlers, OCI error rendering."""
