"""
recbole_flr.trainer.safe_checkpoint
###################################
:class:`SafeCheckpointMixin`: RecBole's trainers with checkpoints that torch >= 2.6 loads with ``weights_only=True``,
a resumable last checkpoint, a time budget and callbacks (the files themselves: :mod:`recbole_flr.checkpoint`).
"""

import os
import time
import uuid
from contextlib import contextmanager

import numpy as np
import torch
from recbole.utils import get_local_time, set_color
from torch.nn.parallel import DistributedDataParallel

from recbole_flr.checkpoint import (
    LAST_SUFFIX,
    atomic_torch_save,
    best_checkpoint_file,
    checkpoint_state_dict,
    copy_file,
    get_rng_state,
    last_checkpoint_file,
    load_checkpoint,
    load_model_state,
    other_parameter_state,
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
      the end of ``fit``), and :attr:`strict_improvement` (the improvement rule; FLRTrainer's is strict).
    - RecBole's own ``fit`` runs every epoch, unchanged; the hooks live in :meth:`_train_epoch` and
      :meth:`_valid_epoch`.

    NOTE:
        RecBole names the best model ``<model>-<time to the second>.pth``, so two runs started in the same second
        share (and overwrite) one file. Here the name also carries the dataset and a random suffix.
    """

    # RecBole's counters live in the one TrainState (self.state) that checkpoints are written from and resume restores
    cur_step = state_view("cur_step")
    best_valid_result = state_view("best_valid_result")
    stage = state_view("stage", "FLRTrainer's stage being trained (``sft`` or ``grpo``); None for other trainers.")

    #: whether a valid score must beat the best strictly to count as an improvement (FLRTrainer); RecBole's rule, False
    #: here, counts a tie as one: the tying epoch overwrites the best checkpoint and resets the stopping counter
    strict_improvement = False
    _in_fit = False  # inside fit: each epoch's start writes the last checkpoint of the one before

    @property
    def best_valid_score(self):
        r"""float: the best valid score so far (``state.best_valid_score``); inside ``fit`` with
        :attr:`strict_improvement`, as a :class:`_StrictBest`, which RecBole's ``early_stopping`` compares strictly."""
        best = self.state.best_valid_score
        return _StrictBest(best) if self._in_fit and self.strict_improvement and best is not None else best

    @best_valid_score.setter
    def best_valid_score(self, value):
        self.state.best_valid_score = np.float64(value) if isinstance(value, _StrictBest) else value

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
        self._save_last = False
        self._epoch_open = False  # an epoch of this fit has started: the next one's start completes it
        self._train_data = None
        self._loss_position = [None, -1]  # (epoch, batch) of the loss _check_nan sees
        self.batch_repeats = 1  # optimizer steps on each batch (FLRTrainer's GRPO: grpo_updates_per_rollout)
        self.time_budget = None  # seconds of training (every fit stage together); None or 0: no limit
        self.budget_spent = False  # the budget ended training (after the epoch that spent it)
        self.callbacks = []
        self._fit_start = None  # time.time() when the outermost fit began
        self.best_epoch = None  # the epoch of the weights in saved_model_file (None: not saved yet, or not known)
        self.best_stage = None  # FLRTrainer: the stage of those weights (sft or grpo)
        self.resumed_from = None  # the checkpoint resume_checkpoint read
        self._resumed_best = None  # the resumed run's best model, copied to saved_model_file when fit starts

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
            "other_parameter": other_parameter_state(self.model),
            "optimizer": self.optimizer.state_dict(),
        }
        rng = get_rng_state(getattr(self._train_data, "generator", None)) if resume else None
        checkpoint.update(self.state.to_checkpoint(epoch, resume, finished, rng))
        if resume:
            checkpoint.update(last=True, best_model_file=os.path.basename(self.saved_model_file))
        return checkpoint

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        if saved_model_file == self.saved_model_file:
            self._set_best(epoch, self.stage)
        if self.config["single_spec"] or self.config["local_rank"] == 0:
            atomic_torch_save(self._checkpoint_state(epoch), saved_model_file)
            if verbose:
                self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _set_best(self, epoch, stage):
        r"""Record the epoch and stage of the weights in ``saved_model_file`` (RecBole saves the untrained weights as
        epoch -1 when ``fit`` has nothing to train: no epoch)."""
        self.best_epoch = epoch if epoch is not None and epoch >= 0 else None
        self.best_stage = stage

    def _save_last_checkpoint(self, finished):
        r"""The last checkpoint, at :attr:`state`'s epoch (complete: trained, validated, counted, best model saved)."""
        if self.config["single_spec"] or self.config["local_rank"] == 0:
            atomic_torch_save(self._checkpoint_state(resume=True, finished=finished), self.last_model_file)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        r"""RecBole's own ``fit``, unchanged, with the hooks of :meth:`_train_epoch`, :meth:`_valid_epoch` and
        :attr:`strict_improvement`; then the last checkpoint, marked finished."""
        self._adopt_resumed_best(saved)
        if self._skip_finished(train_data):  # RecBole's fit would save the current weights as the best
            if saved:  # this run's last checkpoint: the finished state it resumed, under this run's name
                self._train_data = train_data
                self._save_last_checkpoint(finished=True)
            return self.best_valid_score, self.best_valid_result
        self._in_fit, self._save_last, self._epoch_open, self._train_data = True, saved, False, train_data
        try:
            with self.timed_fit():
                try:
                    super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
                except _BudgetSpent:  # raised between two epochs: as RecBole's own early stop
                    if verbose:
                        self.logger.info(
                            f"Finished training: time budget of {self.time_budget} s spent after epoch "
                            f"{self.state.epoch}"
                        )
                    self._add_hparam_to_tensorboard(self.best_valid_score)
                self._budget_check()  # the last epoch may have spent it too
        finally:
            self._in_fit = False
        if saved:
            self._save_last_checkpoint(finished=True)
        return self.best_valid_score, self.best_valid_result

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
            bool(self.time_budget) and self._fit_start is not None and time.time() - self._fit_start > self.time_budget
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

    def _valid_epoch(self, valid_data, show_progress=False):
        tick = time.time()
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._emit(
            "valid_epoch", stage=self.stage, score=float(valid_score), result=valid_result, valid_s=time.time() - tick
        )
        return valid_score, valid_result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        r"""RecBole's epoch with the hooks of its ``fit``: the previous epoch is complete when the next one starts, so
        that is where the time budget ends ``fit`` (:class:`_BudgetSpent`) and the last checkpoint is written."""
        if self._epoch_open:  # the previous epoch of this fit is trained, validated, counted, its best model saved
            if self._budget_check():
                raise _BudgetSpent
            if self._save_last:
                self._save_last_checkpoint(finished=False)
        self._epoch_open = self._in_fit
        self.state.epoch = epoch_idx
        self._restore_pending_rng(train_data)
        self._loss_position = [epoch_idx, -1]
        hooked = self.time_budget or self.callbacks or self.batch_repeats > 1  # else RecBole's own loader, unwrapped
        loader, tick = _EpochLoader(train_data, self) if hooked else train_data, time.time()
        losses = super()._train_epoch(loader, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        if hooked:
            self._emit("train_epoch", epoch=epoch_idx, stage=self.stage, train_s=time.time() - tick, **loader.record)
        return losses

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

    def _skip_finished(self, train_data):
        r"""Whether the resumed checkpoint's stage had finished: then nothing trains, and the random states it left are
        restored for what comes next."""
        finished, self.state.finished = self.state.finished, False
        if finished:
            self._restore_pending_rng(train_data)
        return finished

    def _read_resume_checkpoint(self, resume_file):
        r"""Load ``resume_file``, check it is this model's, restore the weights and :attr:`state` (the one place a run's
        progress is restored), and find the resumed run's best model, which :meth:`fit` copies to this run's
        ``saved_model_file`` (the test after training reads it). Nothing of the resumed run is written to: this run
        writes its own files, under its own name.

        Returns:
            dict: the checkpoint.

        Raises:
            CheckpointError: another model or dataset, weights of other sizes, or a last checkpoint whose best model is
                not beside it (moved alone), before anything is trained.
        """
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        saved = checkpoint["config"]
        for key in ("model", "dataset"):
            if str(saved.get(key, "")).lower() != str(self.config[key]).lower():
                raise CheckpointError(
                    f"Checkpoint {resume_file} belongs to {key} {saved.get(key)!r}, not {self.config[key]!r}."
                )
        current, ignored = plain_config(self.config), ("resume_from", "checkpoint_dir", "data_path")
        changed = sorted(k for k in set(saved) | set(current) if k not in ignored and saved.get(k) != current.get(k))
        if checkpoint.get("last"):
            best_file = self._find_best_of(resume_file, checkpoint)
            if changed:
                self.logger.warning(
                    f"Resuming {resume_file} with settings that differ from the interrupted run's: {changed}; the "
                    "run will not follow its original trajectory."
                )
        else:
            best_file, best = resume_file, checkpoint
            self._set_best(best.get("epoch"), best.get("stage"))
            self.logger.warning(
                f"{resume_file} is a best-model checkpoint, not a '{LAST_SUFFIX}.pth' one: training resumes after its "
                "epoch from its weights and optimizer, but without the random states and counters of the interrupted "
                "run, so not on the same trajectory."
                + (f" Settings that differ from its run's: {changed}." if changed else "")
            )
        state = TrainState.from_checkpoint(checkpoint, resume_file)
        if not checkpoint.get("last"):  # a best-model checkpoint has no result: the run's (None) stands
            state.best_valid_result = self.best_valid_result
        try:
            load_model_state(self.model, checkpoint, resume_file)
        except CheckpointError as error:
            raise CheckpointError(
                f"{error} Settings that differ from the checkpoint's run: {changed or 'none'}."
            ) from None
        self.state = state
        self.resumed_from, self._resumed_best = resume_file, best_file
        return checkpoint

    def _find_best_of(self, last_file, checkpoint):
        r"""The best model that goes with the last checkpoint ``last_file``: the file it names, or its own name minus
        ``-last``, in its folder; its epoch and stage become :attr:`best_epoch` and :attr:`best_stage`."""
        folder = os.path.dirname(last_file)
        names = [os.path.join(folder, checkpoint.get("best_model_file") or ""), best_checkpoint_file(last_file)]
        candidates = list(dict.fromkeys(name for name in names if name and name != last_file))
        found = next((name for name in candidates if os.path.isfile(name)), None)
        if found is None:
            raise CheckpointError(
                f"{last_file} is the last checkpoint of a run whose best model is not beside it (looked for "
                f"{' and '.join(candidates) or 'its name minus -last'}): the test after training reads that best "
                "model. Put it back in the same folder as the -last.pth file, or resume from the best model itself "
                "(without the random states and counters)."
            )
        best = load_checkpoint(found, map_location="cpu")
        if str(best["config"].get("model", "")).lower() != str(self.config["model"]).lower():
            raise CheckpointError(f"{found}, the best model beside {last_file}, belongs to another model.")
        self._set_best(best.get("epoch"), best.get("stage"))
        return found

    def _adopt_resumed_best(self, saved):
        r"""When ``fit`` starts after :meth:`resume_checkpoint` (and ``saved``): the resumed run's best model becomes
        this run's (copied, so the file resumed from is never written)."""
        source, self._resumed_best = self._resumed_best, None
        if not (source and saved) or not (self.config["single_spec"] or self.config["local_rank"] == 0):
            return
        copy_file(source, self.saved_model_file)
        self.logger.info(
            f"The resumed run's best model {source} is this run's best until an epoch beats it: copied to "
            f"{self.saved_model_file} (the files resumed from are not modified)."
        )

    def resume_checkpoint(self, resume_file):
        r"""Continue a run from its last checkpoint (``<best>-last.pth``): weights, optimizer, epoch, early-stopping
        counter, best valid score and result, random states. This run writes its own files (``saved_model_file``, its
        ``-last.pth``), starting from a copy of the resumed run's best model; the files resumed from are only read.

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


class _BudgetSpent(Exception):
    r"""Ends RecBole's ``fit`` loop when the next epoch would start after the time budget is spent."""


class _StrictBest(np.float64):
    r"""A best valid score whose ``>=`` and ``<=`` are strict. RecBole's ``early_stopping`` counts a score as an
    improvement when ``score >= best`` (``<=`` when smaller is better); Python tries the right operand's reflected
    comparison first when its type subclasses the left one's (a float or numpy float score), so with this ``best`` a
    tie is no improvement, without copying RecBole's ``fit`` or patching its ``early_stopping``."""

    def __le__(self, score):  # score >= best
        return float(self) < score

    def __ge__(self, score):  # score <= best
        return float(self) > score


class _EpochLoader:
    r"""The train loader of one epoch as the hooks see it: it yields each batch ``trainer.batch_repeats`` times in a
    row (FLRTrainer's GRPO: one rollout, several updates, trl's ``num_iterations``), counts batches, rows and the
    seconds spent waiting for the loader, and ends the epoch after the batch that spends the trainer's time budget."""

    def __init__(self, loader, trainer):
        self.loader, self.trainer, self.repeats = loader, trainer, trainer.batch_repeats
        self.record = {"batches": 0, "n_batches": len(loader), "samples": 0, "data_s": 0.0, "cut": False}

    def __len__(self):
        return len(self.loader) * self.repeats

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
            for _ in range(self.repeats):
                yield batch
            if self.trainer.over_budget():
                self.trainer.budget_spent = True
                record["cut"] = record["batches"] < len(self.loader)
                return
