"""Declared datasets, one folder each with a ``defs.yaml`` (a ``TelemetryDataset`` component,
``ds_assets.components``); the code location loads every one."""
