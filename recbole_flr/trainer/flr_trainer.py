r"""
recbole_flr.trainer.flr_trainer
###############################
FLR's trainer: supervised fine-tuning (SFT) and then latent GRPO, each stage one call of RecBole's ``fit``.
"""

import torch
from recbole.trainer import Trainer
from recbole.utils import set_color
from torch.nn.parallel import DistributedDataParallel

from recbole_flr.checkpoint import load_checkpoint, load_model_state
from recbole_flr.config import check_values, read_train_stages
from recbole_flr.errors import CheckpointError, UserInputError
from recbole_flr.trainer.latent_grpo import MODEL_API, LatentGRPO, read_grpo_keys
from recbole_flr.trainer.safe_checkpoint import SafeCheckpointMixin
from recbole_flr.trainer.train_state import state_view

# the terms of the loss tuples, in order: FLR.calculate_loss's (a model may name its own with ``loss_names``) and
# LatentGRPO.loss's; logged by name, as the mean per batch, in the epoch line and in TensorBoard (Loss/<stage>/<name>)
SFT_LOSS_NAMES = ("ce", "orth", "div", "sparse")
GRPO_LOSS_NAMES = ("grpo_surrogate", "kl", "orth", "div", "sparse")
# the GRPO statistics in the epoch line (``kl`` too when grpo_beta > 0); TensorBoard has all (GRPO/<name>)
GRPO_LOGGED = ("reward_mean", "reward_std", "adv_std", "signal_share", "clip_frac", "thought_norm", "thought_shift")


