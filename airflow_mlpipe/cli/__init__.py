"""The ``mlpipe`` command line. Command modules register themselves on ``main.app``; none of them
imports Airflow at import time (start-up speed)."""
