"""
FLR
################################################

Reference:
    Gao et al. "Factorized Latent Reasoning for LLM-based Recommendation." arXiv 2604.26760, 2026.

Reference:
    Zhang et al. "Reinforced Latent Reasoning for LLM-based Recommendation" (LatentR3). arXiv 2505.19092.
"""

from dataclasses import replace
from logging import getLogger

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_flr.model.all_positions import all_positions_loss, real_positions, register_training_windows
from recbole_flr.model.backbone import Pass1, add_lora, build_embedded_backbone, load_pretrained_backbone
from recbole_flr.model.flr_settings import check_settings
from recbole_flr.model.item_text import (
    ItemTextProjection,
    item_texts,
    load_item_text_features,
    resolve_text_field,
    title_word_ids,
)
from recbole_flr.model.latent_reasoning import (
    FactorizedLatentReasoning,
    LatentOutput,
    diversity_loss,
    mixture_log_probs,
    orthogonality_loss,
    sparsity_loss,
)


class FLR(SequentialRecommender):
    r"""FLR reads the history as item tokens with a decoder-only LM, refines a latent thought with K preference
    factors that attend to the history, feeds the thought back as one extra token reusing the KV cache, and scores
    all items with the resulting user vector.

    NOTE:
        Items are scored over the full item table (item-ID embedding + text embedding) instead of the paper's
        constrained beam search over titles, so FLR is ranked exactly like RecBole's baselines.
        The embedded backbone (``llm_path: ~``) is a small transformer trained from scratch; with ``llm_path``
        the pretrained LLM is frozen and trained through LoRA adapters.
        History items are right-padded as RecBole gives them: the causal mask keeps real positions blind to the
        padding, the attention mask hides it from the thought token, whose position id is the history length.
    """

    def __init__(self, config, dataset):
        super(FLR, self).__init__(config, dataset)

        # load parameters info
        self.hidden_size = config["hidden_size"]
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.initializer_range = config["initializer_range"]
        self.llm_path = config["llm_path"]
        self.llm_gguf_file = config["llm_gguf_file"]
        self.llm_arch = config["llm_arch"]
        self.llm_prompt = config["llm_prompt"]
        self.lora_r = config["lora_r"]
        self.lora_alpha = config["lora_alpha"]
        self.lora_dropout = config["lora_dropout"]
        self.lora_target_modules = config["lora_target_modules"]
        self.item_text_field = resolve_text_field(config["item_text_field"], dataset)
        self.item_text_encoder = config["item_text_encoder"]
        self.item_text_only = bool(config["item_text_only"])
        self.tie_item_embeddings = config["tie_item_embeddings"] is not False
        self.n_factors = config["n_factors"]
        self.latent_steps = config["latent_steps"]
        self.lambda_orth = float(config["lambda_orth"] or 0.0)
        self.lambda_div = float(config["lambda_div"] or 0.0)
        self.lambda_sparse = float(config["lambda_sparse"] or 0.0)
        self.loss_type = config["loss_type"]
        self.train_all_positions = config["train_all_positions"]
        self.thought_source = config["thought_source"] or "none"
        self.user_vector = config["user_vector"]
        self.factor_aggregation = config["factor_aggregation"]
        self.per_factor = self.factor_aggregation != "sum"  # one user vector per factor
        # a latent state that is scored (not fed to pass 2 as a token) keeps LayerNorm's scale, ~sqrt(D), as pass 1's
        # last state does: rescaled to an input embedding's norm (~0.16 at init) its softmax started near uniform
        self._raw_state = self.user_vector == "latent_state"
        check_settings(self, config)
        self.train_all_positions = self.train_all_positions is True

        # define layers and loss
        if self.llm_path:
            self.backbone = load_pretrained_backbone(self.llm_path, self.device, self.llm_gguf_file)
            self.hidden_size = self.backbone.hidden_size  # the LLM's width, whatever the YAML says
        else:
            self.backbone = build_embedded_backbone(self, max_positions=self.max_seq_length + 2)
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        if not self.tie_item_embeddings:
            self.output_item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self._build_text_embedding(config, dataset)  # before LoRA: text features come from the base LLM
        if self.llm_path:
            add_lora(self.backbone, self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)
        if self.llm_prompt:
            self.backbone.set_prompt(self.llm_prompt)
        own_dropout = getattr(self.backbone, "own_input_dropout", False)  # SASRec's, after its own LayerNorm
        self.dropout = nn.Dropout(0.0 if own_dropout else self.hidden_dropout_prob)
        self.latent = FactorizedLatentReasoning(
            self.hidden_size, self.n_factors, self.latent_steps, self.initializer_range
        )
        if self.thought_source == "constant":
            self.constant_thought = nn.Parameter(torch.randn(self.hidden_size) * self.initializer_range)
        # off by default: SASRec scores the state itself, and the projection cost 21 % NDCG@10 (docs/research_log.md)
        projection = config["user_projection"]
        self.user_projection = nn.Linear(self.hidden_size, self.hidden_size) if projection else nn.Identity()
        self.loss_fct = nn.CrossEntropyLoss()
        if self.train_all_positions:  # the training rows whose every position is trained on
            register_training_windows(self, dataset)

        # parameters initialization
        for name, module in self.named_children():
            # never re-initialise a pretrained or HF-initialised backbone; the SASRec encoder is initialised as SASRec
            if name != "backbone" or self.llm_arch == "sasrec" and not self.llm_path:
                module.apply(self._init_weights)
        self._frozen_keys = {"backbone." + key for key in self.backbone.frozen_keys()}

    def _init_weights(self, module):
        """Initialize the weights"""
        if isinstance(module, (nn.Linear, nn.Embedding, nn.EmbeddingBag)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
            if getattr(module, "padding_idx", None) is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def forward(self, item_seq, item_seq_len):
        r"""The user vector u of each history, shape [B, D] (a mixture has K of them: see :meth:`scores`)."""
        if self.per_factor:
            raise ValueError(f"factor_aggregation: {self.factor_aggregation} scores K user vectors: use FLR.scores.")
        pass1 = self.encode(item_seq, item_seq_len)
        return self.user_vectors(pass1, self.reason(pass1))  # [B D]

    def calculate_loss(self, interaction):
        if self.train_all_positions:  # every position of the batch's kept windows
            ce, latent = all_positions_loss(self, interaction)
        else:
            pass1 = self.encode(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
            latent = self.reason(pass1)
            ce = self.loss_fct(self.scores(pass1, latent), interaction[self.POS_ITEM_ID])
        orth, div, sparse = self.regularisers(latent)
        return ce, self.lambda_orth * orth, self.lambda_div * div, self.lambda_sparse * sparse

    def predict(self, interaction):
        return self.full_sort_predict(interaction).gather(1, interaction[self.ITEM_ID][:, None]).squeeze(1)  # [B]

    def full_sort_predict(self, interaction):
        pass1 = self.encode(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.scores(pass1, self.reason(pass1))  # [B n_items]

    def scores(self, pass1, latent):
        r"""Scores of all items for each history, shape [B, n_items]: u . E^T; with ``factor_aggregation: mixture``
        the log-probabilities log sum_k beta_k softmax(u_k E^T); ``max``: max_k u_k . e_i."""
        if self.per_factor:
            scores = self.item_scores(self.user_projection(latent.factor_thoughts))  # [B K n_items]
            return scores.amax(1) if self.factor_aggregation == "max" else mixture_log_probs(scores, latent.gates)
        return self.item_scores(self.user_vectors(pass1, latent))

    def user_vectors(self, pass1, latent):
        r"""The user vector u of each history from what ``user_vector`` names, shape [B, D]."""
        if self.user_vector == "last_state":
            return self.user_projection(pass1.last)
        return self.decode(pass1, latent.thought)

    def encode(self, item_seq, item_seq_len):
        r"""Pass 1 of the backbone over ``[prompt][history items]`` (right-padded history); returns a :class:`Pass1`
        (states, masks, KV cache and what pass 2 needs)."""
        mask = torch.arange(item_seq.size(1), device=item_seq.device)[None] < item_seq_len[:, None]  # [B L]
        emb = self.item_embeddings(item_seq)  # [B L D]
        hidden, cache, attention_mask = self.backbone.prefill(self.dropout(emb), mask)  # [B L D], cache, [B P+L]
        last = self.gather_indexes(hidden, item_seq_len - 1)
        thought_position = attention_mask.size(1) - mask.size(1) + item_seq_len  # P + item_seq_len
        return Pass1(hidden, mask, cache, emb.norm(dim=-1) * mask, last, attention_mask, thought_position)

    def reason(self, pass1, per_factor=False):
        r"""Multi-factor latent reasoning over the pass-1 states; returns a :class:`LatentOutput` (each factor's own
        thought too if ``per_factor`` or a mixture). With ``thought_source: constant`` the thought is a learned vector
        scaled like a real thought, with ``none`` (the backbone alone) pass 1's last state; the factor fields None."""
        if self.thought_source == "latent":
            hidden, mask, per_factor = pass1.hidden, pass1.mask, per_factor or self.per_factor
            return self.latent(hidden, mask, pass1.last, pass1.input_norm, per_factor, self._raw_state)
        thought = self._constant_thought(pass1.input_norm) if self.thought_source == "constant" else pass1.last
        return LatentOutput(thought, None, None, None, None, pass1.mask)

    def _constant_thought(self, target_norm):
        r"""The learned constant thought scaled to ``target_norm`` (any shape S), shape [*S, D]."""
        unit = self.constant_thought / self.constant_thought.norm().clamp_min(1e-12)
        return target_norm[..., None] * unit

    def decode(self, pass1, thought):
        r"""Pass 2: each thought as one extra token on pass 1's KV cache (left unchanged), seeing the prefix, the
        history and itself; the G thoughts of a history (GRPO's samples) share ONE copy of its cache: repeating the
        cache G times cost more than the rest of the GRPO step on amazon-games.

        Args:
            pass1 (Pass1): from :meth:`encode`, batch B.
            thought (torch.Tensor): shape [B * G, D], row i * G + g belonging to history i (G >= 1).

        Returns:
            torch.Tensor: user vectors u, shape [B * G, D].
        """
        if self.user_vector != "pass2":  # no pass 2: the latent state (or pass 1's last state) is the user vector
            return self.user_projection(thought)
        batch = pass1.mask.size(0)
        if thought.size(0) % batch:
            raise ValueError(f"decode got {thought.size(0)} thoughts for {batch} histories (must be a multiple).")
        group = thought.size(0) // batch
        sees, position_ids = pass1.thought_masks(group)
        states = self.backbone.extend(pass1.cache, thought.view(batch, group, -1), position_ids, sees)  # [B G D]
        return self.user_projection(states.reshape(batch * group, -1))

    def item_scores(self, user):
        r"""Scores of all items, shape [B', n_items] (column 0 is the padding item)."""
        return user @ self.item_embeddings(output=True).t()

    def item_embeddings(self, items=None, output=False):
        r"""Item representations E = item-ID embedding + text embedding.

        Args:
            items (torch.Tensor, optional): item ids of any shape; None for the whole table.
            output (bool): the output (scoring) table, which differs only if ``tie_item_embeddings`` is False.

        Returns:
            torch.Tensor: shape [*items.shape, D], or [n_items, D].
        """
        table = self.item_embedding if self.tie_item_embeddings or not output else self.output_item_embedding
        ids = torch.arange(self.n_items, device=table.weight.device) if items is None else items
        if self.item_text_encoder:
            text = self.item_text(ids)
            return text if self.item_text_only else table(ids) + text
        emb = table(ids)
        if self.item_text_field is None:
            return emb
        if not self.llm_path:
            title_ids = self.item_title_ids[ids.reshape(-1)]  # [n W]
            return emb + self.word_embedding(title_ids).view(emb.shape)
        return emb + self.text_projection(self.item_text_features[ids])

    def regularisers(self, latent_output):
        r"""Unweighted (L_orth, L_div, L_sparse) of the last reasoning step (zeros without latent factors)."""
        if latent_output is None or latent_output.factors is None:
            zero = self.item_embedding.weight.sum() * 0.0
            return zero, zero, zero
        factors, attention = latent_output.factors, latent_output.attention
        return orthogonality_loss(factors), diversity_loss(attention), sparsity_loss(attention, latent_output.mask)

    def checkpoint_state_dict(self):
        r"""The state dict without the frozen pretrained LLM weights (LoRA adapters and all heads kept)."""
        return {key: value for key, value in self.state_dict().items() if key not in self._frozen_keys}

    def _build_text_embedding(self, config, dataset):
        if self.item_text_encoder:  # frozen features of a pretrained LM, through a learned projection
            features = load_item_text_features(config, dataset, self.item_text_field)
            self.item_text = ItemTextProjection(features, self.hidden_size)
            return
        if self.item_text_field is None:
            return
        if not self.llm_path:
            title_ids, n_words = title_word_ids(dataset, self.item_text_field)  # [n_items W], 0 = padding
            self.register_buffer("item_title_ids", title_ids, persistent=False)
            self.word_embedding = nn.EmbeddingBag(n_words, self.hidden_size, mode="mean", padding_idx=0)
            return
        titles = item_texts(dataset, [self.item_text_field])
        features = self.backbone.embed_titles(titles, self.device)  # [n_items D], float32, mean norm 1
        # recomputed from the base LLM whenever the model is built, so not written to checkpoints
        self.register_buffer("item_text_features", features, persistent=False)
        self.text_projection = nn.Linear(self.hidden_size, self.hidden_size, bias=False)
        getLogger().info(f"Embedded {len(titles)} item titles ({self.item_text_field}) with the pretrained LLM.")

    def all_positions_forward(self, item_seq, item_seq_len, target):
        r"""Scores at every real position of each history in one pass.

        Position t gets the scores :meth:`full_sort_predict` gives for the prefix ending at t: pass 1 is causal,
        the latent module's attention of position t is masked to positions <= t, and pass 2 decodes one thought
        token per position over pass 1's cache with the positions after t hidden.

        Args:
            item_seq (torch.Tensor): right-padded histories, shape [B, L].
            item_seq_len (torch.Tensor): shape [B].
            target (torch.Tensor): the item after each whole history, shape [B].

        Returns:
            tuple: logits [N, n_items] of the N real positions (row-major over (b, t)), their next items [N], and
            the :class:`LatentOutput` of those positions (factors [N, K, D], attention [N, K, L], prefix masks).
        """
        rows, steps, targets = real_positions(item_seq, item_seq_len, target)  # [N] each
        pass1 = self.encode(item_seq, item_seq_len)
        mask, norm = pass1.mask, pass1.prefix_norm[rows, steps]  # [B L], [N]
        if self.thought_source == "latent":
            positions = self.latent.forward_at(pass1.hidden, mask, rows, steps, norm, self.per_factor, self._raw_state)
        else:
            prefix = mask[rows] & (torch.arange(mask.size(1), device=mask.device)[None] <= steps[:, None])  # [N L]
            thought = self._constant_thought(norm) if self.thought_source == "constant" else None  # [N D]
            positions = LatentOutput(thought, None, None, None, None, prefix)
        if self.user_vector == "pass2":
            # one thought token per position, seeing its prefix only (no real position sees the padded ones' zeros)
            tokens = pass1.hidden.new_zeros(pass1.hidden.shape).index_put((rows, steps), positions.thought)  # [B L D]
            sees, position_ids = pass1.thought_masks()
            state = self.backbone.extend(pass1.cache, tokens, position_ids, sees)[rows, steps]  # [N D]
            logits = self.item_scores(self.user_projection(state))  # [N n_items]
        else:  # no pass 2: each position is scored as :meth:`scores` scores a history ending there
            logits = self.scores(replace(pass1, last=pass1.hidden[rows, steps]), positions)  # [N n_items]
        return logits, targets, positions
