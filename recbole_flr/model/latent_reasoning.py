"""
recbole_flr.model.latent_reasoning
##################################
FLR's multi-factor latent reasoning module and its three regularisers.

The module refines a latent thought over T steps; at each step K preference factors attend to the pass-1 states
of the user's history, and a dynamic gate mixes them into the thought. The regularisers are pure functions of
the last step's factors and attention maps, so they can be checked against hand-computed values.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LatentOutput:
    r"""What :class:`FactorizedLatentReasoning` returns.

    Attributes:
        thought (torch.Tensor): the latent thought r, scaled to the input-embedding norm, shape [B, D].
        factors (torch.Tensor): factor vectors f_k of the last step, shape [B, K, D].
        attention (torch.Tensor): last step's attention of each factor over the history, rows sum to 1 over the
            real positions and are exactly 0 on padding, shape [B, K, L].
        gates (torch.Tensor): last step's gate weights beta, shape [B, K].
        all_gates (torch.Tensor): the gate weights of every step, shape [B, T, K].
        mask (torch.Tensor): True at the real history positions, shape [B, L].
    """

    thought: torch.Tensor
    factors: torch.Tensor
    attention: torch.Tensor
    gates: torch.Tensor
    all_gates: torch.Tensor
    mask: torch.Tensor


class FactorizedLatentReasoning(nn.Module):
    r"""Iterative multi-factor attention over the history that produces one latent thought.

    z_0 is the state of the last real position. For t = 1..T and each factor k:
    q_k = W_k (z_{t-1} + c_k), a_k = softmax(q_k K(H)^T / sqrt(D)) over real positions, f_k = a_k V(H);
    beta = softmax_k(g(z_{t-1}, f_k)); z_t = LayerNorm(z_{t-1} + sum_k beta_k f_k). Output r = W_o z_T rescaled
    to the given norm. K and V are shared by all factors and computed once (the module stays lightweight); the gate
    g is a two-layer tanh scorer of [z_{t-1}; f_k], so the mix of factors depends on the user and the step.

    Args:
        hidden_size (int): D.
        n_factors (int): K.
        latent_steps (int): T.
        initializer_range (float): std of the normal initialisation of the per-factor parameters.
    """

    def __init__(self, hidden_size, n_factors, latent_steps, initializer_range=0.02):
        super().__init__()
        self.hidden_size = hidden_size
        self.n_factors = n_factors
        self.latent_steps = latent_steps
        self.factor_embedding = nn.Parameter(torch.randn(n_factors, hidden_size) * initializer_range)
        self.query_weight = nn.Parameter(torch.randn(n_factors, hidden_size, hidden_size) * initializer_range)
        self.query_bias = nn.Parameter(torch.zeros(n_factors, hidden_size))
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.gate = nn.Sequential(nn.Linear(2 * hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1))
        self.norm = nn.LayerNorm(hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden, mask, start, target_norm):
        r"""
        Args:
            hidden (torch.Tensor): pass-1 states of the history, shape [B, L, D].
            mask (torch.Tensor): True at real history positions, shape [B, L] (at least one per row).
            start (torch.Tensor): z_0, shape [B, D].
            target_norm (torch.Tensor): the norm the thought is scaled to, shape [B].

        Returns:
            LatentOutput: thought, factors, attention, gates (and the mask it was given).
        """
        keys, values = self.key(hidden), self.value(hidden)  # [B L D]
        blocked = ~mask[:, None, :]  # [B 1 L]
        z, gates = start, []
        for _ in range(self.latent_steps):
            queries = z[:, None, :] + self.factor_embedding  # [B K D]
            queries = torch.einsum("bkd,ked->bke", queries, self.query_weight) + self.query_bias
            scores = queries @ keys.transpose(1, 2) / self.hidden_size**0.5  # [B K L]
            attention = scores.masked_fill(blocked, float("-inf")).softmax(-1).masked_fill(blocked, 0.0)
            factors = attention @ values  # [B K D]
            gate_in = torch.cat([z[:, None, :].expand_as(factors), factors], dim=-1)  # [B K 2D]
            beta = self.gate(gate_in).squeeze(-1).softmax(-1)  # [B K]
            z = self.norm(z + (beta[..., None] * factors).sum(1))
            gates.append(beta)
        thought = self.output(z)
        thought = thought * (target_norm / thought.norm(dim=-1).clamp_min(1e-12))[:, None]
        return LatentOutput(thought, factors, attention, beta, torch.stack(gates, dim=1), mask)

    def forward_positions(self, hidden, mask, target_norm):
        r"""One latent thought per history position at once: the thought of position t is exactly what
        :meth:`forward` gives for the prefix ending at t (z_0 = the state at t, attention over real positions <= t).

        Used to take the loss at every position of a sequence in one pass (``train_all_positions``).

        Args:
            hidden (torch.Tensor): pass-1 states, shape [B, L, D] (causal, so position t saw only its prefix).
            mask (torch.Tensor): True at real history positions, shape [B, L]; position 0 is real.
            target_norm (torch.Tensor): the norm each position's thought is scaled to, shape [B, L].

        Returns:
            LatentOutput: thought [B, L, D], factors [B, L, K, D], attention [B, L, K, L] (zero after t and on
            padding), gates [B, L, K], all_gates [B, L, T, K], and ``mask`` as given.
        """
        length = hidden.size(1)
        keys, values = self.key(hidden), self.value(hidden)  # [B L D]
        causal = torch.ones(length, length, dtype=torch.bool, device=hidden.device).tril()  # [L(query) L(key)]
        blocked = ~(causal[None] & mask[:, None, :])[:, :, None, :]  # [B L 1 L]
        z, gates = hidden, []
        for _ in range(self.latent_steps):
            queries = z[:, :, None, :] + self.factor_embedding  # [B L K D]
            queries = torch.einsum("blkd,ked->blke", queries, self.query_weight) + self.query_bias
            scores = torch.einsum("blke,bme->blkm", queries, keys) / self.hidden_size**0.5  # [B L K L]
            attention = scores.masked_fill(blocked, float("-inf")).softmax(-1).masked_fill(blocked, 0.0)
            factors = torch.einsum("blkm,bmd->blkd", attention, values)  # [B L K D]
            gate_in = torch.cat([z[:, :, None, :].expand_as(factors), factors], dim=-1)  # [B L K 2D]
            beta = self.gate(gate_in).squeeze(-1).softmax(-1)  # [B L K]
            z = self.norm(z + (beta[..., None] * factors).sum(2))
            gates.append(beta)
        thought = self.output(z)
        thought = thought * (target_norm / thought.norm(dim=-1).clamp_min(1e-12))[..., None]
        return LatentOutput(thought, factors, attention, beta, torch.stack(gates, dim=2), mask)


def _mean_off_diagonal(gram):
    r"""Mean of the off-diagonal entries of a batch of K x K matrices [B, K, K]; 0 when K = 1."""
    k = gram.size(-1)
    if k < 2:
        return gram.sum() * 0.0  # keeps the graph and dtype; no pairs, so no penalty
    off = ~torch.eye(k, dtype=torch.bool, device=gram.device)
    return gram[:, off].mean()


def orthogonality_loss(factors):
    r"""Mean over k != l of cos(f_k, f_l)^2: 0 for orthogonal factors, 1 for identical ones.

    Args:
        factors (torch.Tensor): shape [B, K, D].

    Returns:
        torch.Tensor: scalar.
    """
    unit = F.normalize(factors, dim=-1)
    return _mean_off_diagonal((unit @ unit.transpose(1, 2)).pow(2))


def diversity_loss(attention):
    r"""Attention overlap: mean over k != l of the cosine similarity of a_k and a_l.

    Attention weights are non-negative, so each cosine lies in [0, 1]: 0 for factors that attend to disjoint
    positions, 1 for identical maps.

    Args:
        attention (torch.Tensor): shape [B, K, L].

    Returns:
        torch.Tensor: scalar.
    """
    unit = F.normalize(attention, dim=-1)
    return _mean_off_diagonal(unit @ unit.transpose(1, 2))


def sparsity_loss(attention, mask):
    r"""Mean normalised entropy of each factor's attention over the real positions: entropy / log(n_real).

    1 for uniform attention, 0 for one-hot attention; a history of one item has no choice to make and gives 0.

    Args:
        attention (torch.Tensor): shape [B, K, L], zero on padding.
        mask (torch.Tensor): True at real positions, shape [B, L].

    Returns:
        torch.Tensor: scalar.
    """
    n_real = mask.sum(-1).to(attention.dtype)  # [B]
    # clamp only inside the log: 0 * log(clamp(0)) = 0 with a finite gradient, unlike xlogy at 0
    entropy = -(attention * attention.clamp_min(1e-12).log()).sum(-1)  # [B K]
    norm = n_real.clamp_min(2.0).log()[:, None]
    return torch.where(n_real[:, None] > 1, entropy / norm, torch.zeros_like(entropy)).mean()
