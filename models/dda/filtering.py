"""Stage 3, filtering: keep an augmented image only while the teacher still sees it like
its source (cosine similarity of the teacher's penultimate features >= a threshold)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_keep(source: torch.Tensor, augmented: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``source`` [N, D], ``augmented`` [N, V, D] embeddings -> (keep mask [N, V], similarities [N, V])."""
    similarity = F.cosine_similarity(augmented, source.unsqueeze(1).expand_as(augmented), dim=-1)
    return similarity >= threshold, similarity
