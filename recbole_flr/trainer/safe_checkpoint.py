"""
recbole_flr.trainer.safe_checkpoint
###################################
:class:`SafeCheckpointMixin`: checkpoints that torch >= 2.6 loads with ``weights_only=True``, for FLR and for every
RecBole trainer (the files themselves: :mod:`recbole_flr.checkpoint`).

Beside the best model ``<name>.pth``, a trainer with :class:`SafeCheckpointMixin` keeps ``<name>-last.pth``: the state
at the end of the last finished epoch (weights, optimizer, early-stopping counters, RNG states), from which
``resume_checkpoint`` continues an interrupted run on the same trajectory.
"""

import os
import time
import uuid
from contextlib import contextmanager

import torch
from recbole.trainer import Trainer
from recbole.utils import dict2str, early_stopping, get_local_time, set_color
from torch.nn.parallel import DistributedDataParallel

from recbole_flr.checkpoint import (
    LAST_SUFFIX,
    atomic_torch_save,
    best_checkpoint_file,
    checkpoint_state_dict,
    get_rng_state,
    last_checkpoint_file,
    load_checkpoint,
    load_model_state,
    plain_config,
    set_rng_state,
)
from recbole_flr.errors import CheckpointError, NonFiniteLossError
from recbole_flr.trainer.train_state import TrainState, state_view


