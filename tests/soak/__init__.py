"""The fault soak: the training pipeline run many times at a tiny size while faults are injected (S3 5xx and
timeouts through a proxy, Redis restarts, steps killed with SIGKILL, a full disk), with the lake, features,
online store and model registry checked after every run. ``make soak`` runs it; test_soak_short.py is CI's."""
