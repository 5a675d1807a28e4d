"""Builders shared by tests: small models, bundles and rows (never imported from test modules)."""
