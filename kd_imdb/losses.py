"""Distillation losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 2.0,
    alpha: float = 1.0,
) -> torch.Tensor:
    r"""Knowledge-distillation loss of Hinton, Vinyals & Dean (2015), arXiv:1503.02531:

    .. math::
        L = \alpha \, T^2 \, \mathrm{KL}\big(\mathrm{softmax}(t/T) \,\|\, \mathrm{softmax}(s/T)\big)
            + (1 - \alpha) \, \mathrm{CE}(s, y)

    with student logits ``s`` [B, C], teacher logits ``t`` [B, C], hard labels ``y`` [B] and
    temperature ``T``; KL and CE are averaged over the batch. The soft term's gradient with
    respect to ``s`` scales as 1/T, so the T^2 factor keeps its size comparable across temperatures
    (section 2 of the paper). ``alpha=1`` trains on soft targets only (the origin study);
    ``alpha=0`` is plain cross-entropy.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 0.0:
        return hard
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)  # [B, C]
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)  # [B, C]
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2
    return alpha * soft + (1.0 - alpha) * hard
