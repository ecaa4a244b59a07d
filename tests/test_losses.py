"""Golden values for the KD loss, computed by hand.

Batch of two reviews, T = 2:
  row 1: s = [1, 0], t = [0, 1], y = 0
         softmax(t/T) = [1 - sigma(.5), sigma(.5)] = [0.3775407, 0.6224593], softmax(s/T) the reverse,
         KL = (0.6224593 - 0.3775407) * ln(0.6224593 / 0.3775407) = 0.2449187 * 0.5 = 0.1224593;
         T^2 KL = 0.4898373;  CE = ln(1 + e^-1) = 0.3132617
  row 2: s = [0, 0], t = [2, 0], y = 1
         softmax(t/T) = [sigma(1), 1 - sigma(1)] = [0.7310586, 0.2689414], softmax(s/T) = [.5, .5],
         KL = 0.7310586 ln(1.4621172) + 0.2689414 ln(0.5378828) = 0.1109441;
         T^2 KL = 0.4437763;  CE = ln 2 = 0.6931472
  batch means: soft 0.4668068, hard 0.5032044; alpha = .5 -> 0.4850056
"""
import pytest
import torch
import torch.nn.functional as F

from kd_imdb.losses import kd_loss

S = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
T_LOGITS = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
Y = torch.tensor([0, 1])


@pytest.mark.parametrize("alpha, expected", [(1.0, 0.4668068), (0.5, 0.4850056), (0.0, 0.5032044)])
def test_kd_loss_golden_values(alpha, expected):
    assert kd_loss(S, T_LOGITS, Y, temperature=2.0, alpha=alpha).item() == pytest.approx(expected, abs=1e-6)


def test_single_row_golden_value():
    assert kd_loss(S[:1], T_LOGITS[:1], Y[:1], 2.0, 1.0).item() == pytest.approx(0.4898373, abs=1e-6)


def test_alpha_zero_is_cross_entropy():
    torch.manual_seed(0)
    s, t, y = torch.randn(16, 2), torch.randn(16, 2) * 3, torch.randint(0, 2, (16,))
    assert torch.equal(kd_loss(s, t, y, temperature=5.0, alpha=0.0), F.cross_entropy(s, y))


def test_identical_logits_give_zero_soft_term():
    torch.manual_seed(1)
    s = torch.randn(8, 2)
    y = torch.randint(0, 2, (8,))
    for temperature in (0.5, 1.0, 2.0, 10.0):
        assert kd_loss(s, s.clone(), y, temperature, alpha=1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_gradient_is_t_times_probability_gap():
    """d/ds [T^2 KL(p_t || p_s)] = T (softmax(s/T) - softmax(t/T)) / B: the T^2 factor undoes the 1/T^2
    shrinkage of soft gradients, so their size stays comparable across temperatures (Hinton et al. sec. 2)."""
    torch.manual_seed(2)
    t = torch.randn(4, 2) * 2
    for temperature in (1.0, 2.0, 8.0):
        s = torch.randn(4, 2, requires_grad=True)
        kd_loss(s, t, torch.zeros(4, dtype=torch.long), temperature, alpha=1.0).backward()
        expected = temperature * (F.softmax(s.detach() / temperature, -1) - F.softmax(t / temperature, -1)) / 4
        assert torch.allclose(s.grad, expected, atol=1e-6)


def test_high_temperature_gradient_matches_logit_matching():
    """As T grows, the T^2-scaled gradient tends to (z - mean z) / (C B) with z = s - t: matching
    logits (section 2.1 of the paper). Without T^2 it would vanish like 1/T^2."""
    torch.manual_seed(3)
    s0, t = torch.randn(4, 2), torch.randn(4, 2)
    z = s0 - t
    limit = (z - z.mean(dim=1, keepdim=True)) / (2 * 4)
    grads = {}
    for temperature in (50.0, 100.0):
        s = s0.clone().requires_grad_(True)
        kd_loss(s, t, torch.zeros(4, dtype=torch.long), temperature, 1.0).backward()
        grads[temperature] = s.grad
        assert torch.allclose(s.grad, limit, atol=2e-3)
    assert torch.allclose(grads[50.0], grads[100.0], atol=2e-3)


@pytest.mark.parametrize("temperature, alpha", [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.5), (2.0, -0.1)])
def test_bad_parameters_raise(temperature, alpha):
    with pytest.raises(ValueError):
        kd_loss(S, T_LOGITS, Y, temperature, alpha)


def test_margin_mse_is_the_high_temperature_limit_of_kd():
    from kd_imdb.losses import margin_mse_loss

    # by hand: margins s: 1-0=1 ... row 1: s=[1,0] -> -1, t=[0,1] -> +1: ((-1) - 1)^2/8 = 0.5
    #          row 2: s=[0,0] -> 0, t=[2,0] -> -2: (0 + 2)^2/8 = 0.5
    assert margin_mse_loss(S, T_LOGITS, Y).item() == pytest.approx(0.5)
    torch.manual_seed(4)
    s, t = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)  # float64: T=1000
    y = torch.randint(0, 2, (32,))
    assert kd_loss(s, t, y, temperature=1000.0, alpha=1.0).item() == pytest.approx(margin_mse_loss(s, t, y).item(), rel=1e-4)
    assert margin_mse_loss(s + 5.0, t - 3.0, y).item() == pytest.approx(margin_mse_loss(s, t, y).item(), rel=1e-5)


def test_unlabelled_reviews_only_feed_the_soft_term():
    y = torch.tensor([0, -1])
    # alpha = .5: soft over both rows (0.4668068), CE over row 1 only (0.3132617)
    assert kd_loss(S, T_LOGITS, y, 2.0, 0.5).item() == pytest.approx(0.5 * 0.4668068 + 0.5 * 0.3132617, abs=1e-6)
    all_unlabelled = kd_loss(S, T_LOGITS, torch.tensor([-1, -1]), 2.0, 0.5)
    assert all_unlabelled.item() == pytest.approx(0.5 * 0.4668068, abs=1e-6)