class FLRTrainer(SafeCheckpointMixin, Trainer):
    r"""Trainer of :class:`~recbole_flr.model.FLR`: the stages of ``train_stages`` (default ``[sft, grpo]``) in order,
    each one a call of RecBole's unchanged :meth:`~recbole.trainer.Trainer.fit` (with the hooks of
    :class:`~recbole_flr.trainer.safe_checkpoint.SafeCheckpointMixin`) with its own epochs, learning rate and early
    stopping on ``valid_metric``; every key is documented in ``properties/model/FLR.yaml``.

    - ``sft``: the model's ``calculate_loss`` (cross-entropy plus the factor regularisers), exactly as RecBole trains
      any model.
    - ``grpo``: latent GRPO on ``grpo_trainable``; one batch's step is :attr:`grpo`
      (:class:`~recbole_flr.trainer.latent_grpo.LatentGRPO`). It starts from the best SFT checkpoint, whose valid
      score is the bar: only a GRPO epoch that beats it strictly (:attr:`strict_improvement`; RecBole's ``>=`` would
      let a tie replace SFT) overwrites the best model; if none does, the SFT weights stand, in the checkpoint
      (labelled ``"stage": "sft"``) and in the model.

    NOTE:
        The model runs in eval mode during GRPO (dropout off, trl's ``disable_dropout``): the policy is exactly
        ``N(r_theta, sigma^2 I)``. The KL reference (``grpo_beta > 0``) is a detached copy of the trained parameters
        as SFT left them. GRPO's epochs are numbered on from SFT's.
    """

    strict_improvement = True
    # the GRPO stage's part of the one TrainState (``self.state``, written to and restored from the last checkpoint)
    sft_valid_score = state_view("sft_valid_score", "GRPO's bar: the SFT valid score.")
    sft_valid_result = state_view("sft_valid_result")
    grpo_best_epoch = state_view("grpo_best_epoch", "The GRPO epoch saved as the best model (None: none saved).")
    _sft_weights = state_view("grpo_sft_weights")  # detached copies of what GRPO trains, as SFT left them

    def __init__(self, config, model):
        super().__init__(config, model)
        self.train_stages = read_train_stages(config["train_stages"])
        check_values(config)  # FLR.yaml's types and ranges and the removed settings, also without run_recbole_flr
        settings = read_grpo_keys(config)  # the GRPO stage's keys are read from config, as SFT's are
        missing = [name for name in MODEL_API if not hasattr(model, name)]
        if "grpo" in self.train_stages and missing:
            raise UserInputError(
                f"train_stages contains 'grpo', but {type(model).__name__} has no {', '.join(missing)} "
                f"(the latent GRPO stage needs FLR's {', '.join(MODEL_API)})."
            )
        self.grpo = LatentGRPO(model, settings, sft_weights=lambda: self._sft_weights)  # one GRPO batch's step
        self.grpo_improved = None  # after a validated GRPO stage: whether it beat the SFT valid score
        self._requires_grad_before = None
        self._epoch_batches = 1  # optimizer steps in the epoch: the losses are logged as means per step
        self._resume = None  # (stage, optimizer state) of the checkpoint being resumed, until that stage starts

    # ------------------------------------------------------------------ stages
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        r"""Run the stages of ``train_stages`` still to run (all of them, or the resumed one and those after it) in
        order, each through RecBole's :meth:`Trainer.fit`.

        Returns:
            (float, dict): the best valid score and result over all stages (the SFT ones if GRPO never beat them).
        """
        resume, self._resume = self._resume, None
        self._adopt_resumed_best(saved)  # before GRPO's bar reads the best model
        stages = self.train_stages[self.train_stages.index(resume[0]) :] if resume else self.train_stages
        with self.timed_fit():  # one clock for the time budget and the "fit" callback over all stages
            for stage in stages:
                resuming, resume = resume, None  # a resumed checkpoint continues its own stage, the first one
                if stage == "grpo" and self._grpo_skipped():
                    continue
                if stage == "sft" and resuming is not None and self._skip_finished(train_data):
                    continue  # SFT had finished: GRPO goes on from the point where the interrupted run left SFT
                if stage == "grpo" and resuming is None:
                    self._set_grpo_bar(valid_data, verbose, saved, show_progress)
                self._begin_stage(stage, resuming)
                self._emit("stage", stage=stage, start_epoch=self.start_epoch, end_epoch=self.epochs)
                super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
                if stage == "grpo":
                    self._end_grpo(verbose, saved, validated=bool(valid_data) and self.eval_step > 0)
        self.stage = None
        return self.best_valid_score, self.best_valid_result

    def begin_grpo(self):
        r"""Enter the GRPO stage on the model's current weights, with no validation bar and no checkpoint: the trainable
        set (``grpo_trainable``), the optimizer, the SFT copy and the reference. For tools that time or inspect GRPO
        steps; ``fit`` enters the stage itself.

        Returns:
            bool: False when ``grpo_epochs`` is 0 (the stage is skipped).
        """
        if self._grpo_skipped():
            return False
        self._set_grpo_bar(None, False, False, False)
        self._begin_stage("grpo")
        return True

    def _grpo_skipped(self):
        skipped = self.config["grpo_epochs"] == 0
        if skipped:
            self.logger.info(set_color("FLR stage [grpo]", "pink") + ": grpo_epochs is 0, skipped")
        return skipped

    def _set_grpo_bar(self, valid_data, verbose, saved, show_progress):
        r"""Before a new GRPO stage: the best SFT weights in the model and their valid score as the bar to beat."""
        sft_ran = self.stage == "sft"
        if not self.config["single_spec"]:
            torch.distributed.barrier()  # rank 0 has written the SFT checkpoint that every rank reads
        if sft_ran and saved:
            # the best SFT weights, not the last SFT epoch's
            load_model_state(self.model, load_checkpoint(self.saved_model_file, map_location=self.device))
            if verbose:
                self.logger.info(f"GRPO starts from the best SFT checkpoint {self.saved_model_file}")
        elif sft_ran:
            self.logger.warning("saved=False: GRPO starts from the last SFT epoch's weights (no best checkpoint).")
        if valid_data and (not sft_ran or self.best_valid_result is None):
            # GRPO alone (or SFT without validation): the starting weights set the bar
            self.best_valid_score, self.best_valid_result = self._valid_epoch(valid_data, show_progress=show_progress)
            self.stage = "sft"  # the checkpoint's label for "weights from before GRPO"
            if saved:
                self._save_checkpoint(self.state.epoch, verbose=verbose)
        self.sft_valid_score, self.sft_valid_result = self.best_valid_score, self.best_valid_result

    def _begin_stage(self, stage, resume=None):
        r"""The stage's settings, trainable set and optimizer. Its epochs start after the last one trained (0 for SFT)
        unless ``resume`` (stage, optimizer state): then the restored state's counters stand."""
        if stage == "grpo":
            self._begin_grpo_parameters(resume is not None)
        epochs, self.learning_rate, self.stopping_step = (
            (self.config["epochs"], self.config["learning_rate"], self.config["stopping_step"])  # RecBole's own keys
            if stage == "sft"
            else (self.config["grpo_epochs"], self.config["grpo_learning_rate"], self.config["grpo_stopping_step"])
        )
        if resume is None:
            start = 0 if stage == "sft" else self.start_epoch
            self.state.stage_start_epoch, self.start_epoch, self.cur_step = start, start, 0
            if stage == "grpo":
                self.grpo_best_epoch = None
        self.stage = stage
        self.epochs = self.state.stage_start_epoch + epochs
        self.eval_step = min(self.config["eval_step"], max(epochs, 1))
        if stage == "grpo":
            self.optimizer = self._build_optimizer()
        if stage == "sft":
            self.logger.info(set_color("FLR stage [sft]", "pink") + f": epochs {self.start_epoch}..{self.epochs - 1}")
        if resume is not None:
            self.optimizer.load_state_dict(resume[1])  # the counters are in the restored state
            self.logger.info(
                set_color(f"FLR stage [{stage}]", "pink")
                + f": resumed after epoch {self.state.epoch}"
                + (" (the stage had finished)" if self.state.finished else "")
            )
            if self.state.finished:  # the stage had ended (all epochs or early stopping): fit trains nothing
                self.start_epoch = max(self.start_epoch, self.epochs)
        if stage == "grpo":
            trained = [p for p in self.model.parameters() if p.requires_grad]
            self.logger.info(
                set_color("FLR stage [grpo]", "pink")
                + f": epochs {self.start_epoch}..{self.epochs - 1}, trains {self.config['grpo_trainable']} "
                f"({sum(p.numel() for p in trained)} parameters in {len(trained)} tensors), "
                f"G={self.config['grpo_num_generations']}, reward {self.config['grpo_reward']}, "
                f"{self.config['grpo_updates_per_rollout']} updates per rollout, "
                f"beta {self.config['grpo_beta']}; to beat: valid {self.valid_metric} {self.sft_valid_score} (SFT)"
            )

    def _begin_grpo_parameters(self, resumed):
        r"""Train only the parameters of ``grpo_trainable`` and keep detached copies of them as SFT left them (the
        fallback and the KL reference; a resumed stage's come from its last checkpoint)."""
        names = self._grpo_parameter_names()
        self._requires_grad_before = {n: p.requires_grad for n, p in self.model.named_parameters()}
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in names)
        self._rewrap_distributed()
        trained = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if not resumed:
            self._sft_weights = {n: p.detach().clone() for n, p in trained.items()}
            return
        self._sft_weights = {n: v.to(self.device) for n, v in self._sft_weights.items()}
        if set(self._sft_weights) != set(trained):
            raise CheckpointError(
                "The last checkpoint's GRPO stage trained other parameters than grpo_trainable="
                f"{self.config['grpo_trainable']!r} does now: {sorted(set(self._sft_weights) ^ set(trained))[:5]}."
            )

    def _end_grpo(self, verbose, saved, validated):
        for name, param in self.model.named_parameters():
            param.requires_grad_(self._requires_grad_before[name])
        self._rewrap_distributed()
        # early_stopping replaces the best score only by a strictly better one: any change is a GRPO win
        # (without validation there is no verdict: None, and GRPO's last weights are kept)
        self.grpo_improved = bool(self.best_valid_score != self.sft_valid_score) if validated else None
        if self.grpo_improved is False:
            with torch.no_grad():
                params = dict(self.model.named_parameters())
                for name, value in self._sft_weights.items():
                    params[name].copy_(value)
            self.best_valid_score, self.best_valid_result = self.sft_valid_score, self.sft_valid_result
            where = f" ({self.saved_model_file})" if saved else " (its weights are restored in the model)"
            self.logger.info(
                set_color("GRPO did not beat SFT", "yellow")
                + f": no GRPO epoch improved valid {self.valid_metric} over the SFT checkpoint's "
                f"{self.sft_valid_score}; the SFT checkpoint stands{where}."
            )
        elif not validated:
            self.logger.info("GRPO ran without validation: its last weights are kept.")
        elif verbose:
            self.logger.info(
                set_color("GRPO beat SFT", "yellow")
                + f": valid {self.valid_metric} {self.sft_valid_score} -> {self.best_valid_score}"
                + (f" (epoch {self.grpo_best_epoch})" if self.grpo_best_epoch is not None else "")
            )
        self._sft_weights = None

    def _rewrap_distributed(self):
        r"""DistributedDataParallel registers the parameters that require grad when it is built (and broadcasts rank
        0's weights): rebuild it whenever a stage changes the trainable set."""
        if self.config["single_spec"]:
            return
        device_ids = None if self.device.type == "cpu" else [self.config["local_rank"]]
        self.distributed_model = DistributedDataParallel(self.model, device_ids=device_ids)

    def _grpo_parameter_names(self):
        r"""Names of the parameters that the GRPO stage trains, among those SFT trained: ``grpo_trainable: latent``,
        ``model.latent``'s; ``all``, every one (LoRA adapters or the embedded backbone, item tables, heads)."""
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if self.config["grpo_trainable"] == "all":
            return trainable
        return {n for n in trainable if n.startswith("latent.")}

    def _build_optimizer(self, **kwargs):
        r"""RecBole's optimizer over the parameters that require grad only (nanoGPT's ``configure_optimizers``)."""
        kwargs.setdefault("params", [p for p in self.model.parameters() if p.requires_grad])
        return super()._build_optimizer(**kwargs)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if self.stage == "grpo":
            self.grpo_best_epoch = epoch
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)

    def resume_checkpoint(self, resume_file):
        r"""Continue an interrupted run: a last checkpoint (``<best>-last.pth``) resumes the stage it was written in
        (SFT or GRPO) after its epoch, with everything that stage needs (for GRPO: its optimizer, counter, bar and SFT
        weights); a finished stage is not trained again. A best-model checkpoint resumes SFT after its epoch, without
        the random states."""
        checkpoint = self._read_resume_checkpoint(resume_file)
        if not checkpoint.get("last"):
            if "sft" not in self.train_stages:
                return  # GRPO alone from these weights, its epochs numbered on from the checkpoint's (no optimizer)
            if checkpoint.get("stage") == "grpo":
                raise CheckpointError(
                    f"{resume_file} holds GRPO weights but not the GRPO stage's state (SFT score, SFT weights): "
                    "resume from the run's '-last.pth' checkpoint instead."
                )
        stage = self.state.stage if checkpoint.get("last") else "sft"
        if stage not in self.train_stages:
            raise CheckpointError(
                f"{resume_file} was written in stage {stage!r}, which train_stages {self.train_stages} does not run."
            )
        self._resume = (stage, checkpoint["optimizer"])
        self.logger.info(
            f"Checkpoint {resume_file} loaded: stage {stage}, epoch {checkpoint['epoch']}"
            + (" (the stage had finished)" if self.state.finished else "")
        )

    # ------------------------------------------------------------------ GRPO epoch
    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        # GRPO: one rollout per batch, several updates on it
        self.batch_repeats = self.grpo.updates_per_rollout if self.stage == "grpo" else 1
        self._epoch_batches = len(train_data) * self.batch_repeats
        if self.stage != "grpo":
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.grpo.new_epoch()
        losses = super()._train_epoch(
            train_data, epoch_idx, loss_func=loss_func or self.grpo.loss, show_progress=show_progress
        )
        for name, value in (self.grpo.epoch_stats() or {}).items():
            self.tensorboard.add_scalar(f"GRPO/{name}", value, epoch_idx)
        return losses

    def loss_names(self, losses):
        r"""The names of an epoch's loss terms (``ce``, ``orth``, ... or ``grpo_surrogate``, ``kl``, ...), or None
        (RecBole's ``train_loss1..N``) when a model returns terms that are not known here."""
        names = GRPO_LOSS_NAMES if self.stage == "grpo" else getattr(self.model, "loss_names", SFT_LOSS_NAMES)
        return names if isinstance(losses, tuple) and len(names) == len(losses) else None

    def _mean_losses(self, losses):
        return tuple(loss / max(self._epoch_batches, 1) for loss in losses)

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        names = self.loss_names(losses)
        if names is None:
            output = super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        else:
            des = self.config["loss_decimal_place"] or 4
            output = (
                set_color(f"epoch {epoch_idx} training", "green")
                + f" [{set_color('time', 'blue')}: {e_time - s_time:.2f}s, {self.stage} loss terms, mean per batch: "
                + ", ".join(
                    f"{set_color(name, 'blue')}: {value:.{des}f}"
                    for name, value in zip(names, self._mean_losses(losses))
                )
                + "]"
            )
        stats = self.grpo.epoch_stats() if self.stage == "grpo" else None
        if stats is None:
            return output
        shown = GRPO_LOGGED + (("kl",) if self.grpo.beta > 0 else ())
        return output + " [grpo " + ", ".join(set_color(name, "blue") + f": {stats[name]:.4f}" for name in shown) + "]"

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        names = self.loss_names(losses)
        if names is None:
            return super()._add_train_loss_to_tensorboard(epoch_idx, losses, tag)
        for name, value in zip(names, self._mean_losses(losses)):
            self.tensorboard.add_scalar(f"Loss/{self.stage}/{name}", value, epoch_idx)
