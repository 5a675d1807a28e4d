"""The detector and flag policy the leave-one-dataset-out evaluation chose (``make eval``).

Chosen on SKAB, GutenTAG and our generator together by the criterion whose leave-one-out
defaults did best on their held-out sources (``bench.cross_dataset``; figures in
docs/detection.md). ``ds-dataset scaffold`` declares new datasets with it: data the platform was
never tuned on is what the evaluation measures.
"""

from __future__ import annotations

from typing import Any

#: the family, with the graph's default hyper-parameters for it
FAMILY = "temporal_ae"

#: ``model_bundle`` config (the declaration's ``policy`` section): the 0.995 quantile of the
#: normal validation scores x 1.5, no smoothing, no re-baselining
POLICY: dict[str, Any] = {"quantile": 0.995, "margin": 1.5}
