"""Champion/challenger decision: promote only on a held-out test set both models are scored on."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    challenger_version: str
    challenger_pr_auc: float
    champion_version: str | None
    champion_pr_auc: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    challenger_version: str,
    challenger_pr_auc: float,
    champion_version: str | None,
    champion_pr_auc: float | None,
    min_improvement: float = 0.0,
) -> PromotionDecision:
    """Promote when there is no champion, or the challenger's PR-AUC is at least as good."""
    def decision(promote: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(
            promote, reason, challenger_version, challenger_pr_auc, champion_version,
            champion_pr_auc,
        )

    if champion_version is None or champion_pr_auc is None:
        return decision(True, "no current champion")
    if champion_version == challenger_version:
        return decision(False, "challenger is already the champion")
    if math.isnan(challenger_pr_auc):
        return decision(False, "challenger PR-AUC is undefined (test split has no anomalies)")
    if math.isnan(champion_pr_auc) or challenger_pr_auc >= champion_pr_auc + min_improvement:
        return decision(
            True,
            f"challenger PR-AUC {challenger_pr_auc:.4f} >= champion {champion_pr_auc:.4f}"
            f" + {min_improvement}",
        )
    return decision(
        False,
        f"challenger PR-AUC {challenger_pr_auc:.4f} < champion {champion_pr_auc:.4f}"
        f" + {min_improvement}",
    )
