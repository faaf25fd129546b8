r"""
recbole_flr.trainer.latent_grpo
###############################
:class:`LatentGRPO`: the GRPO stage's step on an FLR model, the maths of :mod:`recbole_flr.trainer.grpo` applied to
the model's ``encode``, ``reason``, ``decode``, ``item_scores`` and ``regularisers``: one rollout per batch, a
clipped policy update per call of :meth:`LatentGRPO.loss`, and the epoch's statistics. :class:`FLRTrainer` owns the
stage (epochs, optimizer, trainable set, checkpoints); this owns what one GRPO batch computes.
"""

import functools
from collections import namedtuple

import torch

from recbole_flr.errors import UserInputError
from recbole_flr.trainer import grpo

#: FLRTrainer's GRPO keys: FLR.yaml documents each one's type and range, :func:`~recbole_flr.config.check_values` checks
GRPO_KEYS = (
    "grpo_epochs",
    "grpo_learning_rate",
    "grpo_stopping_step",
    "grpo_trainable",
    "grpo_num_generations",
    "grpo_noise_std",
    "grpo_noise_free_first",
    "grpo_reward",
    "grpo_reward_temperature",
    "grpo_reward_temperature_relative",
    "grpo_scale_rewards",
    "grpo_updates_per_rollout",
    "grpo_epsilon",
    "grpo_epsilon_high",
    "grpo_beta",
)
#: the model methods the GRPO stage calls
MODEL_API = ("encode", "reason", "decode", "item_scores", "regularisers", "latent")
#: A batch's GRPO rollout (:class:`~recbole_flr.trainer.grpo.Rollout`) with its pass 1 and target ids [B].
Rollout = namedtuple("Rollout", ("pass1", "target") + grpo.Rollout._fields)


def read_grpo_keys(config):
    r"""The ``grpo_*`` settings of ``config``, by key; an unset one is refused by name."""
    missing = [key for key in GRPO_KEYS if config[key] is None]
    if missing:
        raise UserInputError(f"{missing} not set (their defaults live in properties/model/FLR.yaml).")
    return {key: config[key] for key in GRPO_KEYS}


