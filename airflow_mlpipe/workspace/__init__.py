"""The workspace: datastores (local, S3), dataset and model registries, step cache, run records,
snapshots. Nothing in ``datastore.py`` and ``manifest.py`` imports Airflow (the step runtime uses them)."""
