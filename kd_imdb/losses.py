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
    temperature ``T``; KL is averaged over the batch, CE over its labelled reviews (label -1 marks an
    unlabelled transfer-set review, which only the soft term sees). The soft term's gradient with
    respect to ``s`` scales as 1/T, so the T^2 factor keeps its size comparable across temperatures
    (section 2 of the paper). ``alpha=1`` trains on soft targets only (the origin study);
    ``alpha=0`` is plain cross-entropy.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    hard = hard_loss(student_logits, labels)
    if alpha == 0.0:
        return hard
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)  # [B, C]
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)  # [B, C]
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2
    return alpha * soft + (1.0 - alpha) * hard


def hard_loss(student_logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over the labelled reviews of the batch (label -1 = unlabelled; none labelled: 0)."""
    labelled = labels >= 0
    if not labelled.any():
        return student_logits.sum() * 0.0
    return F.cross_entropy(student_logits[labelled], labels[labelled], label_smoothing=label_smoothing)


def margin_mse_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0
) -> torch.Tensor:
    r"""Logit matching on the margin, the high-temperature limit of ``kd_loss`` for two classes:

    .. math::
        L = \alpha \, \tfrac{1}{8} \big((s_1 - s_0) - (t_1 - t_0)\big)^2 + (1 - \alpha) \, \mathrm{CE}(s, y)

    averaged over the batch. As T grows, T^2 KL(softmax(t/T) || softmax(s/T)) tends to
    ((s_1 - s_0) - (t_1 - t_0))^2 / 8 (Hinton et al. 2015, sec. 2.1), so the 1/8 makes this the same
    objective as KD at T -> infinity; Tang et al. 2019 ("Distilling task-specific knowledge from BERT
    into simple neural networks") distil with MSE on logits. The margin is what two logits carry:
    adding a constant to both changes neither softmax nor this loss.
    """
    soft = ((student_logits[:, 1] - student_logits[:, 0]) - (teacher_logits[:, 1] - teacher_logits[:, 0])).pow(2).mean() / 8
    if alpha == 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * hard_loss(student_logits, labels)
