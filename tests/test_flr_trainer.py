"""FLRTrainer: SFT then latent GRPO on the tiny dataset; what trains, what is saved, what reloads."""

import math
import re
import socket

import pytest
import recbole.trainer.trainer as recbole_trainer
import torch
from recbole.utils import early_stopping

from recbole_flr.quick_start import load_data_and_model, prepare, run, run_recbole_flr
from recbole_flr.trainer import FLRTrainer
from recbole_flr.trainer.grpo import gaussian_logprob

FAST = {"grpo_num_generations": 4, "grpo_epochs": 1, "grpo_learning_rate": 0.01}


def _build(config_dict):
    config, model, _, train_data, valid_data, test_data = prepare("FLR", "tiny", config_dict=config_dict)
    return config, model, train_data, valid_data, test_data


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("backbone", ["embedded", "pretrained"])
def test_two_stage_run_saves_a_weights_only_checkpoint_that_reloads_to_the_same_test_metrics(
    tiny_config_dict, tiny_llm_dir, backbone
):
    config_dict = {**tiny_config_dict, **FAST, "train_stages": ["sft", "grpo"]}
    if backbone == "pretrained":
        config_dict.update(llm_path=tiny_llm_dir, grpo_trainable="all")
    result = run_recbole_flr("FLR", "tiny", config_dict=config_dict)
    for metrics in (result["best_valid_result"], result["test_result"]):
        assert metrics and all(math.isfinite(float(v)) for v in metrics.values())

    checkpoint = torch.load(result["saved_model_file"], map_location="cpu", weights_only=True)
    assert checkpoint["stage"] in ("sft", "grpo")
    assert checkpoint["config"]["train_stages"] == ["sft", "grpo"]
    assert any(key.startswith("latent.") for key in checkpoint["state_dict"])
    assert "item_embedding.weight" in checkpoint["state_dict"]
    if backbone == "pretrained":  # LoRA adapters yes, frozen base-LLM weights never
        backbone_keys = [key for key in checkpoint["state_dict"] if key.startswith("backbone.")]
        assert backbone_keys and all("lora_" in key for key in backbone_keys)

    config, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    reloaded = FLRTrainer(config, model).evaluate(test_data, load_best_model=False)
    assert {k: float(v) for k, v in reloaded.items()} == pytest.approx(
        {k: float(v) for k, v in result["test_result"].items()}, abs=1e-6
    )


def test_grpo_with_trainable_latent_changes_only_the_latent_module(tiny_config_dict):
    config, model, train_data, _, _ = _build({**tiny_config_dict, **FAST, "train_stages": ["grpo"]})
    trainer = FLRTrainer(config, model)
    before = _snapshot(model)
    requires_grad_before = {n: p.requires_grad for n, p in model.named_parameters()}
    trainer.fit(train_data, None, saved=False)  # no validation: no verdict, GRPO's last weights are kept
    assert trainer.grpo_improved is None
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all(n.startswith("latent.") for n in changed), changed
    assert torch.equal(model.item_embedding.weight, before["item_embedding.weight"])
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.backbone.named_parameters(prefix="backbone"))
    # the stage gives the SFT trainable set back
    assert {n: p.requires_grad for n, p in model.named_parameters()} == requires_grad_before
    stats = trainer.grpo.epoch_stats()
    assert all(math.isfinite(v) for v in stats.values()) and stats["reward_std"] > 0
    assert 0.0 <= stats["clip_frac"] <= 1.0 and 0.0 < stats["signal_share"] <= 1.0


