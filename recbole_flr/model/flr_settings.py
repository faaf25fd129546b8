"""
recbole_flr.model.flr_settings
##############################
FLR's legal settings: the ranges of its ablation switches and the checks :class:`~recbole_flr.model.flr.FLR` runs on
the keys it reads, each naming the key and its legal values.
"""

from recbole_flr.errors import UserInputError

#: ``thought_source``: the latent module's thought, a learned constant (control: depth without information), none.
THOUGHT_SOURCES = ("latent", "constant", "none")
#: ``user_vector``: the thought decoded by pass 2, pass 1's last state (the backbone alone), the latent state itself.
USER_VECTORS = ("pass2", "last_state", "latent_state")
#: ``factor_aggregation``: the gate-weighted sum of the factors (one user vector), or one user vector per factor and
#: a gate-weighted mixture of their softmaxes over the items, or each item's best score over the factors (``max``,
#: multi-interest retrieval as in MIND and ComiRec).
FACTOR_AGGREGATIONS = ("sum", "mixture", "max")


def check_settings(model, config):
    r"""Refuse an illegal FLR setting with a :class:`~recbole_flr.errors.UserInputError` naming the key.

    Args:
        model (FLR): the model being built, its attributes named as the YAML keys (read in ``__init__``).
        config (Config): for ``train_stages`` and ``grpo_trainable`` (a GRPO stage needs a
            thought to sample around, and parameters that make it).
    """
    _check_scalars(model)
    _check_head(model)
    _check_grpo(model, config["train_stages"] or [], config["grpo_trainable"])
    if not (model.train_all_positions in (None, False) or model.train_all_positions is True):
        raise UserInputError(f"train_all_positions={model.train_all_positions!r} is invalid: it must be True or False.")


def _check_scalars(model):
    for key, low in (("n_factors", 1), ("latent_steps", 1), ("hidden_size", 1), ("lora_r", 1)):
        value = getattr(model, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserInputError(f"{key}={value!r} is invalid: it must be an integer >= {low}.")
    for key in ("lambda_orth", "lambda_div", "lambda_sparse"):
        if getattr(model, key) < 0:
            raise UserInputError(f"{key}={getattr(model, key)} is invalid: it must be a float >= 0.")
    if model.loss_type != "CE":
        raise UserInputError(f"loss_type='{model.loss_type}' is invalid for FLR: the range is ['CE'].")
    if model.llm_gguf_file and not model.llm_path:
        raise UserInputError(
            "llm_gguf_file needs llm_path (the directory or hub repo holding it); or set llm_path "
            "to the .gguf file itself and llm_gguf_file: ~."
        )
    if model.llm_arch == "sasrec" and not model.llm_path and model.user_vector == "pass2":
        raise UserInputError(
            "llm_arch: sasrec (RecBole's SASRec encoder) has no KV cache to decode a thought token on: use "
            "user_vector: latent_state or last_state, or a decoder llm_arch (qwen2, llama, mistral)."
        )
    if model.llm_prompt and not model.llm_path:
        raise UserInputError("llm_prompt needs a pretrained LLM and its tokenizer: set llm_path, or llm_prompt: ~.")
    if model.item_text_only and not model.item_text_encoder:
        raise UserInputError("item_text_only: True needs item_text_encoder (the text features items are made of).")


def _check_head(model):
    r"""The ablation switches (``thought_source``, ``user_vector``, ``factor_aggregation``) and their legal mix."""
    for key, legal in (
        ("thought_source", THOUGHT_SOURCES),
        ("user_vector", USER_VECTORS),
        ("factor_aggregation", FACTOR_AGGREGATIONS),
    ):
        if getattr(model, key) not in legal:
            raise UserInputError(f"{key}={getattr(model, key)!r} is invalid: the range is {list(legal)}.")
    if (model.user_vector == "last_state") != (model.thought_source == "none"):
        raise UserInputError(
            f"user_vector={model.user_vector!r} with thought_source={model.thought_source!r}: the backbone-alone "
            "control is user_vector: last_state with thought_source: none (no latent module, no pass 2); every "
            "other user_vector needs a thought ('latent' or 'constant')."
        )
    if model.thought_source == "constant" and model.user_vector != "pass2":
        raise UserInputError(
            "thought_source: constant needs user_vector: pass2 (a constant latent state would give every user the "
            "same vector)."
        )
    if model.per_factor and (model.thought_source != "latent" or model.user_vector != "latent_state"):
        raise UserInputError(
            f"factor_aggregation: {model.factor_aggregation} scores one user vector per factor from the latent "
            "state: it needs thought_source: latent and user_vector: latent_state."
        )


def _check_grpo(model, train_stages, trainable):
    r"""A GRPO stage samples around a thought: the latent module's (factor_aggregation: sum), or, for the backbone
    alone (GRPO's own control), pass 1's last state, which only ``grpo_trainable: all`` trains."""
    if "grpo" not in train_stages:
        return
    backbone = model.thought_source == "none"
    if backbone and trainable != "all":
        raise UserInputError(
            f"train_stages={list(train_stages)} on the backbone alone (thought_source: none) samples around pass 1's "
            f"last state, which only the backbone and the item table make: it needs grpo_trainable: all (got "
            f"{trainable!r}). Or set train_stages: [sft]."
        )
    if model.thought_source == "constant" or model.per_factor:
        raise UserInputError(
            f"train_stages={list(train_stages)} has a GRPO stage, which samples around the latent module's "
            "thought (or, with thought_source: none, pass 1's last state): it needs thought_source: latent and "
            "factor_aggregation: sum. Set train_stages: [sft]."
        )
