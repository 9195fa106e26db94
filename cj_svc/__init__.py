"""cj_svc."""
