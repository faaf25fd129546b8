"""GRPO maths (recbole_flr.trainer.grpo) against hand-computed tensors: no model, no mocks."""

import math

import pytest
import torch

from recbole_flr.trainer.grpo import (
    REWARDS,
    clipped_surrogate,
    gaussian_logprob,
    group_advantages,
    groups_with_signal,
    kl_k3,
    reward_logprob,
    reward_ndcg_at_k,
    reward_reciprocal_rank,
    reward_soft_ndcg,
    sample_latents,
)


# ---------------------------------------------------------------- advantages
def test_equal_rewards_give_zero_advantages():
    rewards = torch.tensor([[0.3, 0.3, 0.3, 0.3], [-2.0, -2.0, -2.0, -2.0]])
    assert torch.equal(group_advantages(rewards), torch.zeros(2, 4))


def test_advantages_hand_computed_with_unbiased_std():
    # mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1 (the biased one would be sqrt(2/3))
    advantages = group_advantages(torch.tensor([[1.0, 2.0, 3.0]]), eps=1e-4)
    torch.testing.assert_close(advantages, torch.tensor([[-1.0, 0.0, 1.0]]) / (1.0 + 1e-4))
    # G = 2: rewards 0 and 2, mean 1, unbiased std sqrt(2)
    advantages = group_advantages(torch.tensor([[0.0, 2.0]]), eps=0.0)
    torch.testing.assert_close(advantages, torch.tensor([[-1.0, 1.0]]) / math.sqrt(2.0))


def test_advantages_do_not_depend_on_the_rest_of_the_batch():
    # what one process (or one batch) sees must not change a history's advantages
    row = torch.tensor([[0.1, 0.9, 0.5, 0.2]])
    others = torch.tensor([[10.0, -3.0, 4.0, 8.0], [0.0, 0.0, 1.0, 0.0]])
    alone = group_advantages(row)
    together = group_advantages(torch.cat([others[:1], row, others[1:]]))
    torch.testing.assert_close(together[1:2], alone, rtol=0, atol=0)


def test_unscaled_advantages_are_only_centred():
    # Dr. GRPO / trl scale_rewards=False: R - mean, no std; a group of near-equal rewards gets near-zero advantages
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.51]], dtype=torch.float64)
    advantages = group_advantages(rewards, scale=False)
    expected = torch.tensor([[-1.0, 0.0, 1.0], [-0.01 / 3, -0.01 / 3, 0.02 / 3]], dtype=torch.float64)
    torch.testing.assert_close(advantages, expected)
    assert group_advantages(rewards)[1].abs().max() > 0.5  # scaled, the same tiny spread is a full-size signal


def test_groups_with_signal_counts_groups_whose_rewards_differ():
    rewards = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0], [1.0, 1.0, 1.0], [0.2, 0.1, 0.4]])
    assert groups_with_signal(rewards).item() == pytest.approx(0.5)
    assert groups_with_signal(rewards).item() == pytest.approx(
        (group_advantages(rewards) != 0).any(1).float().mean().item()
    )


def test_advantages_need_two_samples():
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.tensor([[1.0], [2.0]]))


# ---------------------------------------------------------------- clipped surrogate
def _logp_pair(ratios):
    """logp_new (with grad) and logp_old such that exp(new - old) equals ``ratios``."""
    logp_old = torch.full((len(ratios),), -1.5, dtype=torch.float64)
    logp_new = (logp_old + torch.log(torch.tensor(ratios, dtype=torch.float64))).requires_grad_(True)
    return logp_new, logp_old


def test_clipping_for_positive_advantage_only_above_one_plus_eps_high():
    ratios = [0.5, 1.0, 1.27, 1.29, 2.0]
    logp_new, logp_old = _logp_pair(ratios)
    advantages = torch.ones(5, dtype=torch.float64)
    loss, clip_fraction = clipped_surrogate(logp_new, logp_old, advantages, eps_low=0.2, eps_high=0.28)
    # min(rho A, clip(rho) A) = [0.5, 1.0, 1.27, 1.28, 1.28]; a low ratio with A > 0 is not clipped
    torch.testing.assert_close(loss, torch.tensor(-(0.5 + 1.0 + 1.27 + 1.28 + 1.28) / 5, dtype=torch.float64))
    assert clip_fraction.item() == pytest.approx(2 / 5)
    loss.backward()
    # d/dlogp (rho A) = rho A for unclipped samples, zero gradient for the clipped ones
    expected = -torch.tensor([0.5, 1.0, 1.27, 0.0, 0.0], dtype=torch.float64) / 5
    torch.testing.assert_close(logp_new.grad, expected)


