"""regsidecar: a per-host OCI registry pull-through cache over a registry:2 bucket or directory."""

__version__ = "0.1.0"
__all__ = ["__version__"]
