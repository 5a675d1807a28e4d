"""DataSentinel runtime: the model bundle contract and the scoring core.

Imports only numpy and onnxruntime (plus grpcio for the server), never dagster or torch, so the
scorer can ship without the training stack and dataset scoring runs the same code as live scoring.
"""