@pytest.mark.parametrize("head", ["latent", "backbone"])
def test_grpo_with_trainable_all_moves_the_backbone_and_the_item_table(tiny_config_dict, head):
    r"""``grpo_trainable: all`` trains what SFT trained: the surrogate's gradient reaches pass 1 (it did not before
    2026-11-30: only the latent module moved). On the backbone alone (GRPO's own control) the thought it samples
    around is pass 1's last state."""
    extra = {"thought_source": "none", "user_vector": "last_state"} if head == "backbone" else {}
    config_dict = {**tiny_config_dict, **FAST, "train_stages": ["grpo"], "grpo_trainable": "all", **extra}
    config, model, train_data, _, _ = _build(config_dict)
    trainer = FLRTrainer(config, model)
    before = _snapshot(model)
    trainer.fit(train_data, None, saved=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert any(n.startswith("backbone.") for n in changed), changed
    assert "item_embedding.weight" in changed
    assert any(n.startswith("latent.") for n in changed) == (head == "latent")
    stats = trainer.grpo.epoch_stats()
    assert math.isfinite(stats["reward_std"]) and stats["reward_std"] > 0


@pytest.mark.parametrize("updates", [1, 2, 3])
def test_a_rollout_is_drawn_once_and_reused_by_each_update(tiny_config_dict, monkeypatch, updates):
    config, model, train_data, _, _ = _build(
        {**tiny_config_dict, **FAST, "train_stages": ["grpo"], "grpo_updates_per_rollout": updates}
    )
    trainer = FLRTrainer(config, model)
    draws, losses = [], []
    step = trainer.grpo  # the GRPO step of a batch (LatentGRPO)
    real_draw, real_loss = step.draw_rollout, step.loss

    def draw(interaction):
        draws.append(real_draw(interaction))
        return draws[-1]

    def loss(interaction):
        losses.append(step.rollout_uses)
        return real_loss(interaction)

    monkeypatch.setattr(step, "draw_rollout", draw)
    monkeypatch.setattr(step, "loss", loss)
    trainer.fit(train_data, None, saved=False)
    assert len(draws) == len(train_data) and len(losses) == updates * len(train_data)  # an optimizer step per loss
    assert all(not r.samples.requires_grad and not r.logp_old.requires_grad for r in draws)  # under no_grad
    stats = trainer.grpo.epoch_stats()
    if updates == 1:
        assert stats["clip_frac"] == 0.0  # every update on a fresh rollout: ratio 1, nothing clipped


def test_the_second_update_of_a_rollout_has_a_ratio_and_the_clip_acts(tiny_config_dict):
    config, model, train_data, _, _ = _build(
        {
            **tiny_config_dict,
            **FAST,
            "train_stages": ["grpo"],
            "grpo_updates_per_rollout": 2,
            "grpo_learning_rate": 0.5,
            "grpo_noise_std": 0.05,
        }
    )
    trainer = FLRTrainer(config, model)
    assert trainer.begin_grpo()
    step = trainer.grpo
    step.new_epoch()
    batch = next(iter(train_data)).to(config["device"])
    surrogate = step.loss(batch)[0]
    rollout = step.rollout
    # first update: the current policy drew the samples, rho = 1: the loss is -mean(A) (0 with centred advantages)
    torch.testing.assert_close(surrogate, -rollout.advantages.mean())
    assert step.stats["clip"] == 0.0
    surrogate.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    second = step.loss(batch)[0]
    assert step.rollout is rollout  # the same samples, advantages and logp_old
    # the hand-computed PPO loss from the stored rollout and the moved policy mean
    thought = model.reason(rollout.pass1).thought.repeat_interleave(trainer.grpo.num_generations, dim=0)
    logp = gaussian_logprob(rollout.samples - thought, rollout.sigma)
    ratio = torch.exp(logp - rollout.logp_old)
    assert (ratio - 1).abs().max() > 0.3  # a large step with narrow noise: the ratio has left [0.8, 1.28]
    expected = -torch.min(ratio * rollout.advantages, ratio.clamp(0.8, 1.28) * rollout.advantages).mean()
    torch.testing.assert_close(second, expected)
    assert step.stats["clip"] > 0.0
    step.loss(batch)
    assert step.rollout is not rollout  # a third update of the same batch draws a new rollout


def test_target_logprob_surrogate_was_removed_with_its_reason(tiny_config_dict):
    config, model, *_ = _build({**tiny_config_dict, "grpo_surrogate": "target_logprob"})
    with pytest.raises(ValueError, match="grpo_surrogate: target_logprob was removed.*against the reward"):
        FLRTrainer(config, model)


@pytest.mark.parametrize("grpo_wins", [False, True])
def test_grpo_overwrites_the_sft_checkpoint_only_when_it_beats_it(tiny_config_dict, monkeypatch, grpo_wins):
    config, model, train_data, valid_data, _ = _build({**tiny_config_dict, **FAST, "grpo_epochs": 2})
    trainer = FLRTrainer(config, model)
    real_valid_epoch = trainer._valid_epoch

    def valid_epoch(valid_data, show_progress=False):
        score, result = real_valid_epoch(valid_data, show_progress)
        if trainer.stage == "grpo":  # GRPO validation scores are made worse (or better) than SFT's
            score = score + 1.0 if grpo_wins else -1.0
        return score, result

    monkeypatch.setattr(trainer, "_valid_epoch", valid_epoch)
    sft_weights = {}

    def at_grpo_start(event, info):
        if event == "stage" and info["stage"] == "grpo":
            sft_weights.update(_snapshot(model))  # the best SFT weights, reloaded from the checkpoint

    trainer.add_callback(at_grpo_start)
    best_score, _ = trainer.fit(train_data, valid_data, saved=True)
    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=True)
    latent_keys = [k for k in checkpoint["state_dict"] if k.startswith("latent.")]
    saved_is_sft = all(torch.equal(checkpoint["state_dict"][k], sft_weights[k]) for k in latent_keys)

    assert trainer.grpo_improved is grpo_wins
    if grpo_wins:
        assert checkpoint["stage"] == "grpo" and checkpoint["epoch"] >= 1 and not saved_is_sft
        assert best_score == pytest.approx(trainer.sft_valid_score + 1.0, abs=0.05)
    else:
        # the SFT checkpoint stands: file untouched by GRPO, model weights reset to it, SFT score reported
        assert checkpoint["stage"] == "sft" and checkpoint["epoch"] == 0 and saved_is_sft
        assert all(torch.equal(p.detach(), sft_weights[n]) for n, p in model.named_parameters())
        assert best_score == trainer.sft_valid_score == checkpoint["best_valid_score"]
        assert trainer.cur_step == 2  # both GRPO epochs were counted as failures to improve


