r"""
recbole_flr.trainer.grpo
########################
The maths of FLR's latent GRPO stage as pure functions on tensors (no model, no config), so that tests check each
one against hand-computed values.

Shape letters: B histories in a batch, G samples per history (``grpo_num_generations``), N = B * G samples,
D latent width, I items (column 0 is RecBole's padding item).

Sample order everywhere is ``repeat_interleave``: row ``b * G + g`` is sample ``g`` of history ``b``, so
``x.view(B, G)`` gives one group per row.

References:
    [PPO] Schulman et al., "Proximal Policy Optimization Algorithms", arXiv 1707.06347, eq. (7).
    [GRPO] Shao et al., "DeepSeekMath", arXiv 2402.03300, sec. 4.1: group-relative advantages, k3 KL (eq. 4).
    [DAPO] Yu et al., "DAPO", arXiv 2503.14476, eq. (10): decoupled clip range [1 - eps_low, 1 + eps_high].
    [k3] Schulman, "Approximating KL divergence" (2020), the estimator trl uses for GRPO.
    [trl] huggingface/trl ``GRPOTrainer`` (v0.14 loss with ratio ``exp(logp - logp.detach())``; v0.16+ clipping
          with ``epsilon``/``epsilon_high`` and the per-sign clip ratio; ``num_iterations`` updates per generation
          batch with the stored ``old_per_token_logps``; ``scale_rewards``).
    [DrGRPO] Liu et al., "Understanding R1-Zero-Like Training", arXiv 2503.20783, sec. 3.1: no std normaliser.
    [ApproxNDCG] Qin, Liu, Li, "A general approximation framework for direct optimization of information
          retrieval measures", Information Retrieval 13 (2010), eq. (9): the rank as a sum of sigmoids.
"""

import math
from collections import namedtuple

import torch


def group_advantages(rewards, eps=1e-4, scale=True):
    r"""Group-relative advantages [GRPO sec. 4.1.2]: :math:`A_{b,g} = (R_{b,g} - \mathrm{mean}_g R_b) /
    (\mathrm{std}_g R_b + \epsilon)`, or with ``scale=False`` [DrGRPO; trl's ``scale_rewards=False``] only
    :math:`R_{b,g} - \mathrm{mean}_g R_b`, so a group whose rewards barely differ gets a small update.

    Mean and std are taken over the G samples of ONE history only, so an advantage never depends on the batch
    size, on the other histories in the batch, or on the number of processes (LatentR3 normalised over the
    batch, which tied its results to 2 GPUs). The std is the unbiased one (Bessel's G - 1 normaliser, torch's
    default ``std``, as trl computes it); ``eps`` = 1e-4 is trl's. Equal rewards give exactly zero advantages.

    Args:
        rewards (torch.Tensor): rewards, shape [B, G], G >= 2.
        eps (float): added to the std so that a group of equal rewards divides 0 by ``eps``.
        scale (bool): divide by the group's std (``grpo_scale_rewards``).

    Returns:
        torch.Tensor: advantages, shape [B, G].
    """
    if rewards.dim() != 2 or rewards.size(1) < 2:
        raise ValueError(f"group_advantages needs rewards of shape [B, G] with G >= 2, got {tuple(rewards.shape)}")
    mean = rewards.mean(dim=1, keepdim=True)  # [B 1]
    if not scale:
        return rewards - mean
    std = rewards.std(dim=1, unbiased=True, keepdim=True)  # [B 1]
    return (rewards - mean) / (std + eps)


def groups_with_signal(rewards):
    r"""Share of groups whose G rewards are not all equal, i.e. whose advantages are not all zero: the groups that
    give the policy gradient any signal. A group of equal rewards (every sample ranks the target outside the top
    k under NDCG@k, say) costs its rollout and teaches nothing.

    Args:
        rewards (torch.Tensor): rewards, shape [B, G].

    Returns:
        torch.Tensor: the share in [0, 1] (scalar, no grad).
    """
    rewards = rewards.detach()
    return (rewards.amax(dim=1) > rewards.amin(dim=1)).float().mean()


