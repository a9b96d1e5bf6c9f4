"""Stage 3, filtering: keep an augmented image only while the teacher still sees it like
its source.

Rules (``dda-filter``): ``cosine`` (DDA's: cosine similarity of the teacher's penultimate
features of variant and source >= ``dda-threshold``) and ``label`` (the teacher's class
of the variant is still the teacher's class of its source; no threshold). The cosine
rule measures how far a variant moved, the label rule only whether it crossed a class
boundary, so it keeps the variants that moved far inside their class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FILTERS = ("cosine", "label")


def cosine_keep(source: torch.Tensor, augmented: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``source`` [N, D], ``augmented`` [N, V, D] embeddings -> (keep mask [N, V], similarities [N, V])."""
    similarity = F.cosine_similarity(augmented, source.unsqueeze(1).expand_as(augmented), dim=-1)
    return keep("cosine", similarity, None, threshold), similarity


def label_keep(source_logits: torch.Tensor, augmented_logits: torch.Tensor) -> torch.Tensor:
    """``source_logits`` [N, C], ``augmented_logits`` [N, V, C] of the teacher -> keep mask
    [N, V]: the variant's top class is its source's."""
    return augmented_logits.argmax(-1) == source_logits.argmax(-1).unsqueeze(1)


def keep(rule: str, similarity: torch.Tensor, same_label: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """The keep mask [N, V] of ``rule`` from the similarities and label agreements
    (:func:`cosine_keep`, :func:`label_keep`)."""
    if rule == "cosine":
        return similarity >= threshold
    if rule == "label":
        return same_label.clone()
    raise ValueError(f"filter {rule!r}; accepted: {', '.join(FILTERS)}")
