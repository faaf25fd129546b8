"""FLR's multi-factor latent reasoning module and its regularisers, on hand-made tensors."""

import math

import pytest
import torch

from recbole_flr.model.latent_reasoning import (
    FactorizedLatentReasoning,
    diversity_loss,
    orthogonality_loss,
    sparsity_loss,
)

B, L, D, K, T = 3, 6, 8, 3, 2


def _inputs(lengths=(6, 3, 1), seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(len(lengths), L, D, generator=generator)
    mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
    start = torch.randn(len(lengths), D, generator=generator)
    return hidden, mask, start, torch.tensor([1.0, 2.0, 0.5])[: len(lengths)]


def _module(n_factors=K, steps=T):
    torch.manual_seed(0)
    return FactorizedLatentReasoning(D, n_factors, steps, initializer_range=0.5).eval()


def test_shapes_and_normalisation():
    hidden, mask, start, norm = _inputs()
    out = _module()(hidden, mask, start, norm)
    assert out.thought.shape == (B, D)
    assert out.factors.shape == (B, K, D)
    assert out.attention.shape == (B, K, L)
    assert out.gates.shape == (B, K)
    assert out.all_gates.shape == (B, T, K)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(B, K))
    torch.testing.assert_close(out.gates.sum(-1), torch.ones(B))
    torch.testing.assert_close(out.all_gates[:, -1], out.gates)
    torch.testing.assert_close(out.thought.norm(dim=-1), norm)  # scaled to the input-embedding norm


def test_padding_gets_no_attention_and_does_not_matter():
    hidden, mask, start, norm = _inputs()
    module = _module()
    out = module(hidden, mask, start, norm)
    assert torch.all(out.attention.masked_select(~mask[:, None, :].expand_as(out.attention)) == 0)
    garbage = torch.where(mask[..., None], hidden, torch.full_like(hidden, 1e4))
    out2 = module(garbage, mask, start, norm)
    torch.testing.assert_close(out2.thought, out.thought)
    torch.testing.assert_close(out2.attention, out.attention)


def test_history_of_length_one():
    hidden, mask, start, norm = _inputs(lengths=(1,))
    out = _module()(hidden, mask, start, norm)
    assert torch.isfinite(out.thought).all()
    expected = torch.zeros(1, K, L)
    expected[..., 0] = 1.0
    torch.testing.assert_close(out.attention, expected)
    assert sparsity_loss(out.attention, mask).item() == 0.0


def test_single_factor_is_plain_latent():
    hidden, mask, start, norm = _inputs()
    out = _module(n_factors=1)(hidden, mask, start, norm)
    torch.testing.assert_close(out.gates, torch.ones(B, 1))
    assert orthogonality_loss(out.factors).item() == 0.0
    assert diversity_loss(out.attention).item() == 0.0


def test_gradients_reach_every_parameter():
    hidden, mask, start, norm = _inputs()
    hidden.requires_grad_(True)
    module = _module().train()
    out = module(hidden, mask, start, norm)
    (out.thought.pow(3).sum() + orthogonality_loss(out.factors) + sparsity_loss(out.attention, mask)).backward()
    for name, param in module.named_parameters():
        if name == "gate.2.bias":  # one shift of all K gate scores: the softmax over factors ignores it
            assert param.grad.abs().max() < 1e-6
            continue
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert hidden.grad[~mask].abs().sum() == 0  # padding states receive no gradient either


def test_orthogonality_loss_hand_computed():
    eye = torch.eye(3)[None]  # three orthogonal factors
    assert orthogonality_loss(eye).item() == pytest.approx(0.0)
    same = torch.tensor([[[1.0, 2.0], [1.0, 2.0], [2.0, 4.0]]])  # identical directions: the maximum, 1
    assert orthogonality_loss(same).item() == pytest.approx(1.0)
    pair = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # cos^2 = 1/2 for both ordered pairs
    assert orthogonality_loss(pair).item() == pytest.approx(0.5)
    assert orthogonality_loss(torch.cat([eye[:, :2, :2], pair])).item() == pytest.approx(0.25)  # batch mean


def test_diversity_loss_hand_computed():
    disjoint = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]])
    assert diversity_loss(disjoint).item() == pytest.approx(0.0)
    same = torch.tensor([[[0.2, 0.8, 0.0], [0.2, 0.8, 0.0]]])
    assert diversity_loss(same).item() == pytest.approx(1.0)
    overlap = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])  # cosine = 0.5 / sqrt(0.5)
    assert diversity_loss(overlap).item() == pytest.approx(math.sqrt(0.5))


def test_sparsity_loss_hand_computed():
    mask = torch.tensor([[True, True, True, True, False, False]])
    uniform = torch.tensor([[[0.25, 0.25, 0.25, 0.25, 0.0, 0.0]]])
    assert sparsity_loss(uniform, mask).item() == pytest.approx(1.0)  # padding does not count as a choice
    one_hot = torch.tensor([[[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]]])
    assert sparsity_loss(one_hot, mask).item() == pytest.approx(0.0)
    half = torch.tensor([[[0.5, 0.5, 0.0, 0.0, 0.0, 0.0]]])  # log 2 / log 4
    assert sparsity_loss(half, mask).item() == pytest.approx(0.5)
    both = torch.cat([uniform, one_hot], dim=1)  # mean over factors
    assert sparsity_loss(both, mask).item() == pytest.approx(0.5)