def clipped_surrogate(logp_new, logp_old, advantages, eps_low=0.2, eps_high=0.28):
    r"""PPO clipped surrogate loss [PPO eq. 7] with a decoupled clip range [DAPO eq. 10], as trl's GRPO loss:

    .. math::
        \rho_i = \exp(\log\pi_\theta(a_i) - \log\pi_{old}(a_i)), \quad
        L = -\frac{1}{N}\sum_i \min\big(\rho_i A_i,\ \mathrm{clip}(\rho_i, 1-\epsilon_{low}, 1+\epsilon_{high}) A_i\big)

    Each sample is one "sequence" (one latent action), so the mean is over the N samples. On the first update of a
    rollout ``logp_new`` equals the stored ``logp_old``: rho = 1, nothing is clipped and the gradient is
    :math:`-\frac{1}{N}\sum_i A_i \nabla \log\pi_\theta(a_i)`, exactly trl v0.14's ``exp(logp - logp.detach()) * A``;
    the clip acts from the second update of the same rollout on (``grpo_updates_per_rollout`` >= 2, trl's
    ``num_iterations``).

    A sample is clipped (its gradient is zero) exactly when :math:`\rho_i > 1+\epsilon_{high}` and
    :math:`A_i > 0`, or :math:`\rho_i < 1-\epsilon_{low}` and :math:`A_i < 0` (trl's ``is_high_clipped`` /
    ``is_low_clipped``); a ratio on the boundary is not clipped.

    Args:
        logp_new (torch.Tensor): log-likelihood of each sample under the current policy (with grad), shape [N].
        logp_old (torch.Tensor): the same under the policy that drew the samples (no grad), shape [N].
        advantages (torch.Tensor): advantages, shape [N] (or [B, G], flattened in the same order).
        eps_low (float): lower clip width, ``grpo_epsilon``.
        eps_high (float): upper clip width, ``grpo_epsilon_high``.

    Returns:
        tuple(torch.Tensor, torch.Tensor): the loss (scalar) and the fraction of clipped samples (scalar, no grad).
    """
    advantages = advantages.reshape(-1)
    ratio = torch.exp(logp_new - logp_old.detach())  # [N]
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -torch.min(unclipped, clipped).mean()
    with torch.no_grad():
        is_low = (ratio < 1.0 - eps_low) & (advantages < 0)
        is_high = (ratio > 1.0 + eps_high) & (advantages > 0)
        clip_fraction = (is_low | is_high).to(ratio.dtype).mean()
    return loss, clip_fraction


def kl_k3(logp_policy, logp_ref):
    r"""Per-sample k3 estimate of :math:`KL(\pi_\theta \| \pi_{ref})` [k3; GRPO eq. 4], as trl computes it:

    .. math:: \mathbb{D}_i = \exp(\log\pi_{ref} - \log\pi_\theta) - (\log\pi_{ref} - \log\pi_\theta) - 1

    Non-negative, zero exactly where the policy equals the reference, unbiased for samples drawn from the policy.

    Args:
        logp_policy (torch.Tensor): log-likelihood of each sample under the policy (with grad), shape [N].
        logp_ref (torch.Tensor): the same under the frozen reference, shape [N].

    Returns:
        torch.Tensor: per-sample KL estimates, shape [N]; the caller takes the mean.
    """
    delta = logp_ref - logp_policy
    return torch.exp(delta) - delta - 1.0


