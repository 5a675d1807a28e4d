"""After deployment: drift references and statistics, drift episodes that request retraining,
alert events, and robustness probes. Plain Python (no Dagster)."""
