"""
recbole_flr.trainer.train_state
###############################
:class:`TrainState`: where a training run is, in one record. The trainer counts in it (RecBole's ``start_epoch``,
``cur_step``, ``best_valid_score`` and ``best_valid_result`` are views of it), checkpoints are written from it
(:meth:`TrainState.to_checkpoint`) and a resumed run restores it (:meth:`TrainState.from_checkpoint`).

The checkpoint layout is flat and the same as recbole-flr 0.1.0's last checkpoints (``epoch``, ``cur_step``,
``fit_finished``, ``stage_start_epoch``, ``sft_valid_score``, ...), so files written before this record existed resume
unchanged; a GRPO-stage file without the GRPO state is refused by name.
"""

from collections import OrderedDict
from dataclasses import dataclass

from recbole_flr.checkpoint import plain_result
from recbole_flr.errors import CheckpointError

#: what every checkpoint holds of the state, and what a last checkpoint adds (beside ``fit_finished``)
BEST_KEYS = ("epoch", "cur_step", "best_valid_score")
LAST_KEYS = ("best_valid_result", "rng", "stage_start_epoch")
#: what a last checkpoint of the GRPO stage must hold beyond the counters (the bar to beat and the SFT weights)
GRPO_STATE = ("sft_valid_score", "sft_valid_result", "grpo_best_epoch", "grpo_sft_weights")
GRPO_KEYS = ("stage_start_epoch",) + GRPO_STATE


@dataclass
class TrainState:
    r"""Everything a run's progress is, beside the weights and the optimizer.

    Attributes:
        epoch (int): the epoch being trained, or the last one trained (-1 before the first): the run's one epoch
            counter. RecBole's ``start_epoch`` (the next epoch a ``fit`` trains) is ``epoch + 1``.
        stage (str): the stage being trained (FLRTrainer: ``sft`` or ``grpo``); None for a one-stage trainer.
        stage_start_epoch (int): the first epoch of that stage (epochs are numbered on across stages).
        cur_step (int): validations in a row without improvement (early stopping).
        best_valid_score (float): the best valid score so far (the stage's bar).
        best_valid_result (dict): the valid result of that score.
        finished (bool): read from a checkpoint whose stage had ended (all epochs, early stopping or the time budget):
            the resumed ``fit`` trains nothing and clears it.
        rng (dict): random states read from a checkpoint, restored when the next epoch starts (then None).
        sft_valid_score (float): GRPO's bar, the SFT valid score (None outside GRPO).
        sft_valid_result (dict): the SFT valid result.
        grpo_best_epoch (int): the GRPO epoch saved as the best model (None: none saved).
        grpo_sft_weights (dict): detached copies of the parameters GRPO trains, as SFT left them (GRPO's fallback and
            KL reference).
    """

    epoch: int = -1
    stage: str = None
    stage_start_epoch: int = 0
    cur_step: int = 0
    best_valid_score: float = None
    best_valid_result: dict = None
    finished: bool = False
    rng: dict = None
    sft_valid_score: float = None
    sft_valid_result: dict = None
    grpo_best_epoch: int = None
    grpo_sft_weights: dict = None

    def to_checkpoint(self, epoch=None, resume=False, finished=False, rng=None):
        r"""The checkpoint keys of this state, as plain data that ``torch.load(weights_only=True)`` reads.

        Args:
            epoch (int, optional): the epoch to record, if not :attr:`epoch` (RecBole saves its initial weights as -1).
            resume (bool): also what a resumed run needs (a last checkpoint): :data:`LAST_KEYS`, ``fit_finished`` and,
                in GRPO, :data:`GRPO_STATE`.
            finished (bool): the stage's ``fit`` has ended (only with ``resume``).
            rng (dict): the random states now (only with ``resume``).
        """
        keys = BEST_KEYS + (("stage",) if self.stage is not None else ())  # which stage's weights ("sft": SFT's stand)
        if resume:
            keys += LAST_KEYS + (GRPO_STATE if self.stage == "grpo" else ())
        state = {key: _plain(key, getattr(self, key)) for key in keys}
        state["epoch"] = self.epoch if epoch is None else epoch
        if resume:
            state.update(fit_finished=bool(finished), rng=rng)
        return state

    @classmethod
    def from_checkpoint(cls, checkpoint, name):
        r"""The state a checkpoint was written in: all of it from a last checkpoint (``"last": True``); from a
        best-model checkpoint only its epoch, early-stopping counter and best score (no stage, random states or
        result: a run resumed from it does not follow the original trajectory).

        Raises:
            CheckpointError: a last checkpoint of the GRPO stage without the GRPO state (:data:`GRPO_KEYS`).
        """
        state = cls(**{key: checkpoint[key] for key in BEST_KEYS})
        if not checkpoint.get("last"):
            return state
        state.stage, state.finished = checkpoint.get("stage"), checkpoint["fit_finished"]
        state.stage_start_epoch = checkpoint.get("stage_start_epoch", 0)  # 0: SFT's, or a one-stage trainer's
        keys = ("best_valid_result", "rng")
        if state.stage == "grpo":
            missing = [key for key in GRPO_KEYS if key not in checkpoint]
            if missing:
                raise CheckpointError(
                    f"{name} was written in the GRPO stage but lacks {missing} (an older recbole-flr wrote it): it "
                    "cannot resume GRPO. Resume from an SFT-stage checkpoint of the run or start again."
                )
            keys += GRPO_STATE
        for key in keys:
            value = checkpoint[key]
            setattr(state, key, OrderedDict(value) if key.endswith("_result") and value is not None else value)
        return state


def _plain(key, value):
    return float(value) if key.endswith("_score") else plain_result(value) if key.endswith("_result") else value


def state_view(name, doc=None):
    r"""A trainer attribute that reads and writes field ``name`` of the trainer's :class:`TrainState` (``self.state``),
    so RecBole's code that counts in ``self.cur_step`` etc. counts in the one state."""
    return property(
        lambda self: getattr(self.state, name), lambda self, value: setattr(self.state, name, value), doc=doc
    )
