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
        thought (torch.Tensor): the latent thought r, scaled to the input-embedding norm, shape [B, D]; with
            ``raw=True`` the latent state z_T itself (LayerNorm's output, no W_o, no rescaling).
        factors (torch.Tensor): factor vectors f_k of the last step, shape [B, K, D].
        attention (torch.Tensor): last step's attention of each factor over the history, rows sum to 1 over the
            real positions and are exactly 0 on padding, shape [B, K, L].
        gates (torch.Tensor): last step's gate weights beta, shape [B, K].
        all_gates (torch.Tensor): the gate weights of every step, shape [B, T, K].
        mask (torch.Tensor): True at the real history positions, shape [B, L].
        factor_thoughts (torch.Tensor, optional): one thought per factor, W_o LayerNorm(z_{T-1} + f_k) scaled like
            the thought (with ``raw=True`` LayerNorm(z_{T-1} + f_k) itself), shape [B, K, D]; only when asked for
            (``per_factor=True``: ``factor_aggregation: mixture``).
    """

    thought: torch.Tensor
    factors: torch.Tensor
    attention: torch.Tensor
    gates: torch.Tensor
    all_gates: torch.Tensor
    mask: torch.Tensor
    factor_thoughts: torch.Tensor = None


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

    def forward(self, hidden, mask, start, target_norm, per_factor=False, raw=False):
        r"""
        Args:
            hidden (torch.Tensor): pass-1 states of the history, shape [B, L, D].
            mask (torch.Tensor): True at real history positions, shape [B, L] (at least one per row).
            start (torch.Tensor): z_0, shape [B, D].
            target_norm (torch.Tensor): the norm the thought is scaled to, shape [B].
            per_factor (bool): also return one thought per factor (``factor_thoughts``).
            raw (bool): return the latent state z_T as the thought (``user_vector: latent_state``: it is scored, not
                fed to pass 2 as a token, so it keeps LayerNorm's scale instead of an input embedding's).

        Returns:
            LatentOutput: thought, factors, attention, gates (and the mask it was given).
        """
        rows = torch.arange(hidden.size(0), device=hidden.device)
        thought, factors, attention, gates, factor_thoughts = self._refine(
            hidden, mask[:, None], start, rows, torch.zeros_like(rows), target_norm, per_factor, raw
        )
        return LatentOutput(thought, factors, attention, gates[:, -1], gates, mask, factor_thoughts)

    def forward_at(self, hidden, mask, rows, steps, target_norm, per_factor=False, raw=False):
        r"""The latent thoughts of N chosen positions (row, step) of a batch of histories: position (b, t) gets
        exactly what :meth:`forward` gives for the prefix of history b ending at t (z_0 = the state at t, attention
        over the real positions <= t). Used to take the loss at every real position of a batch in one pass
        (``train_all_positions``): the attention runs over the [B, L] grid of positions, the rest (projections,
        gate, LayerNorm: most of the cost) over the N chosen positions only.

        Args:
            hidden (torch.Tensor): pass-1 states, shape [B, L, D] (causal, so position t saw only its prefix).
            mask (torch.Tensor): True at real history positions, shape [B, L]; position 0 is real.
            rows (torch.Tensor): the history of each position, shape [N].
            steps (torch.Tensor): the position in it, shape [N].
            target_norm (torch.Tensor): the norm each thought is scaled to, shape [N].
            per_factor (bool): also return one thought per factor and position (``factor_thoughts`` [N, K, D]).
            raw (bool): the latent states z_T as the thoughts (see :meth:`forward`).

        Returns:
            LatentOutput: thought [N, D], factors [N, K, D], attention [N, K, L] (zero after the step and on
            padding), gates [N, K], all_gates [N, T, K], and ``mask``: each position's prefix, [N, L].
        """
        length = hidden.size(1)
        causal = torch.ones(length, length, dtype=torch.bool, device=hidden.device).tril()  # [L(query) L(key)]
        visible = causal[None] & mask[:, None, :]  # [B L L]: every slot sees position 0 at least
        thought, factors, attention, gates, factor_thoughts = self._refine(
            hidden, visible, hidden[rows, steps], rows, steps, target_norm, per_factor, raw
        )
        return LatentOutput(thought, factors, attention, gates[:, -1], gates, visible[rows, steps], factor_thoughts)

    def _refine(self, hidden, visible, start, rows, slots, target_norm, per_factor=False, raw=False):
        r"""The T refinement steps for N queries: query n is slot ``slots[n]`` of history ``rows[n]``.

        Written for speed (same maths as the class docstring): keys and values are computed once per history and the
        attention runs over a [B, P] grid of slots (P = L for all positions, 1 for one query per history), while the
        projections and the gate, most of the cost, run over the N queries only (a quarter of the grid's slots on
        amazon-games-mini, whose histories are short); the K query projections are one matmul, the constant part
        W_k c_k + b_k and the 1/sqrt(D) are folded, the mask is one additive bias (every slot sees at least one
        position, so the softmax is exactly 0 where blocked), and the gate's first layer is split so z_{t-1}'s half is
        computed once per query instead of once per factor.

        Args:
            hidden (torch.Tensor): pass-1 states of the histories, shape [B, L, D].
            visible (torch.Tensor): bool, True where each slot may look, shape [B, P, L] (at least one per slot).
            start (torch.Tensor): z_0 of each query, shape [N, D].
            rows (torch.Tensor): the history of each query, shape [N].
            slots (torch.Tensor): the slot of each query in it, shape [N] (no two queries share a slot).
            target_norm (torch.Tensor): the norm each thought is scaled to, shape [N].
            per_factor (bool): also compute the per-factor thoughts W_o LayerNorm(z_{T-1} + f_k) of the last step.
            raw (bool): z_T and LayerNorm(z_{T-1} + f_k) themselves, without W_o and the rescaling.

        Returns:
            tuple: thought [N, D], last step's factors [N, K, D] and attention [N, K, L], gates [N, T, K], per-factor
            thoughts [N, K, D] (None unless ``per_factor``).
        """
        n_queries, dim = start.shape
        batch, n_slots, length = visible.shape
        n_factors = self.n_factors
        keys, values = self.key(hidden), self.value(hidden)  # [B L D]
        keys_t = keys.transpose(1, 2) * dim**-0.5  # [B D L], the 1/sqrt(D) folded in
        bias = torch.zeros(visible.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(~visible, float("-inf"))
        bias = bias[:, :, None]  # [B P 1 L], broadcast over the factors
        query_weight = self.query_weight.permute(2, 0, 1).reshape(dim, n_factors * dim)  # [D K*D]: block k is W_k^T
        query_const = torch.einsum("kd,ked->ke", self.factor_embedding, self.query_weight) + self.query_bias  # [K D]
        gate_in, gate_act, gate_out = self.gate
        gate_z, gate_f = gate_in.weight.split(dim, dim=1)  # [D D] each: the halves for z_{t-1} and f_k
        z, gates = start, []
        for _ in range(self.latent_steps):
            z_prev = z
            queries = (z @ query_weight).view(n_queries, n_factors, dim) + query_const  # [N K D]
            grid = queries.new_zeros(batch, n_slots, n_factors, dim).index_put((rows, slots), queries)  # [B P K D]
            scores = grid.view(batch, n_slots * n_factors, dim) @ keys_t  # [B P*K L]
            attention = (scores.view(batch, n_slots, n_factors, length) + bias).softmax(-1)  # [B P K L]
            factors = (attention.view(batch, -1, length) @ values).view(batch, n_slots, n_factors, dim)
            attention, factors = attention[rows, slots], factors[rows, slots]  # [N K L], [N K D]
            gate_hidden = F.linear(z, gate_z, gate_in.bias)[:, None] + F.linear(factors, gate_f)  # [N K D]
            beta = gate_out(gate_act(gate_hidden)).squeeze(-1).softmax(-1)  # [N K]
            z = self.norm(z + (beta[..., None] * factors).sum(1))
            gates.append(beta)
        thought = z if raw else self._scaled_output(z, target_norm)
        factor_thoughts = None
        if per_factor:  # each factor's own update of the last step, as if its gate were 1
            factor_thoughts = self.norm(z_prev[:, None] + factors)
            factor_thoughts = factor_thoughts if raw else self._scaled_output(factor_thoughts, target_norm[:, None])
        return thought, factors, attention, torch.stack(gates, dim=1), factor_thoughts

    def _scaled_output(self, z, target_norm):
        r"""W_o z rescaled to ``target_norm`` (broadcast over z's leading dimensions)."""
        thought = self.output(z)
        return thought * (target_norm / thought.norm(dim=-1).clamp_min(1e-12))[..., None]


def _mean_off_diagonal(gram):
    r"""Mean of the off-diagonal entries of a batch of K x K matrices [B, K, K]; 0 when K = 1."""
    k = gram.size(-1)
    if k < 2:
        return gram.sum() * 0.0  # keeps the graph and dtype; no pairs, so no penalty
    off = ~torch.eye(k, dtype=torch.bool, device=gram.device)
    return gram[:, off].mean()


def pairwise_cosine(rows):
    r"""Cosine similarity of every pair of the K rows of each batch element.

    Args:
        rows (torch.Tensor): shape [B, K, X].

    Returns:
        torch.Tensor: cos(r_k, r_l), shape [B, K, K].
    """
    unit = F.normalize(rows, dim=-1)
    return unit @ unit.transpose(1, 2)


def factor_cosine(factors):
    r"""cos(f_k, f_l) of every pair of factor vectors [B, K, D], shape [B, K, K]."""
    return pairwise_cosine(factors)


def orthogonality_loss(factors):
    r"""Mean over k != l of cos(f_k, f_l)^2: 0 for orthogonal factors, 1 for identical ones.

    Args:
        factors (torch.Tensor): shape [B, K, D].

    Returns:
        torch.Tensor: scalar.
    """
    return _mean_off_diagonal(factor_cosine(factors).pow(2))


def attention_cosine(attention):
    r"""cos(a_k, a_l) of every pair of attention maps [B, K, L], shape [B, K, K]; each lies in [0, 1] (attention
    weights are non-negative)."""
    return pairwise_cosine(attention)


def diversity_loss(attention):
    r"""Attention overlap: mean over k != l of the cosine similarity of a_k and a_l (:func:`attention_cosine`).

    0 for factors that attend to disjoint positions, 1 for identical maps.

    Args:
        attention (torch.Tensor): shape [B, K, L].

    Returns:
        torch.Tensor: scalar.
    """
    return _mean_off_diagonal(attention_cosine(attention))


def attention_entropy(attention, mask):
    r"""Normalised entropy of each factor's attention over the real positions: entropy / log(n_real).

    1 for uniform attention, 0 for one-hot attention; a history of one item has no choice to make and gives 0.

    Args:
        attention (torch.Tensor): shape [B, K, L], zero on padding.
        mask (torch.Tensor): True at real positions, shape [B, L].

    Returns:
        torch.Tensor: shape [B, K].
    """
    n_real = mask.sum(-1).to(attention.dtype)  # [B]
    # clamp only inside the log: 0 * log(clamp(0)) = 0 with a finite gradient, unlike xlogy at 0
    entropy = -(attention * attention.clamp_min(1e-12).log()).sum(-1)  # [B K]
    norm = n_real.clamp_min(2.0).log()[:, None]
    return torch.where(n_real[:, None] > 1, entropy / norm, torch.zeros_like(entropy))


def sparsity_loss(attention, mask):
    r"""Mean normalised entropy of each factor's attention over the real positions (:func:`attention_entropy`).

    Args:
        attention (torch.Tensor): shape [B, K, L], zero on padding.
        mask (torch.Tensor): True at real positions, shape [B, L].

    Returns:
        torch.Tensor: scalar.
    """
    return attention_entropy(attention, mask).mean()


def mixture_log_probs(scores, gates):
    r"""log sum_k beta_k softmax(s_k): a gate-weighted mixture of the K factors' item distributions
    (``factor_aggregation: mixture``), so its cross-entropy is the mixture's negative log-likelihood.

    Args:
        scores (torch.Tensor): each factor's item scores u_k E^T, shape [N, K, n_items].
        gates (torch.Tensor): the mixture weights beta, rows sum to 1, shape [N, K].

    Returns:
        torch.Tensor: log-probabilities of all items, shape [N, n_items].
    """
    log_probs = torch.log_softmax(scores, dim=-1)  # [N K n_items]
    return torch.logsumexp(log_probs + gates.clamp_min(1e-12).log()[..., None], dim=1)
