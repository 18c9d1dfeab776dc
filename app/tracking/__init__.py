"""MLflow tracking of finished jobs (`MODELPRESS_MLFLOW_TRACKING_URI`).

Each terminal transition writes an `mlflow.run` row in the webhook outbox (app/webhooks/), in
the transition's transaction; the housekeeping tick hands it to `service.send`, which logs the
job as one MLflow run (params from the spec, metrics and the verdict from the report, the model,
report and manifest as artifacts). A failed attempt is retried with the outbox's backoff; the
job itself is long finished and never waits for MLflow. `mlflow` is imported only inside
`mlflow_run`, only when a row is sent: the API process never loads it.
"""