def gaussian_logprob(noise, sigma):
    r"""Log-density of isotropic Gaussian noise: :math:`\log \mathcal{N}(\epsilon; 0, \sigma^2 I) =
    -\frac{\|\epsilon\|^2}{2\sigma^2} - D\log\sigma - \frac{D}{2}\log 2\pi`.

    The latent policy is :math:`r_i \sim \mathcal{N}(r_\theta, \sigma^2 I)`; pass ``noise = r_i.detach() - r_theta``
    (r_theta with grad) to get :math:`\log\pi_\theta(r_i)` whose gradient is :math:`(r_i - r_\theta)/\sigma^2`.

    Args:
        noise (torch.Tensor): sample minus mean, shape [N, D].
        sigma (torch.Tensor or float): standard deviation per sample, shape [N] (or a scalar), > 0.

    Returns:
        torch.Tensor: log-densities, shape [N].
    """
    dim = noise.size(-1)
    sigma = torch.as_tensor(sigma, dtype=noise.dtype, device=noise.device)
    return -0.5 * noise.pow(2).sum(dim=-1) / sigma.pow(2) - dim * torch.log(sigma) - 0.5 * dim * math.log(2 * math.pi)


def _pessimistic_rank(logits, target):
    r"""1-based rank of the target over the real items (column 0, the padding item, never counts), ties counted
    against the target: the number of real items scored >= the target, the target included. Shape [N], no grad.

    A scorer that gives every item the same score thus ranks the target last, not first.
    """
    logits = logits.detach()
    target_score = logits.gather(1, target.reshape(-1, 1))  # [N 1]
    real = logits[:, 1:]
    rank = (real >= target_score).sum(dim=1)  # one pass over [N I]
    return torch.where(rank == 0, real.size(1), rank)  # 0 only for a NaN target score: rank it last


def reward_logprob(logits, target):
    r"""Reward: :math:`\log p(i^* \mid r_i) = s_{i^*} - \log\sum_{j \ge 1} \exp s_j`, the log-probability of the
    held-out next item under the full-item softmax, the padding column 0 excluded from the softmax.

    Unlike the rank rewards it also sees margins: among samples whose scores are the same values in different
    orders, the one that ranks the target first has the maximum reward; otherwise the largest softmax share wins.

    Args:
        logits (torch.Tensor): item scores, shape [N, I]; column 0 is the padding item.
        target (torch.Tensor): target item ids (>= 1), shape [N].

    Returns:
        torch.Tensor: rewards (<= 0), shape [N]; detach the logits to use it as a reward.
    """
    # logsumexp over the real items: no [N, I] log-softmax output (the reward runs on B * G rows of all items)
    return logits.gather(1, target.reshape(-1, 1)).squeeze(1) - torch.logsumexp(logits[:, 1:], dim=1)


def reward_reciprocal_rank(logits, target):
    r"""Reward: :math:`1 / \mathrm{rank}(i^*)`, rank 1-based over the real items (padding column 0 excluded).

    Ties are broken against the target (pessimistic rank :math:`1 + |\{j \ge 1, j \ne i^*: s_j \ge s_{i^*}\}|`),
    so only a target scored strictly above every other item gets the maximum reward 1.

    Args:
        logits (torch.Tensor): item scores, shape [N, I].
        target (torch.Tensor): target item ids, shape [N].

    Returns:
        torch.Tensor: rewards in (0, 1], shape [N], no grad.
    """
    return 1.0 / _pessimistic_rank(logits, target).to(logits.dtype)