def test_a_grpo_epoch_that_ties_sft_neither_overwrites_nor_resets_the_counter(tiny_config_dict, monkeypatch, caplog):
    # RecBole's early_stopping counts a tie (>=) as an improvement: the GRPO weights then overwrote the SFT checkpoint
    # and were tested while the log said the SFT checkpoint stands, and every grpo_epoch ran at an unchanged score
    config, model, train_data, valid_data, test_data = _build(
        {**tiny_config_dict, **FAST, "grpo_epochs": 5, "grpo_stopping_step": 1}
    )
    trainer = FLRTrainer(config, model)
    real_valid_epoch = trainer._valid_epoch
    grpo_epochs = []

    def valid_epoch(valid_data, show_progress=False):
        score, result = real_valid_epoch(valid_data, show_progress)
        if trainer.stage == "grpo":  # a forced tie with the SFT score
            grpo_epochs.append(trainer.state.epoch)
            return trainer.sft_valid_score, result
        return score, result

    monkeypatch.setattr(trainer, "_valid_epoch", valid_epoch)
    sft_weights = {}

    def at_grpo_start(event, info):
        if event == "stage" and info["stage"] == "grpo":
            sft_weights.update(_snapshot(model))

    trainer.add_callback(at_grpo_start)
    with caplog.at_level("INFO"):
        trainer.fit(train_data, valid_data, saved=True)
    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=True)
    assert checkpoint["stage"] == "sft" and checkpoint["epoch"] == 0  # the file: SFT's
    saved = checkpoint["state_dict"]
    assert all(torch.equal(saved[n], sft_weights[n]) for n in sft_weights if n in saved)
    assert trainer.grpo_improved is False and "the SFT checkpoint stands" in caplog.text  # the log
    assert len(grpo_epochs) == 2  # ties count toward grpo_stopping_step=1: stopped after 2 of 5 epochs
    trainer.evaluate(test_data, load_best_model=True)  # the tested weights: SFT's
    assert all(torch.equal(p.detach(), sft_weights[n]) for n, p in model.named_parameters())


def test_sft_ties_keep_the_earlier_checkpoint_too(tiny_config_dict, monkeypatch):
    config, model, train_data, valid_data, _ = _build({**tiny_config_dict, "epochs": 3, "train_stages": ["sft"]})
    trainer = FLRTrainer(config, model)
    monkeypatch.setattr(trainer, "_valid_epoch", lambda valid_data, show_progress=False: (0.5, {"ndcg@10": 0.5}))
    trainer.fit(train_data, valid_data, saved=True)
    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 0 and trainer.cur_step == 2


def test_time_budget_and_callbacks_are_public_and_nothing_of_recbole_is_patched(tiny_config_dict):
    config, model, train_data, valid_data, _ = _build({**tiny_config_dict, **FAST, "epochs": 3, "grpo_epochs": 2})
    trainer = FLRTrainer(config, model)
    events = []

    def callback(event, info):
        assert recbole_trainer.early_stopping is early_stopping  # the strict rule is the trainer's own method
        if event != "evaluate":  # every evaluation, validations included
            events.append((event, info.get("stage"), info.get("batches"), info.get("cut")))

    trainer.add_callback(callback)
    trainer.time_budget = 1e-9  # spent by the first batch
    trainer.fit(train_data, valid_data, saved=False)
    # each stage: the batch that spends the budget, then validation; then training stops
    assert events == [
        ("stage", "sft", None, None),
        ("train_epoch", "sft", 1, True),
        ("valid_epoch", "sft", None, None),
        ("stage", "grpo", None, None),
        ("train_epoch", "grpo", 1, True),
        ("valid_epoch", "grpo", None, None),
        ("fit", None, None, None),
    ]
    assert trainer.budget_spent


