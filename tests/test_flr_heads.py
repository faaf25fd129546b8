"""FLR's ablation switches and head designs (``thought_source``, ``user_vector``, ``factor_aggregation``): each control
computes what it claims, all positions still score like their prefixes, and illegal mixes are refused by name."""

import pytest
import torch
from conftest import build_flr as build

HEADS = {
    "backbone": {"thought_source": "none", "user_vector": "last_state"},
    "constthought": {"thought_source": "constant", "user_vector": "pass2"},
    "latentstate": {"user_vector": "latent_state"},
    "mixture": {"user_vector": "latent_state", "factor_aggregation": "mixture"},
    "maxfactor": {"user_vector": "latent_state", "factor_aggregation": "max"},
}


def _model(config, head, **extra):
    model, train_data, _ = build(config, train_stages=["sft"], **HEADS[head], **extra)
    model.eval()
    batch = next(iter(train_data))
    return model, batch["item_id_list"][:8], batch["item_length"][:8], batch["item_id"][:8]


def _perturb(module):
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn_like(param))


def test_backbone_control_is_pass1_last_state_alone(tiny_config_dict):
    model, seq, length, _ = _model(tiny_config_dict, "backbone")
    interaction = {model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: length}
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
        pass1 = model.encode(seq, length)
        expected = model.user_projection(pass1.last) @ model.item_embeddings(output=True).t()
        torch.testing.assert_close(scores, expected)
        _perturb(model.latent)  # the latent module takes no part
        torch.testing.assert_close(model.full_sort_predict(interaction), scores)


def test_constant_thought_is_one_direction_fed_to_pass2(tiny_config_dict):
    model, seq, length, _ = _model(tiny_config_dict, "constthought")
    interaction = {model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: length}
    with torch.no_grad():
        pass1 = model.encode(seq, length)
        thought = model.reason(pass1).thought  # [B D]
        unit = torch.nn.functional.normalize(thought, dim=-1)
        torch.testing.assert_close(unit, unit[:1].expand_as(unit))  # the same direction for every user
        torch.testing.assert_close(thought.norm(dim=-1), pass1.input_norm)  # at a real token's scale
        scores = model.full_sort_predict(interaction)
        _perturb(model.latent)
        torch.testing.assert_close(model.full_sort_predict(interaction), scores)
        model.constant_thought.add_(1.0)  # ... but the thought reaches the scores through pass 2
        assert not torch.allclose(model.full_sort_predict(interaction), scores)


def test_latent_state_scores_the_thought_without_pass2(tiny_config_dict):
    model, seq, length, _ = _model(tiny_config_dict, "latentstate")
    with torch.no_grad():
        pass1 = model.encode(seq, length)
        thought = model.reason(pass1).thought
        expected = model.user_projection(thought) @ model.item_embeddings(output=True).t()
        torch.testing.assert_close(model.full_sort_predict({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: length}), expected)


def test_mixture_is_a_distribution_and_one_factor_reduces_to_the_latent_state(tiny_config_dict):
    model, seq, length, _ = _model(tiny_config_dict, "mixture")
    interaction = {model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: length}
    with torch.no_grad():
        log_p = model.full_sort_predict(interaction)
        torch.testing.assert_close(log_p.logsumexp(-1), torch.zeros(len(seq)), atol=1e-5, rtol=0)
        pass1 = model.encode(seq, length)
        latent = model.reason(pass1)
        per_factor = torch.log_softmax(model.item_scores(model.user_projection(latent.factor_thoughts)), -1)
        assert latent.gates.shape == (len(seq), model.n_factors)
        expected = (latent.gates[..., None] * per_factor.exp()).sum(1).log()
        torch.testing.assert_close(log_p, expected, atol=1e-5, rtol=1e-4)
    one, seq, length, _ = _model(tiny_config_dict, "mixture", n_factors=1)
    single, *_ = _model(tiny_config_dict, "latentstate", n_factors=1)
    single.load_state_dict(one.state_dict())
    interaction = {one.ITEM_SEQ: seq, one.ITEM_SEQ_LEN: length}
    with torch.no_grad():  # K = 1: the factor's own thought is the thought, the gate is 1
        expected = torch.log_softmax(single.full_sort_predict(interaction), -1)
        torch.testing.assert_close(one.full_sort_predict(interaction), expected, atol=1e-5, rtol=1e-4)


def test_max_scores_each_item_by_its_best_factor(tiny_config_dict):
    model, seq, length, _ = _model(tiny_config_dict, "maxfactor")
    with torch.no_grad():
        scores = model.full_sort_predict({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: length})
        per_factor = model.item_scores(model.reason(model.encode(seq, length)).factor_thoughts)  # [B K n_items]
        torch.testing.assert_close(scores, per_factor.max(1).values)
        assert (per_factor.argmax(1) != per_factor.argmax(1)[:, :1]).any()  # the factors do not all win the same items


@pytest.mark.parametrize("head", list(HEADS))
def test_every_position_scores_like_its_prefix(tiny_config_dict, head):
    model, seq, length, target = _model(tiny_config_dict, head, train_all_positions=True)
    with torch.no_grad():
        logits, next_items, latent = model.all_positions_forward(seq, length, target)
        rows, steps = (torch.arange(seq.size(1))[None] < length[:, None]).nonzero(as_tuple=True)
        prefix = torch.where(torch.arange(seq.size(1))[None] <= steps[:, None], seq[rows], 0)
        expected = model.full_sort_predict({model.ITEM_SEQ: prefix, model.ITEM_SEQ_LEN: steps + 1})
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    if head in ("backbone", "constthought"):  # no factors: the regularisers are zero, not an error
        assert latent.factors is None and all(float(x.detach()) == 0 for x in model.regularisers(latent))