def reward_soft_ndcg(logits, target, temperature=1.0, relative=False):
    r"""Reward: a smooth NDCG of the single relevant item over the full ranking [ApproxNDCG eq. 9],
    :math:`1 / \log_2(1 + \tilde r)` with the soft rank
    :math:`\tilde r = 1 + \sum_{j \ge 1, j \ne i^*} \sigma((s_j - s_{i^*}) / \tau)` (padding column 0 excluded).

    As :math:`\tau \to 0` the soft rank tends to the rank (ties count 1/2) and the reward to NDCG without a cut-off;
    at any :math:`\tau > 0` it changes with every score, so the G samples of a group differ in reward even when they
    all rank the target outside the top 10, where NDCG@10 is 0 for every sample and the group carries no signal.
    Unlike the log-probability (the SFT loss), it weighs the items scored near the target, not the whole softmax
    mass, and its gain is steepest near the top of the ranking.

    With an absolute :math:`\tau` a longer user vector (all scores times c > 1) sharpens the sigmoids and raises the
    reward of a target scored above most items without changing any rank: a direction the policy can climb for
    nothing. ``relative=True`` measures :math:`\tau` in units of each row's score std over the real items
    (population std, detached), which makes the reward invariant to that scale.

    Args:
        logits (torch.Tensor): item scores, shape [N, I].
        target (torch.Tensor): target item ids (>= 1), shape [N].
        temperature (float): :math:`\tau` in score units, ``grpo_reward_temperature``.
        relative (bool): :math:`\tau` times each row's score std, ``grpo_reward_temperature_relative``.

    Returns:
        torch.Tensor: rewards in (0, 1], shape [N], no grad.
    """
    logits = logits.detach()
    target = target.reshape(-1, 1)
    target_score = logits.gather(1, target)  # [N 1]
    if relative:
        temperature = temperature * logits[:, 1:].std(dim=1, unbiased=False, keepdim=True).clamp_min(1e-12)  # [N 1]
    above = torch.sigmoid((logits[:, 1:] - target_score) / temperature).sum(dim=1)  # [N]; includes the target: 1/2
    soft_rank = 1.0 + above - 0.5
    return 1.0 / torch.log2(1.0 + soft_rank)


def reward_ndcg_at_k(logits, target, k=10):
    r"""Reward: NDCG@k of the single relevant item, :math:`1 / \log_2(\mathrm{rank}(i^*) + 1)` if rank <= k, else 0
    (the ideal DCG of one relevant item is 1). Rank and ties as in :func:`reward_reciprocal_rank`.

    Args:
        logits (torch.Tensor): item scores, shape [N, I].
        target (torch.Tensor): target item ids, shape [N].
        k (int): cut-off.

    Returns:
        torch.Tensor: rewards in [0, 1], shape [N], no grad.
    """
    rank = _pessimistic_rank(logits, target).to(logits.dtype)
    gain = 1.0 / torch.log2(rank + 1.0)
    return torch.where(rank <= k, gain, torch.zeros_like(gain))


def reward_random(logits, target):
    r"""Control reward: uniform noise in [0, 1) from torch's global generator, independent of the scores and the target.
    GRPO with it trains on advantages that carry no information, so whatever it gains on valid over its SFT checkpoint
    is what picking the best of several perturbed models gives, not what a reward teaches.

    Args:
        logits (torch.Tensor): item scores, shape [N, I] (only the shape and device are read).
        target (torch.Tensor): target item ids, shape [N] (not read).

    Returns:
        torch.Tensor: rewards, shape [N], no grad.
    """
    return torch.rand(logits.size(0), device=logits.device, dtype=logits.dtype)


REWARDS = {
    "random": reward_random,
    "logprob": reward_logprob,
    "reciprocal_rank": reward_reciprocal_rank,
    "ndcg": reward_ndcg_at_k,
    "soft_ndcg": reward_soft_ndcg,
}


def sample_latents(thought, num_generations, noise_std_rel, generator=None, noise_free_first=False):
    r"""Draw G latent thoughts per history from the latent policy :math:`r_{b,g} = r_b + \epsilon_{b,g}`,
    :math:`\epsilon_{b,g} \sim \mathcal{N}(0, \sigma_b^2 I)`, with :math:`\sigma_b = \sigma_{rel}\,\mathrm{RMS}(r_b)`
    and :math:`\mathrm{RMS}(r_b) = \sqrt{\frac{1}{D}\sum_d r_{b,d}^2}` (per history, detached: the noise scale is
    a fixed exploration width, not something the policy learns).

    The returned thoughts keep the gradient of ``thought``; the Gaussian surrogate detaches them as actions.

    Args:
        thought (torch.Tensor): latent thoughts :math:`r_b`, shape [B, D].
        num_generations (int): samples per history G.
        noise_std_rel (float): :math:`\sigma_{rel}`, ``grpo_noise_std``.
        generator (torch.Generator, optional): random source on ``thought``'s device; the global one if None.
        noise_free_first (bool): sample g = 0 of each history is :math:`r_b` itself (zero noise).

    Returns:
        tuple(torch.Tensor, torch.Tensor, torch.Tensor): thoughts shape [B*G, D], noise shape [B*G, D],
        sigma shape [B*G].
    """
    batch, dim = thought.shape
    with torch.no_grad():
        rms = thought.detach().pow(2).mean(dim=1).sqrt().clamp_min(1e-12)  # [B]; > 0 for the log-density
        sigma = (noise_std_rel * rms).repeat_interleave(num_generations)  # [B*G]
        noise = torch.randn(
            batch * num_generations, dim, generator=generator, device=thought.device, dtype=thought.dtype
        ) * sigma.unsqueeze(
            1
        )  # [B*G D]
        if noise_free_first:
            noise.view(batch, num_generations, dim)[:, 0] = 0.0
    thoughts = thought.repeat_interleave(num_generations, dim=0) + noise  # [B*G D]
    return thoughts, noise, sigma