def test_clipping_for_negative_advantage_only_below_one_minus_eps_low():
    ratios = [0.5, 0.79, 0.81, 1.0, 2.0]
    logp_new, logp_old = _logp_pair(ratios)
    advantages = -torch.ones(5, dtype=torch.float64)
    loss, clip_fraction = clipped_surrogate(logp_new, logp_old, advantages, eps_low=0.2, eps_high=0.28)
    # min(rho A, clip(rho) A) with A = -1: [-0.8, -0.8, -0.81, -1, -2]; a high ratio with A < 0 is not clipped
    torch.testing.assert_close(loss, torch.tensor((0.8 + 0.8 + 0.81 + 1.0 + 2.0) / 5, dtype=torch.float64))
    assert clip_fraction.item() == pytest.approx(2 / 5)
    loss.backward()
    expected = torch.tensor([0.0, 0.0, 0.81, 1.0, 2.0], dtype=torch.float64) / 5
    torch.testing.assert_close(logp_new.grad, expected)


def test_one_update_per_batch_is_plain_policy_gradient():
    # logp_old = logp_new.detach(): rho = 1, nothing clipped, gradient -A / N (trl v0.14's exp(x - x.detach()))
    logp_new = torch.tensor([-1.0, -2.0, -0.5, -3.0], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    loss, clip_fraction = clipped_surrogate(logp_new, logp_new.detach(), advantages, 0.2, 0.28)
    assert clip_fraction.item() == 0.0
    torch.testing.assert_close(loss, -advantages.mean())
    loss.backward()
    torch.testing.assert_close(logp_new.grad, -advantages / 4)


# ---------------------------------------------------------------- KL
def test_kl_is_zero_when_policy_equals_reference():
    logp = torch.tensor([-0.3, -7.0, 2.0])
    assert torch.equal(kl_k3(logp, logp.clone()), torch.zeros(3))


def test_kl_k3_hand_computed():
    # delta = ref - pol: log 2 -> 2 - log 2 - 1;  -1 -> exp(-1) + 1 - 1
    kl = kl_k3(torch.tensor([0.0, 0.0]), torch.tensor([math.log(2.0), -1.0]))
    torch.testing.assert_close(kl, torch.tensor([1.0 - math.log(2.0), math.exp(-1.0)]))
    assert (kl > 0).all()


# ---------------------------------------------------------------- Gaussian log-density
def test_gaussian_logprob_hand_computed():
    noise = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    sigma = torch.tensor([1.0, 2.0], dtype=torch.float64)
    expected = torch.tensor(
        [-math.log(2 * math.pi), -0.5 * 25.0 / 4.0 - 2.0 * math.log(2.0) - math.log(2 * math.pi)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(gaussian_logprob(noise, sigma), expected)
    reference = torch.distributions.Normal(0.0, sigma.unsqueeze(1)).log_prob(noise).sum(dim=1)
    torch.testing.assert_close(gaussian_logprob(noise, sigma), reference)


def test_gaussian_surrogate_gradient_is_advantage_weighted_noise():
    # one update per batch: d loss / d r = -(1/N) sum_i A_i (r_i - r) / sigma^2
    r = torch.tensor([[1.0, -2.0]], requires_grad=True)
    samples = torch.tensor([[1.5, -2.0], [0.0, -1.0]])
    sigma = torch.tensor([0.5, 0.5])
    advantages = torch.tensor([1.0, -1.0])
    logp = gaussian_logprob(samples - r.repeat_interleave(2, dim=0), sigma)
    loss, _ = clipped_surrogate(logp, logp.detach(), advantages)
    loss.backward()
    noise = samples - r.detach()
    expected = -(advantages.unsqueeze(1) * noise / 0.25).sum(dim=0, keepdim=True) / 2
    torch.testing.assert_close(r.grad, expected)


# ---------------------------------------------------------------- rewards
def test_reward_logprob_hand_computed_and_padding_excluded():
    # items 1..3 have exp scores 1, 3, 1: p(item 2) = 3/5; the padding column's large score does not count
    logits = torch.tensor([[50.0, 0.0, math.log(3.0), 0.0]])
    torch.testing.assert_close(reward_logprob(logits, torch.tensor([2])), torch.tensor([math.log(0.6)]))


def test_reward_reciprocal_rank_hand_computed():
    logits = torch.tensor([[9.0, 1.0, 3.0, 2.0, 3.0]])  # column 0 is padding and scores highest
    # target 3 (score 2): items 2 and 4 above -> rank 3; padding never counts
    torch.testing.assert_close(reward_reciprocal_rank(logits, torch.tensor([3])), torch.tensor([1 / 3]))
    # target 2 (score 3) tied with item 4: the tie counts against the target -> rank 2
    torch.testing.assert_close(reward_reciprocal_rank(logits, torch.tensor([2])), torch.tensor([0.5]))
    # all real items equal: the target ranks last (4 real items), not first
    flat = torch.tensor([[9.0, 1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(reward_reciprocal_rank(flat, torch.tensor([1])), torch.tensor([0.25]))


def test_reward_ndcg_hand_computed():
    # 12 real items; target item 1; rank = 1 + number of items scored above it
    def logits_with_rank(rank):
        scores = torch.arange(12, 0, -1, dtype=torch.float32)  # item j (1-based) has score 13 - j
        scores = scores[torch.randperm(12, generator=torch.Generator().manual_seed(rank))]
        order = torch.argsort(scores, descending=True)  # order[0] is the best item (0-based real item)
        row = torch.cat([torch.tensor([100.0]), scores])
        return row.unsqueeze(0), torch.tensor([int(order[rank - 1]) + 1])

    for rank, expected in [(1, 1.0), (3, 0.5), (10, 1 / math.log2(11)), (11, 0.0), (12, 0.0)]:
        logits, target = logits_with_rank(rank)
        torch.testing.assert_close(reward_ndcg_at_k(logits, target, k=10), torch.tensor([expected]))
        torch.testing.assert_close(reward_reciprocal_rank(logits, target), torch.tensor([1 / rank]))


def test_reward_soft_ndcg_hand_computed():
    # real items 1..3 score 2, 1, 0 (padding column 0 scores 9 and never counts); target item 2 (score 1), tau 1:
    # soft rank = 1 + sigmoid(2 - 1) + sigmoid(0 - 1) = 1 + 1 = 2 (sigmoid(1) + sigmoid(-1) = 1) -> 1 / log2(3)
    logits = torch.tensor([[9.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([2])
    torch.testing.assert_close(reward_soft_ndcg(logits, target), torch.tensor([1 / math.log2(3)], dtype=torch.float64))
    # tau 0.5: soft rank = 1 + sigmoid(2) + sigmoid(-2) = 2 again (symmetric); target item 1 (score 2), tau 1:
    # 1 + sigmoid(-1) + sigmoid(-2)
    torch.testing.assert_close(
        reward_soft_ndcg(logits, target, temperature=0.5), torch.tensor([1 / math.log2(3)], dtype=torch.float64)
    )
    soft_rank = 1 + 1 / (1 + math.exp(1)) + 1 / (1 + math.exp(2))
    torch.testing.assert_close(
        reward_soft_ndcg(logits, torch.tensor([1])), torch.tensor([1 / math.log2(1 + soft_rank)], dtype=torch.float64)
    )


def test_reward_soft_ndcg_tends_to_the_rank_and_separates_samples_outside_the_top_10():
    # 30 real items; the target ranks 3rd: at a small tau the reward is 1/log2(1 + 3)
    scores = torch.arange(30, 0, -1, dtype=torch.float64)  # item j scores 31 - j: item 3 ranks 3rd
    logits = torch.cat([torch.tensor([100.0], dtype=torch.float64), scores]).unsqueeze(0)
    torch.testing.assert_close(
        reward_soft_ndcg(logits, torch.tensor([3]), temperature=1e-3), torch.tensor([0.5], dtype=torch.float64)
    )
    # two samples that both rank the target outside the top 10 (20th and 25th): NDCG@10 ties them at 0 (a group
    # without signal), the soft reward prefers the better rank
    rows = torch.cat([logits, logits])
    target = torch.tensor([20, 25])
    assert torch.equal(reward_ndcg_at_k(rows, target), torch.zeros(2, dtype=torch.float64))
    soft = reward_soft_ndcg(rows, target)
    assert soft[0] > soft[1] > 0


def test_reward_soft_ndcg_relative_temperature_is_scale_free():
    # real items score 2, 1, 0: population std sqrt(2/3); relative tau 1 -> tau = sqrt(2/3) in score units
    logits = torch.tensor([[9.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([1])
    tau = math.sqrt(2 / 3)
    soft_rank = 1 + 1 / (1 + math.exp(1 / tau)) + 1 / (1 + math.exp(2 / tau))
    expected = torch.tensor([1 / math.log2(1 + soft_rank)], dtype=torch.float64)
    torch.testing.assert_close(reward_soft_ndcg(logits, target, relative=True), expected)
    # every score times 3 (a longer user vector): the absolute reward rises, the relative one does not move
    assert reward_soft_ndcg(3 * logits, target) > reward_soft_ndcg(logits, target)
    torch.testing.assert_close(reward_soft_ndcg(3 * logits, target, relative=True), expected)


@pytest.mark.parametrize("name", sorted(set(REWARDS) - {"random"}))  # random: the control, its own test
def test_sample_ranking_the_target_first_gets_the_maximum_reward(name):
    # a group of G = 4 samples: permutations of one score vector; only sample 2 puts the target (item 3) first
    scores = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5])  # over real items 1..5
    perms = [[1, 0, 2, 3, 4], [4, 3, 1, 0, 2], [2, 1, 0, 3, 4], [0, 2, 4, 1, 3]]
    rows = []
    for perm in perms:
        row = torch.empty(6)
        row[0] = 99.0  # padding
        row[1:] = scores[torch.tensor(perm)]
        rows.append(row)
    logits = torch.stack(rows)
    target = torch.full((4,), 3)
    assert int(torch.argmax(logits[2, 1:])) + 1 == 3  # sample 2 ranks the target first
    rewards = REWARDS[name](logits, target)
    assert int(torch.argmax(rewards)) == 2
    assert (rewards[2] > rewards[[0, 1, 3]]).all()
    if name not in ("logprob", "soft_ndcg"):
        assert rewards[2].item() == pytest.approx(1.0)  # reciprocal rank and NDCG: the maximum possible


# ---------------------------------------------------------------- sampler
def test_sample_latents_shapes_order_and_scale():
    thought = torch.tensor([[3.0, 4.0], [0.0, 1.0]], requires_grad=True)
    thoughts, noise, sigma = sample_latents(thought, 3, 0.3, torch.Generator().manual_seed(0))
    assert thoughts.shape == (6, 2) and noise.shape == (6, 2) and sigma.shape == (6,)
    # repeat_interleave order: rows 0..2 belong to history 0
    torch.testing.assert_close(thoughts.detach() - noise, thought.detach().repeat_interleave(3, dim=0))
    rms = torch.tensor([math.sqrt(12.5), math.sqrt(0.5)])
    torch.testing.assert_close(sigma, (0.3 * rms).repeat_interleave(3))
    thoughts.sum().backward()  # reparameterised: the mean keeps its gradient
    torch.testing.assert_close(thought.grad, torch.full((2, 2), 3.0))


def test_sample_latents_noise_scale_reproducibility_and_noise_free_first():
    thought = torch.full((2, 64), 2.0)  # RMS 2
    _, noise, _ = sample_latents(thought, 500, 0.5, torch.Generator().manual_seed(1))
    assert noise.std().item() == pytest.approx(1.0, rel=0.02)
    _, again, _ = sample_latents(thought, 500, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(noise, again)
    thoughts, noise, _ = sample_latents(thought, 4, 0.5, torch.Generator().manual_seed(2), noise_free_first=True)
    assert torch.equal(noise.view(2, 4, 64)[:, 0], torch.zeros(2, 64))
    assert torch.equal(thoughts.view(2, 4, 64)[:, 0], thought)
    assert (noise.view(2, 4, 64)[:, 1:].abs() > 0).all()


def test_rank_rewards_give_a_nan_target_score_the_minimum():
    logits = torch.tensor([[0.0, float("nan"), 1.0, 2.0]])
    torch.testing.assert_close(reward_reciprocal_rank(logits, torch.tensor([1])), torch.tensor([1 / 3]))
    torch.testing.assert_close(reward_ndcg_at_k(logits, torch.tensor([1]), k=2), torch.tensor([0.0]))


# ---------------------------------------------------------------- rollout, policy update, epoch statistics
def test_draw_rollout_and_its_first_policy_update():
    from recbole_flr.trainer.grpo import draw_rollout, policy_loss, sample_logprob

    torch.manual_seed(0)
    thought = torch.randn(3, 4)
    items = torch.randn(6, 4)
    target = torch.tensor([1, 2, 5])
    rollout = draw_rollout(thought, lambda samples: samples @ items.T, target, 4, 0.3, reward_logprob)
    assert rollout.samples.shape == (12, 4) and rollout.logp_ref is None
    # the rewards are the reward of each sample's scores against its history's target, in repeat_interleave order
    expected = reward_logprob(rollout.samples @ items.T, target.repeat_interleave(4))
    torch.testing.assert_close(rollout.rewards, expected)
    torch.testing.assert_close(rollout.advantages, group_advantages(expected.view(3, 4)).view(-1))
    # logp_old is the density of the samples around the thought that drew them
    torch.testing.assert_close(rollout.logp_old, sample_logprob(thought, rollout.samples, rollout.sigma))
    # the first update is on-policy: ratio 1, surrogate -mean(A), no KL without a reference, nothing clipped
    logp = sample_logprob(thought.clone().requires_grad_(), rollout.samples, rollout.sigma)
    surrogate, kl, clip = policy_loss(logp, rollout)
    torch.testing.assert_close(surrogate, -rollout.advantages.mean())
    assert kl.item() == 0.0 and clip.item() == 0.0
    _, kl, _ = policy_loss(logp, rollout._replace(logp_ref=rollout.logp_old))
    assert kl.item() == pytest.approx(0.0, abs=1e-6)  # the reference is the policy itself


def test_the_random_control_reward_ignores_the_scores_and_the_target():
    from recbole_flr.trainer.grpo import reward_random

    logits = torch.randn(64, 5)
    torch.manual_seed(3)
    first = reward_random(logits, torch.ones(64, dtype=torch.long))
    torch.manual_seed(3)
    again = reward_random(-logits, torch.full((64,), 4))  # other scores, other targets: the same draws
    torch.testing.assert_close(first, again)
    assert first.shape == (64,) and 0.0 <= first.min() and first.max() < 1.0 and first.std() > 0.1


def test_epoch_stats_from_hand_made_sums():
    from recbole_flr.trainer.grpo import epoch_stats, rollout_sums

    rewards = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    advantages = torch.tensor([-1.0, 1.0, 0.0, 0.0])
    thought, sft_thought = torch.tensor([[3.0, 4.0], [0.0, 1.0]]), torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    sums = rollout_sums(rewards, advantages, thought, sft_thought)
    sums.update(updates=4.0, clip=1.0, kl=0.2)
    stats = epoch_stats(sums)
    assert stats["reward_mean"] == 2.0 and stats["reward_std"] == pytest.approx(math.sqrt(0.5))
    assert stats["adv_std"] == pytest.approx(math.sqrt(0.5)) and stats["signal_share"] == 0.5
    assert stats["clip_frac"] == 0.25 and stats["kl"] == pytest.approx(0.05)
    assert stats["thought_norm"] == 3.0 and stats["thought_shift"] == 0.5