def test_regularisers_have_finite_gradients_at_the_extremes():
    logits = torch.tensor([[[0.0, -1e9, -1e9], [0.0, 0.0, -1e9]]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    attention = logits.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
    (sparsity_loss(attention, mask) + diversity_loss(attention)).backward()
    assert torch.isfinite(logits.grad).all()


def _reference(module, hidden, mask, start, target_norm):
    r"""The class docstring's equations, one history, one factor and one step at a time (slow, plain): for t = 1..T,
    q_k = W_k (z + c_k) + b_k, a_k = softmax over the real positions of q_k . K(h_j) / sqrt(D), f_k = sum_j a_kj V(h_j),
    beta = softmax_k(g([z; f_k])), z = LayerNorm(z + sum_k beta_k f_k); r = W_o z_T scaled to ``target_norm``; the
    per-factor thoughts of the last step W_o LayerNorm(z_{T-1} + f_k), scaled alike."""
    results = []
    for b in range(hidden.size(0)):
        real = [j for j in range(hidden.size(1)) if mask[b, j]]
        keys = [module.key(hidden[b, j]) for j in real]
        values = [module.value(hidden[b, j]) for j in real]
        z, gates = start[b], []
        for _ in range(module.latent_steps):
            factors, scores = [], []
            attention = torch.zeros(module.n_factors, hidden.size(1), dtype=hidden.dtype)
            for k in range(module.n_factors):
                query = module.query_weight[k] @ (z + module.factor_embedding[k]) + module.query_bias[k]
                logits = torch.stack([query @ key for key in keys]) / math.sqrt(module.hidden_size)
                weights = torch.softmax(logits, dim=0)
                attention[k, real] = weights
                factors.append(sum(w * v for w, v in zip(weights, values)))
                scores.append(module.gate(torch.cat([z, factors[k]])).squeeze())
            beta = torch.softmax(torch.stack(scores), dim=0)
            z_prev, z = z, module.norm(z + sum(beta[k] * factors[k] for k in range(module.n_factors)))
            gates.append(beta)

        def scaled(vector, norm=target_norm[b]):
            out = module.output(vector)
            return out * norm / out.norm()

        per_factor = torch.stack([scaled(module.norm(z_prev + f)) for f in factors])
        results.append((scaled(z), torch.stack(factors), attention, torch.stack(gates), per_factor, z))
    return [torch.stack(parts) for parts in zip(*results)]


def test_fused_refinement_equals_the_plain_equations():
    hidden, mask, start, norm = (x.double() if x.is_floating_point() else x for x in _inputs())
    module = _module().double()
    with torch.no_grad():
        thought, factors, attention, gates, per_factor, z_last = _reference(module, hidden, mask, start, norm)
        out = module(hidden, mask, start, norm, per_factor=True)
        raw = module(hidden, mask, start, norm, raw=True)
    torch.testing.assert_close(out.thought, thought)
    torch.testing.assert_close(out.factors, factors)
    torch.testing.assert_close(out.attention, attention)
    torch.testing.assert_close(out.all_gates, gates)
    torch.testing.assert_close(out.factor_thoughts, per_factor)
    torch.testing.assert_close(raw.thought, z_last)


def test_refinement_at_chosen_positions_equals_the_plain_equations_on_each_prefix():
    hidden, mask, _, _ = (x.double() if x.is_floating_point() else x for x in _inputs(lengths=(6, 4)))
    norm = torch.tensor([[1.0, 2.0, 0.5, 1.5, 1.0, 3.0], [2.0, 1.0, 1.0, 0.5, 1.0, 1.0]], dtype=torch.float64)
    rows, steps = mask.nonzero(as_tuple=True)  # every real position, as FLR's all-positions training takes them
    rows, steps = rows.flip(0), steps.flip(0)  # in no particular order
    prefix = mask[rows] & (torch.arange(L)[None] <= steps[:, None])
    module = _module().double()
    with torch.no_grad():
        out = module.forward_at(hidden, mask, rows, steps, norm[rows, steps], per_factor=True)
        assert out.thought.shape == (len(rows), D) and out.attention.shape == (len(rows), K, L)
        assert (out.mask == prefix).all()
        assert (out.attention[~prefix[:, None].expand(-1, K, -1)] == 0).all()
        for n, (b, t) in enumerate(zip(rows.tolist(), steps.tolist())):
            thought, factors, attention, gates, per_factor, _ = _reference(
                module, hidden[b : b + 1], prefix[n : n + 1], hidden[b : b + 1, t], norm[b : b + 1, t]
            )
            torch.testing.assert_close(out.thought[n : n + 1], thought)
            torch.testing.assert_close(out.factors[n : n + 1], factors)
            torch.testing.assert_close(out.attention[n : n + 1], attention)
            torch.testing.assert_close(out.all_gates[n : n + 1], gates)
            torch.testing.assert_close(out.factor_thoughts[n : n + 1], per_factor)
