"""Retention: jobs, models and datasets older than MODELPRESS_RETENTION_DAYS expire (410 Gone)."""