class SafeCheckpointMixin:
    r"""Mix into any :class:`recbole.trainer.Trainer`: plain-data, atomic, uniquely named checkpoints, a resumable
    "last" checkpoint, and an error naming the epoch and batch of a non-finite loss.

    - Best model: ``saved_model_file`` (written by RecBole's ``fit`` on each valid improvement).
    - Last checkpoint: ``last_model_file`` (``<best minus .pth>-last.pth``), rewritten after every epoch when
      ``saved``: the best model's keys plus ``best_valid_result``, ``fit_finished``, ``best_model_file`` and ``rng``
      (torch, CUDA, numpy, python and the train dataloader's generator). It is written when the next epoch's
      ``_train_epoch`` starts, the moment the previous epoch is complete (trained, validated, early-stopping counted,
      best model saved), and once more when ``fit`` returns (``fit_finished``). A run resumed from it
      (:meth:`resume_checkpoint`) starts that next epoch with the same weights, optimizer, counters and random
      states, so it follows the uninterrupted trajectory exactly (on the same machine and settings).
    - A NaN or infinite loss raises :class:`NonFiniteLossError` before the step: neither checkpoint is touched, so both
      hold the last good state.
    - Public hooks, for benchmarks and tools (nothing patches RecBole): :attr:`time_budget` (seconds of training,
      checked after every batch), :meth:`add_callback` (a function told of every epoch, validation, evaluation and
      the end of ``fit``), and :meth:`early_stopping` (the improvement rule; FLRTrainer's is strict).

    NOTE:
        RecBole names the best model ``<model>-<time to the second>.pth``, so two runs started in the same second
        share (and overwrite) one file. Here the name also carries the dataset and a random suffix.
    """

    # RecBole's counters live in the one TrainState (self.state) that checkpoints are written from and resume restores
    cur_step = state_view("cur_step")
    best_valid_score = state_view("best_valid_score")
    best_valid_result = state_view("best_valid_result")
    stage = state_view("stage", "FLRTrainer's stage being trained (``sft`` or ``grpo``); None for other trainers.")

    @property
    def start_epoch(self):
        r"""int: the next epoch ``fit`` trains (RecBole's name; the counter is ``state.epoch``)."""
        return self.state.epoch + 1

    @start_epoch.setter
    def start_epoch(self, value):
        self.state.epoch = value - 1

    def __init__(self, config, model):
        self.state = TrainState()  # before RecBole's __init__, which sets its counters
        if not config["single_spec"] and config["device"].type == "cpu":
            # RecBole wraps the model in DistributedDataParallel(device_ids=[rank]), which only GPU modules accept
            config["single_spec"] = True
            super().__init__(config, model)
            config["single_spec"] = False
            self.distributed_model = DistributedDataParallel(self.model)
        else:
            super().__init__(config, model)
        name = f"{config['model']}-{config['dataset']}-{get_local_time()}-{uuid.uuid4().hex[:6]}.pth"
        if not config["single_spec"]:
            names = [name]
            torch.distributed.broadcast_object_list(names, src=0)  # every rank reads the file rank 0 writes
            name = names[0]
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)
        self._in_fit = False  # inside fit: each epoch's start writes the last checkpoint of the one before
        self._save_last = False
        self._epoch_open = False  # an epoch of this fit has started: the next one's start completes it
        self._train_data = None
        self._loss_position = [None, -1]  # (epoch, batch) of the loss _check_nan sees
        self.time_budget = None  # seconds of training (every fit stage together); None or 0: no limit
        self.budget_spent = False  # the budget ended training (after the epoch that spent it)
        self.callbacks = []
        self._fit_start = None  # time.time() when the outermost fit began

    @property
    def last_model_file(self):
        r"""str: the resumable checkpoint written after every epoch, beside ``saved_model_file``."""
        return last_checkpoint_file(self.saved_model_file)

    def _checkpoint_state(self, epoch=None, resume=False, finished=False):
        r"""A checkpoint: plain config, the trained weights, the optimizer and :attr:`state` (see
        :meth:`TrainState.to_checkpoint`); with ``resume``, a last checkpoint."""
        config = plain_config(self.config)
        config.pop("resume_from", None)  # how this process started, not what the run is
        checkpoint = {
            "config": config,
            "state_dict": checkpoint_state_dict(self.model),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }
        rng = get_rng_state(getattr(self._train_data, "generator", None)) if resume else None
        checkpoint.update(self.state.to_checkpoint(epoch, resume, finished, rng))
        if resume:
            checkpoint.update(last=True, best_model_file=os.path.basename(self.saved_model_file))
        return checkpoint

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_torch_save(self._checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    # ------------------------------------------------------------------ last checkpoint and resume
    def _save_last_checkpoint(self, finished):
        r"""The last checkpoint, at :attr:`state`'s epoch (complete: trained, validated, counted, best model saved)."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        atomic_torch_save(self._checkpoint_state(resume=True, finished=finished), self.last_model_file)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self.state.finished:
            # the interrupted run had finished this fit; RecBole's fit would save the current weights as the best
            self.state.finished = False
            self._restore_pending_rng(train_data)
            return self.best_valid_score, self.best_valid_result
        self._in_fit, self._save_last, self._epoch_open, self._train_data = True, saved, False, train_data
        try:
            with self.timed_fit():
                if type(self)._recbole_fit() is Trainer.fit:
                    result = self._fit_epochs(train_data, valid_data, verbose, saved, show_progress, callback_fn)
                else:  # a RecBole trainer with its own fit (S3Rec's, NCL's): its loop, without the hooks
                    result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        finally:
            self._in_fit = False
        if saved:
            self._save_last_checkpoint(finished=True)
        return result

    @classmethod
    def _recbole_fit(cls):
        r"""The ``fit`` of the first RecBole class after this mixin in the MRO."""
        mro = cls.__mro__
        return next(klass.fit for klass in mro[mro.index(SafeCheckpointMixin) + 1 :] if "fit" in vars(klass))

    # ------------------------------------------------------------------ public hooks
    def add_callback(self, callback):
        r"""Call ``callback(event, info)`` (``info`` a dict) at each of these events:

        - ``"stage"`` (FLRTrainer) when a stage is set up and its first epoch is next (GRPO: on the best SFT weights):
          ``stage``, ``start_epoch``, ``end_epoch`` (exclusive);
        - ``"train_epoch"`` after each training epoch: ``epoch``, ``stage`` (FLRTrainer's ``sft`` or ``grpo``, else
          None), ``batches`` (trained), ``n_batches`` (in
          the loader), ``samples`` (rows), ``data_s`` (seconds spent waiting for the loader), ``train_s``, ``cut``
          (the budget ended the epoch before its last batch);
        - ``"valid_epoch"`` after each validation: ``stage``, ``score``, ``result`` (the metrics), ``valid_s``;
        - ``"evaluate"`` after each :meth:`evaluate`: ``eval_data``, ``seconds``;
        - ``"fit"`` when the outermost ``fit`` returns (FLR: after all stages): ``fit_s``, ``budget_spent``.

        Every event's ``info`` also holds ``trainer`` (this trainer). :func:`recbole_flr.quick_start.run_recbole_flr`
        sends its callbacks one more event before ``fit``: ``"prepared"`` with ``trainer``, ``train_data``,
        ``valid_data`` and ``test_data``.
        """
        self.callbacks.append(callback)

    def _emit(self, event, **info):
        for callback in self.callbacks:
            callback(event, dict(info, trainer=self))

    def over_budget(self):
        r"""Whether :attr:`time_budget` seconds have passed since the outermost ``fit`` began."""
        return (
            bool(self.time_budget)
            and self._fit_start is not None
            and (time.time() - self._fit_start > self.time_budget)
        )

    def _budget_check(self):
        self.budget_spent = self.budget_spent or self.over_budget()
        return self.budget_spent

    @contextmanager
    def timed_fit(self):
        r"""Time the outermost ``fit`` (the budget's clock; FLRTrainer's stages are nested fits) and report it."""
        if self._fit_start is not None:
            yield
            return
        self._fit_start, self.budget_spent = time.time(), False
        try:
            yield
        finally:
            fit_s, self._fit_start = time.time() - self._fit_start, None
            self._emit("fit", fit_s=fit_s, budget_spent=self.budget_spent)

    def early_stopping(self, valid_score):
        r"""Count one validation: update ``best_valid_score`` and ``cur_step``, as RecBole's
        :func:`~recbole.utils.early_stopping` (a tie is an improvement).

        Returns:
            (bool, bool): (stop training, the score is the new best).
        """
        self.best_valid_score, self.cur_step, stop, update = early_stopping(
            valid_score, self.best_valid_score, self.cur_step, max_step=self.stopping_step,
            bigger=self.valid_metric_bigger,
        )  # fmt: skip
        return stop, update

    def _fit_epochs(self, train_data, valid_data, verbose, saved, show_progress, callback_fn):
        r"""RecBole's :meth:`Trainer.fit` (same steps, logs and checkpoints) with three hooks: the improvement rule is
        :meth:`early_stopping`, the time budget stops training after the epoch that spends it, and the callbacks."""
        if saved and self.start_epoch >= self.epochs:
            self._save_checkpoint(-1, verbose=verbose)
        self.eval_collector.data_collect(train_data)
        if self.config["train_neg_sample_args"].get("dynamic", False):
            train_data.get_model(self.model)
        valid_step = 0
        for epoch_idx in range(self.start_epoch, self.epochs):
            loader = _EpochLoader(train_data, self) if self.time_budget or self.callbacks else train_data
            training_start_time = time.time()
            train_loss = self._train_epoch(loader, epoch_idx, show_progress=show_progress)
            self.train_loss_dict[epoch_idx] = sum(train_loss) if isinstance(train_loss, tuple) else train_loss
            training_end_time = time.time()
            if loader is not train_data:
                self._emit("train_epoch", epoch=epoch_idx, stage=self.stage,
                           train_s=training_end_time - training_start_time, **loader.record)  # fmt: skip
            train_loss_output = self._generate_train_loss_output(
                epoch_idx, training_start_time, training_end_time, train_loss
            )
            if verbose:
                self.logger.info(train_loss_output)
            self._add_train_loss_to_tensorboard(epoch_idx, train_loss)
            self.wandblogger.log_metrics(
                {"epoch": epoch_idx, "train_loss": train_loss, "train_step": epoch_idx}, head="train"
            )
            if self.eval_step <= 0 or not valid_data:
                if saved:
                    self._save_checkpoint(epoch_idx, verbose=verbose)
                if self._budget_check():
                    break
                continue
            if (epoch_idx + 1) % self.eval_step == 0:
                valid_start_time = time.time()
                valid_score, valid_result = self._valid_epoch(valid_data, show_progress=show_progress)
                stop_flag, update_flag = self.early_stopping(valid_score)
                stop_flag = self._budget_check() or stop_flag
                valid_end_time = time.time()
                valid_score_output = (
                    set_color("epoch %d evaluating", "green") + " [" + set_color("time", "blue") + ": %.2fs, "
                    + set_color("valid_score", "blue") + ": %f]"
                ) % (epoch_idx, valid_end_time - valid_start_time, valid_score)  # fmt: skip
                valid_result_output = set_color("valid result", "blue") + ": \n" + dict2str(valid_result)
                if verbose:
                    self.logger.info(valid_score_output)
                    self.logger.info(valid_result_output)
                self.tensorboard.add_scalar("Vaild_score", valid_score, epoch_idx)
                self.wandblogger.log_metrics({**valid_result, "valid_step": valid_step}, head="valid")
                if update_flag:
                    if saved:
                        self._save_checkpoint(epoch_idx, verbose=verbose)
                    self.best_valid_result = valid_result
                if callback_fn:
                    callback_fn(epoch_idx, valid_score)
                if stop_flag:
                    stop_output = "Finished training, best eval result in epoch %d" % (
                        epoch_idx - self.cur_step * self.eval_step
                    )
                    if self.budget_spent:
                        stop_output += f" (time budget of {self.time_budget} s spent)"
                    if verbose:
                        self.logger.info(stop_output)
                    break
                valid_step += 1
            elif self._budget_check():
                break
        self._add_hparam_to_tensorboard(self.best_valid_score)
        return self.best_valid_score, self.best_valid_result

    def _valid_epoch(self, valid_data, show_progress=False):
        tick = time.time()
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._emit("valid_epoch", stage=self.stage, score=float(valid_score), result=valid_result,
                   valid_s=time.time() - tick)  # fmt: skip
        return valid_score, valid_result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self._in_fit and self._save_last and self._epoch_open:
            # the previous epoch is complete (trained, validated, early stopping counted, best model saved)
            self._save_last_checkpoint(finished=False)
        self._epoch_open = self._in_fit
        self.state.epoch = epoch_idx
        self._restore_pending_rng(train_data)
        self._loss_position = [epoch_idx, -1]
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    def _check_nan(self, loss):
        r"""RecBole calls this once per batch, before the backward pass: a NaN or inf loss stops training with an
        error naming the stage, epoch and batch, and no checkpoint is written after it."""
        self._loss_position[1] += 1
        if bool(torch.isfinite(loss).all()):
            return
        epoch, batch = self._loss_position
        kept = [f"best model {self.saved_model_file}"] if os.path.isfile(self.saved_model_file) else []
        if os.path.isfile(self.last_model_file):
            kept.append(f"last checkpoint {self.last_model_file} (resume with resume_from)")
        raise NonFiniteLossError(
            f"Training loss is {'nan' if bool(torch.isnan(loss).any()) else 'inf'} in stage "
            f"{self.stage or 'train'}, epoch {epoch}, batch {batch}; training stopped before this batch's update. "
            + (f"Kept, as of the last good epoch: {'; '.join(kept)}." if kept else "No checkpoint was written yet.")
        )

    def _restore_pending_rng(self, train_data):
        if self.state.rng is not None:
            set_rng_state(self.state.rng, getattr(train_data, "generator", None))
            self.state.rng = None

    def _read_resume_checkpoint(self, resume_file):
        r"""Load ``resume_file``, check it is this model's, restore the weights and :attr:`state` (the one place a run's
        progress is restored), and point ``saved_model_file`` at the original run's best model.

        Returns:
            dict: the checkpoint.
        """
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        saved = checkpoint["config"]
        for key in ("model", "dataset"):
            if str(saved.get(key, "")).lower() != str(self.config[key]).lower():
                raise CheckpointError(
                    f"Checkpoint {resume_file} belongs to {key} {saved.get(key)!r}, not {self.config[key]!r}."
                )
        if checkpoint.get("last"):
            self.saved_model_file = best_checkpoint_file(resume_file) or os.path.join(
                os.path.dirname(resume_file), checkpoint["best_model_file"]
            )
            current = plain_config(self.config)
            changed = sorted(
                k
                for k in set(saved) | set(current)
                if k not in ("resume_from", "checkpoint_dir", "data_path") and saved.get(k) != current.get(k)
            )
            if changed:
                self.logger.warning(
                    f"Resuming {resume_file} with settings that differ from the interrupted run's: {changed}; the "
                    "run will not follow its original trajectory."
                )
        else:
            self.saved_model_file = resume_file
            self.logger.warning(
                f"{resume_file} is a best-model checkpoint, not a '{LAST_SUFFIX}.pth' one: training resumes after its "
                "epoch from its weights and optimizer, but without the random states and counters of the interrupted "
                "run, so not on the same trajectory."
            )
        state = TrainState.from_checkpoint(checkpoint, resume_file)
        if not checkpoint.get("last"):  # a best-model checkpoint has no result: the run's (None) stands
            state.best_valid_result = self.best_valid_result
        load_model_state(self.model, checkpoint, resume_file)
        self.state = state
        return checkpoint

    def resume_checkpoint(self, resume_file):
        r"""Continue a run from its last checkpoint (``<best>-last.pth``): weights, optimizer, epoch, early-stopping
        counter, best valid score and result, random states; the best model keeps the original run's file.

        A best-model checkpoint is accepted too (RecBole's behaviour: its weights, optimizer and epoch; the random
        states are not restored).
        """
        checkpoint = self._read_resume_checkpoint(resume_file)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(
            f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}"
            + (" (its training had finished)" if self.state.finished else "")
        )

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        tick = time.time()
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            if not self.config["single_spec"]:
                torch.distributed.barrier()  # rank 0 writes the best model; the others must not read it earlier
            load_model_state(self.model, load_checkpoint(checkpoint_file, map_location=self.device), checkpoint_file)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        self._emit("evaluate", eval_data=eval_data, seconds=time.time() - tick)
        return result


class _EpochLoader:
    r"""The train loader of one epoch as the hooks see it: it counts batches, rows and the seconds spent waiting for
    the loader, and ends the epoch after the batch that spends the trainer's time budget."""

    def __init__(self, loader, trainer):
        self.loader, self.trainer = loader, trainer
        self.record = {"batches": 0, "n_batches": len(loader), "samples": 0, "data_s": 0.0, "cut": False}

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        record, iterator = self.record, iter(self.loader)
        while True:
            tick = time.time()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            record["data_s"] += time.time() - tick
            record["batches"] += 1
            record["samples"] += len(batch)
            yield batch
            if self.trainer.over_budget():
                self.trainer.budget_spent = True
                record["cut"] = record["batches"] < len(self.loader)
                return