def test_time_budget_of_a_recbole_trainer_through_run_recbole_flr(tiny_config_dict):
    events = []
    result = run_recbole_flr(
        "SASRec",
        "tiny",
        config_dict={**tiny_config_dict, "epochs": 3},
        time_budget=1e-9,
        callbacks=[lambda event, info: events.append((event, info.get("batches")))],
    )
    assert [e for e in events if e[0] != "evaluate"] == [
        ("prepared", None),
        ("train_epoch", 1),
        ("valid_epoch", None),
        ("fit", None),
    ]
    assert events[-1] == ("evaluate", None) and math.isfinite(result["test_result"]["ndcg@10"])


def test_kl_is_zero_at_the_reference_and_grows_after_a_step(tiny_config_dict):
    config, model, train_data, valid_data, _ = _build(
        {**tiny_config_dict, **FAST, "train_stages": ["grpo"], "grpo_beta": 0.5, "grpo_learning_rate": 0.05}
    )
    trainer = FLRTrainer(config, model)
    assert trainer.begin_grpo()
    batch = next(iter(train_data)).to(config["device"])
    losses = trainer.grpo.loss(batch)
    assert len(losses) == 5 and losses[1].item() == 0.0  # policy == reference: k3 KL exactly 0
    sum(losses).backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    assert trainer.grpo.loss(batch)[1].item() > 0.0


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("grpo_surrogate", "gate", "level with a random-reward control"),
        ("grpo_trainable", "gate", "gate policy, which was removed"),
        ("grpo_trainable", "latent+head", "the head got no GRPO gradient"),
    ],
)
def test_removed_grpo_settings_are_refused_with_their_reason(tiny_config_dict, key, value, reason):
    config, model, *_ = _build({**tiny_config_dict, key: value})
    with pytest.raises(ValueError, match=f"{key}: {re.escape(value)} was removed .*{reason}"):
        FLRTrainer(config, model)


@pytest.mark.parametrize(
    "key, message",
    [
        ("grpo_beta", r"grpo_beta is ~ .*must be a number; properties/model/FLR.yaml"),  # a ranged key: check_values
        ("grpo_reward", r"\['grpo_reward'\] not set .*FLR.yaml"),  # the others: the GRPO stage's reader
    ],
)
def test_an_unset_grpo_key_is_named(tiny_config_dict, key, message):
    config, model, *_ = _build({**tiny_config_dict, key: None})  # "~" in a YAML file
    with pytest.raises(ValueError, match=message):
        FLRTrainer(config, model)


def test_the_one_grpo_policy_still_loads_from_old_settings(tiny_config_dict):
    config, model, *_ = _build({**tiny_config_dict, "grpo_surrogate": "gaussian"})  # an old YAML file or checkpoint
    assert FLRTrainer(config, model).grpo.num_generations == tiny_config_dict.get("grpo_num_generations", 8)


@pytest.mark.parametrize(
    "key, value",
    [
        ("train_stages", ["sft", "rl"]),
        ("train_stages", ["grpo", "sft"]),
        ("train_stages", "[sft, sft]"),
        ("grpo_num_generations", 1),
        ("grpo_trainable", "backbone"),
        ("grpo_reward", "hit"),
        ("grpo_surrogate", "ppo"),
        ("grpo_updates_per_rollout", 0),
        ("grpo_reward_temperature", 0.0),
        ("grpo_scale_rewards", "yes"),
        ("grpo_reward_temperature_relative", 1),
    ],
)
def test_invalid_stage_keys_raise_naming_the_key(tiny_config_dict, key, value):
    config, model, *_ = _build({**tiny_config_dict, key: value})
    with pytest.raises(ValueError, match=key):
        FLRTrainer(config, model)


def test_train_stages_as_written_on_the_command_line(tiny_config_dict):
    config, model, *_ = _build({**tiny_config_dict, "train_stages": "[sft]"})  # RecBole leaves it a string
    assert FLRTrainer(config, model).train_stages == ["sft"]


def test_grpo_runs_in_two_processes(tiny_config_dict):
    # DDP registers the trainable parameters when it is built: the GRPO stage must rebuild it for its own set
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    result = run("FLR", "tiny", config_dict={**tiny_config_dict, **FAST, "n_factors": 2}, nproc=2, port=port)
    assert result is not None and all(math.isfinite(float(v)) for v in result["test_result"].values())
