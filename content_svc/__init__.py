"""content_svc."""
