"""The durable job metrics behind `/metrics`: recorded with each job transition they count."""