@pytest.mark.parametrize("head", list(HEADS))
def test_each_head_trains_and_its_gradient_reaches_what_it_claims(tiny_config_dict, head):
    model, train_data, _ = build(tiny_config_dict, train_stages=["sft"], **HEADS[head])
    model.train()
    loss = sum(model.calculate_loss(next(iter(train_data))))
    loss.backward()
    latent_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.latent.parameters())
    assert latent_grad == (head in ("latentstate", "mixture", "maxfactor"))  # constthought, backbone: no module
    if head == "constthought":
        assert model.constant_thought.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"thought_source": "nope"}, "thought_source='nope'"),
        ({"user_vector": "last"}, "user_vector='last'"),
        ({"factor_aggregation": "maximum"}, "factor_aggregation='maximum'"),
        ({"user_vector": "last_state"}, "thought_source: none"),
        ({"thought_source": "none"}, "thought_source: none"),
        ({"thought_source": "constant"}, "thought_source: constant needs"),  # the default head is latent_state
        ({"factor_aggregation": "mixture", "user_vector": "pass2"}, "user_vector: latent_state"),
        ({"factor_aggregation": "max", "user_vector": "pass2"}, "factor_aggregation: max scores one user vector"),
        (
            {"user_vector": "latent_state", "factor_aggregation": "mixture", "train_stages": ["sft", "grpo"]},
            "GRPO stage",
        ),
        (
            {"thought_source": "none", "user_vector": "last_state", "train_stages": ["sft", "grpo"]},
            "needs grpo_trainable: all (got 'latent'",
        ),
        (
            {"thought_source": "constant", "user_vector": "pass2", "train_stages": ["grpo"]},
            "GRPO stage",
        ),
    ],
)
def test_illegal_mixes_are_refused_by_name(tiny_config_dict, settings, named):
    settings = {"train_stages": ["sft"], **settings}
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        build(tiny_config_dict, **settings)


# --- llm_arch: sasrec, RecBole's SASRec encoder as the embedded backbone ----------------------------------------------


def test_sasrec_backbone_alone_is_recbole_sasrec(tiny_config_dict):
    r"""With ids only and no user projection, FLR's backbone-alone head on ``llm_arch: sasrec`` scores
    exactly as RecBole's SASRec with the same weights."""
    from recbole_flr.quick_start import prepare

    settings = dict(
        tiny_config_dict, item_text_field=None, llm_arch="sasrec", hidden_dropout_prob=0.0, user_projection=False
    )
    model, seq, length, _ = _model(settings, "backbone")
    sasrec = prepare("SASRec", "tiny", config_dict=dict(settings, n_layers=1, n_heads=2))[1].eval()
    backbone = model.backbone
    sasrec.item_embedding.load_state_dict(model.item_embedding.state_dict())
    sasrec.position_embedding.weight.data.copy_(backbone.position_embedding.weight.data[: sasrec.max_seq_length])
    sasrec.LayerNorm.load_state_dict(backbone.LayerNorm.state_dict())
    sasrec.trm_encoder.load_state_dict(backbone.encoder.state_dict())
    with torch.no_grad():
        interaction = {model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: length}
        torch.testing.assert_close(model.full_sort_predict(interaction), sasrec.full_sort_predict(interaction))


@pytest.mark.parametrize("head", ["backbone", "latentstate", "mixture"])
def test_sasrec_backbone_scores_every_position_like_its_prefix_and_trains(tiny_config_dict, head):
    model, seq, length, target = _model(tiny_config_dict, head, llm_arch="sasrec", train_all_positions=True)
    with torch.no_grad():
        logits, _, _ = model.all_positions_forward(seq, length, target)
        rows, steps = (torch.arange(seq.size(1))[None] < length[:, None]).nonzero(as_tuple=True)
        prefix = torch.where(torch.arange(seq.size(1))[None] <= steps[:, None], seq[rows], 0)
        expected = model.full_sort_predict({model.ITEM_SEQ: prefix, model.ITEM_SEQ_LEN: steps + 1})
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    model, train_data, _ = build(tiny_config_dict, train_stages=["sft"], llm_arch="sasrec", **HEADS[head])
    sum(model.calculate_loss(next(iter(train_data)))).backward()
    assert model.backbone.encoder.layer[0].multi_head_attention.query.weight.grad.abs().sum() > 0


def test_sasrec_backbone_refuses_pass2(tiny_config_dict):
    with pytest.raises(ValueError, match="llm_arch: sasrec"):
        build(tiny_config_dict, llm_arch="sasrec", user_vector="pass2", train_stages=["sft"])


@pytest.mark.parametrize("projection", [False, True])
def test_user_projection_switch(tiny_config_dict, projection):
    model, seq, length, _ = _model(tiny_config_dict, "backbone", user_projection=projection)
    assert any(name.startswith("user_projection") for name, _ in model.named_parameters()) == projection
    with torch.no_grad():
        last = model.encode(seq, length).last
        user = model.user_projection(last) if projection else last  # off: the state itself, as SASRec scores
        expected = user @ model.item_embeddings(output=True).t()
        torch.testing.assert_close(model.full_sort_predict({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: length}), expected)
        if projection:
            assert not torch.allclose(model.user_projection(last), last)