class _Call(torch.nn.Module):
    r"""Runs ``fn(*args)`` as its forward, so that :func:`torch.func.functional_call` can run any method of
    ``model`` with the SFT weights swapped in (autograd-safe, nothing copied but the trained parameters)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, fn, *args):
        return fn(*args)


class LatentGRPO:
    r"""The GRPO step of one batch on ``model``, with the settings of ``grpo_*`` (``settings``: :func:`read_grpo_keys`).

    ``sft_weights`` is a function that returns the detached copies of the parameters GRPO trains as SFT left them (the
    trainer's, restored with its state on resume), or None outside the stage: the KL reference (``grpo_beta > 0``)
    and the statistics' baseline. :attr:`stats` holds the running sums of the epoch (:data:`grpo.STAT_SUMS`) from
    :meth:`new_epoch` on; None: no statistics are kept.
    """

    def __init__(self, model, settings, sft_weights):
        self.model, self.sft_weights = model, sft_weights
        self.trainable, self.beta = settings["grpo_trainable"], settings["grpo_beta"]
        self.num_generations, self.noise_std = settings["grpo_num_generations"], settings["grpo_noise_std"]
        self.noise_free_first, self.scale_rewards = settings["grpo_noise_free_first"], settings["grpo_scale_rewards"]
        self.updates_per_rollout = settings["grpo_updates_per_rollout"]
        self.epsilon, self.epsilon_high = settings["grpo_epsilon"], settings["grpo_epsilon_high"]
        self.reward_fn = grpo.REWARDS[settings["grpo_reward"]]
        if settings["grpo_reward"] == "soft_ndcg":
            self.reward_fn = functools.partial(
                self.reward_fn,
                temperature=settings["grpo_reward_temperature"],
                relative=settings["grpo_reward_temperature_relative"],
            )
        self.stats = None
        self.rollout, self.rollout_uses = None, 0  # the current rollout and how many updates have used it
        self._caller = _Call(model)

    def new_epoch(self):
        r"""Start an epoch: zero statistics, no rollout."""
        self.stats = dict.fromkeys(grpo.STAT_SUMS, 0.0)
        self.rollout, self.rollout_uses = None, 0

    def epoch_stats(self):
        r"""The epoch's statistics so far (:func:`~recbole_flr.trainer.grpo.epoch_stats`), or None before its first
        rollout; on rank 0 of a distributed run, its own samples."""
        return grpo.epoch_stats(self.stats) if self.stats and self.stats["n"] else None

    def loss(self, interaction):
        r"""Latent GRPO loss of one policy update: a new rollout (:meth:`draw_rollout`) on a batch's first update, the
        stored one on the next ``grpo_updates_per_rollout - 1`` updates of the same batch (the trainer's loader yields
        the batch that many times, trl's ``num_iterations``). Each update re-runs the latent module with grad (with
        ``grpo_trainable: all`` pass 1 too, so the gradient reaches the backbone and the item table it reads): the
        clipped surrogate of the Gaussian log-density of the stored samples with the stored ``logp_old``, the k3 KL
        to the SFT copy, and the factor regularisers with the model's own lambdas (0 switches one off). With one
        update per rollout the samples come from the current policy, the ratio is 1, nothing is clipped and the
        gradient is the plain group-relative policy gradient (REINFORCE with a group baseline); from the second update
        on, PPO's ratio and clip act.

        Returns:
            tuple(torch.Tensor): (surrogate, beta * KL, lambda_orth * L_orth, lambda_div * L_div,
            lambda_sparse * L_sparse), summed by RecBole's ``_train_epoch`` and logged separately.
        """
        model = self.model
        model.eval()  # dropout off: the policy is exactly N(r_theta, sigma^2 I)
        rollout = self.rollout
        target = interaction[model.POS_ITEM_ID]
        if rollout is None or self.rollout_uses >= self.updates_per_rollout or not torch.equal(rollout.target, target):
            rollout = self.rollout = self.draw_rollout(interaction)
            self.rollout_uses = 0
        self.rollout_uses += 1
        pass1 = rollout.pass1
        if self.trainable == "all":  # the policy's mean through a new pass 1, so the gradient reaches the backbone
            pass1 = model.encode(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
        latent = model.reason(pass1)
        logp = grpo.sample_logprob(latent.thought, rollout.samples, rollout.sigma)
        surrogate, kl, clip_fraction = grpo.policy_loss(logp, rollout, self.epsilon, self.epsilon_high)
        l_orth, l_div, l_sparse = model.regularisers(latent)
        if self.stats is not None:
            n = rollout.rewards.numel()
            self._add_stats(updates=n, clip=clip_fraction.item() * n, kl=kl.item() * n)
        return (
            surrogate,
            self.beta * kl,
            model.lambda_orth * l_orth,
            model.lambda_div * l_div,
            model.lambda_sparse * l_sparse,
        )

    def draw_rollout(self, interaction):
        r"""One rollout of a batch (``B`` histories) under ``no_grad`` (:func:`~recbole_flr.trainer.grpo.draw_rollout`):
        pass 1 of the backbone runs once and is shared by the G samples of each history; the latent module gives the
        thought ``r``; G thoughts ``r + eps`` are sampled, and pass 2 (or, with ``user_vector: latent_state``, the
        default, the noised latent state itself: the user vector) and the scores of all items run in one call on
        ``B * G`` rows; then the rewards, advantages and log-likelihoods under the policy and, with ``grpo_beta > 0``,
        under the SFT copy with the same sigma (see :data:`Rollout`)."""
        model, G = self.model, self.num_generations
        item_seq, item_seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        target = interaction[model.POS_ITEM_ID]
        with torch.no_grad():
            pass1 = model.encode(item_seq, item_seq_len)
            thought = model.reason(pass1).thought  # [B D]
            rollout = grpo.draw_rollout(
                thought,
                lambda samples: model.item_scores(model.decode(pass1, samples)),
                target,
                G,
                self.noise_std,
                self.reward_fn,
                self.scale_rewards,
                self.noise_free_first,
            )
            # the SFT weights' reasoning on this pass 1, computed once: the statistics' baseline and the reference's
            # policy (unless GRPO trains the backbone: then the reference reads its own pass 1)
            sft_latent = None
            if self.sft_weights() is not None and (self.stats is not None or self.beta > 0):
                sft_latent = self._with_sft_weights(model.reason, pass1)
            if self.beta > 0 and sft_latent is not None:  # the SFT copy is the reference (in the stage)
                ref = sft_latent
                if self.trainable == "all":
                    ref_pass1 = self._with_sft_weights(model.encode, item_seq, item_seq_len)
                    ref = self._with_sft_weights(model.reason, ref_pass1)
                rollout = rollout._replace(logp_ref=grpo.sample_logprob(ref.thought, rollout.samples, rollout.sigma))
            if self.stats is not None:
                sft_thought = None if sft_latent is None else sft_latent.thought
                self._add_stats(
                    **grpo.rollout_sums(rollout.rewards.view(-1, G), rollout.advantages, thought, sft_thought)
                )
        return Rollout(pass1, target, *rollout)

    def _with_sft_weights(self, fn, *args):
        r"""``fn(*args)``, a method of the model, with the SFT copy of the parameters GRPO trains swapped in."""
        weights = {f"model.{name}": value for name, value in self.sft_weights().items()}
        return torch.func.functional_call(self._caller, weights, (fn,) + args)

    def _add_stats(self, **values):
        for name, value in values.items():
            self.stats[name] += value