#: One rollout of a batch, drawn once under ``no_grad`` and reused by each policy update on it: the sampled thoughts
#: (actions) [N D], sigma [N], rewards [N], advantages [N], the actions' log-likelihood under the policy that drew them
#: ``logp_old`` [N] and under the reference ``logp_ref`` ([N], or None without one).
Rollout = namedtuple("Rollout", "samples sigma rewards advantages logp_old logp_ref")


def sample_logprob(thought, samples, sigma):
    r"""Log-likelihood of each of the G samples of a history under the policy :math:`\mathcal{N}(r_b, \sigma^2 I)`.

    Args:
        thought (torch.Tensor): the policy's means :math:`r_b`, shape [B, D] (with grad or not).
        samples (torch.Tensor): the sampled thoughts, shape [B*G, D], in :func:`sample_latents`' order.
        sigma (torch.Tensor): their standard deviations, shape [B*G].

    Returns:
        torch.Tensor: log-densities, shape [B*G].
    """
    return gaussian_logprob(samples - thought.repeat_interleave(samples.size(0) // thought.size(0), dim=0), sigma)


def draw_rollout(
    thought, score, target, num_generations, noise_std_rel, reward, scale_rewards=True, noise_free_first=False
):
    r"""One rollout around the thoughts :math:`r_b`: G samples per history (:func:`sample_latents`), their rewards
    against the target item, the group-relative advantages (:func:`group_advantages`) and the samples'
    log-likelihood under the policy that drew them (the PPO ratio's denominator). No grad is taken here.

    Args:
        thought (torch.Tensor): the policy's means :math:`r_b`, shape [B, D].
        score (callable): sampled thoughts [B*G, D] -> scores of all items [B*G, I].
        target (torch.Tensor): the target item of each history, shape [B].
        num_generations (int): samples per history G.
        noise_std_rel (float): :math:`\sigma_{rel}` of :func:`sample_latents`.
        reward (callable): one of :data:`REWARDS` (scores [N, I], target [N]) -> [N].
        scale_rewards (bool): divide the centred rewards by the group's std (:func:`group_advantages`).
        noise_free_first (bool): sample 0 of each history is :math:`r_b` itself.

    Returns:
        Rollout: with ``logp_ref`` None.
    """
    samples, noise, sigma = sample_latents(thought, num_generations, noise_std_rel, noise_free_first=noise_free_first)
    rewards = reward(score(samples), target.repeat_interleave(num_generations))  # [B*G]
    advantages = group_advantages(rewards.view(-1, num_generations), scale=scale_rewards).view(-1)  # [B*G]
    return Rollout(samples, sigma, rewards, advantages, gaussian_logprob(noise, sigma), None)


def policy_loss(logp, rollout, eps_low=0.2, eps_high=0.28):
    r"""The loss terms of one policy update on a stored rollout: the clipped surrogate (:func:`clipped_surrogate`) of
    the rollout's actions under the current policy and, when the rollout has ``logp_ref``, the mean k3 KL to the
    reference (:func:`kl_k3`; zero without one).

    Args:
        logp (torch.Tensor): the rollout's actions' log-likelihood under the current policy, with grad, shape [N]
            (:func:`sample_logprob` of the current thought).
        rollout (Rollout): the batch's rollout.
        eps_low (float): lower clip width.
        eps_high (float): upper clip width.

    Returns:
        tuple(torch.Tensor, torch.Tensor, torch.Tensor): surrogate loss, mean KL, clip fraction (scalars).
    """
    surrogate, clip_fraction = clipped_surrogate(logp, rollout.logp_old, rollout.advantages, eps_low, eps_high)
    if rollout.logp_ref is None:
        return surrogate, torch.zeros((), device=logp.device), clip_fraction
    return surrogate, kl_k3(logp, rollout.logp_ref).mean(), clip_fraction


#: The running sums of an epoch's rollouts (:func:`rollout_sums`) and policy updates (``updates``: samples, ``clip``
#: and ``kl``: their clip fractions and KLs times the samples) from which :func:`epoch_stats` computes its means.
STAT_SUMS = ("n", "r", "r2", "a2", "groups", "signal", "updates", "clip", "kl", "rows", "norm", "shift")


def rollout_sums(rewards, advantages, thought, sft_thought):
    r"""What one rollout adds to the epoch's :data:`STAT_SUMS` (Python floats).

    Args:
        rewards (torch.Tensor): rewards, shape [B, G].
        advantages (torch.Tensor): advantages, shape [B*G].
        thought (torch.Tensor): the noise-free thoughts r the samples were drawn around, shape [B, D].
        sft_thought (torch.Tensor): the thoughts the SFT weights give for the same histories, shape [B, D].

    Returns:
        dict: sums over the B*G samples (``n``, ``r``, ``r2``, ``a2``) and over the B histories (``groups``,
        ``signal``, ``rows``, ``norm``, ``shift``).
    """
    batch = rewards.size(0)
    return {
        "n": rewards.numel(),
        "r": rewards.sum().item(),
        "r2": rewards.pow(2).sum().item(),
        "a2": advantages.pow(2).sum().item(),
        "groups": batch,
        "signal": groups_with_signal(rewards).item() * batch,
        "rows": batch,
        "norm": thought.norm(dim=-1).sum().item(),
        "shift": (thought - sft_thought).norm(dim=-1).sum().item(),
    }


def epoch_stats(sums):
    r"""An epoch's GRPO statistics from its :data:`STAT_SUMS`.

    Returns:
        dict: over the epoch's rollouts (B*G samples each): ``reward_mean``, ``reward_std`` (population std),
        ``adv_std`` (RMS of the advantages, whose mean is 0 within each group: about sqrt((G-1)/G) when every
        group's rewards differ and ``grpo_scale_rewards`` is True, lower when groups of equal rewards give zero
        advantages), ``signal_share`` (share of groups whose rewards are not all equal: the groups with a
        non-zero advantage); over its updates (``grpo_updates_per_rollout`` per rollout): ``clip_frac`` and
        ``kl`` (means per sample); ``thought_norm`` (mean L2 norm of the noise-free thought r at each rollout)
        and ``thought_shift`` (mean L2 distance of r from the thought the SFT weights give for the same
        history: how far GRPO has moved it).
    """
    n, rows, updates = sums["n"], max(sums["rows"], 1.0), max(sums["updates"], 1.0)
    mean = sums["r"] / n
    return {
        "reward_mean": mean,
        "reward_std": math.sqrt(max(sums["r2"] / n - mean * mean, 0.0)),
        "adv_std": math.sqrt(sums["a2"] / n),
        "signal_share": sums["signal"] / max(sums["groups"], 1.0),
        "clip_frac": sums["clip"] / updates,
        "kl": sums["kl"] / updates,
        "thought_norm": sums["norm"] / rows,
        "thought_shift": sums["shift"] / rows,
    }
