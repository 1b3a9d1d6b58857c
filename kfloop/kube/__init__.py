"""Kubernetes delivery: the Helm chart rendered from the config, and server-side apply."""
