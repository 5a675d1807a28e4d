"""The detector and flag policy the leave-one-dataset-out evaluation chose (``make eval``).

Chosen on SKAB, GutenTAG and our generator together by the criterion whose leave-one-out
defaults did best on their held-out sources (``bench.cross_dataset``; figures in
docs/detection.md). The graph's ``detector`` and ``model_bundle`` configs default to it, and
``ds-dataset scaffold`` declares new datasets with it: data the platform was never tuned on is
what the evaluation measures.
"""

from __future__ import annotations

from typing import Any

#: the family, with the graph's default hyper-parameters for it
FAMILY = "temporal_ae"

#: ``model_bundle`` config (the declaration's ``policy`` section): the 0.999 quantile of the
#: normal validation scores x 1, no smoothing, no re-baselining (2026-12-06, after the temporal
#: AE's training became a fresh 10,000-window sample per epoch; 0.995 x 1.5 before)
POLICY: dict[str, Any] = {"quantile": 0.999, "margin": 1.0}
