"""
recbole_flr.model.backbone
##########################
The decoder-only language model that FLR reads item tokens with: an embedded transformer built from a
Hugging Face config (trained from scratch, runs on a CPU) or a pretrained causal LM with LoRA adapters.
Both are the decoder body only (no vocabulary-sized LM head) and are driven through ``inputs_embeds``.
"""

import inspect
import os
import re
from dataclasses import dataclass
from logging import getLogger

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, DynamicCache

from recbole_flr.errors import UserInputError

#: Architecture families the embedded backbone can be built from (``llm_arch``); ``sasrec`` is RecBole's SASRec
#: encoder (:class:`SASRecEncoderBackbone`), the others transformers decoders (:class:`DecoderBackbone`).
EMBEDDED_ARCHS = ("qwen2", "llama", "mistral", "sasrec")
#: Titles longer than this many LLM tokens are cut before they are embedded.
MAX_TITLE_TOKENS = 32
TEXT_BATCH_SIZE = 64
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
GGUF_SUFFIX = ".gguf"


@dataclass
class Pass1:
    r"""FLR's pass 1 of the backbone over a batch of histories (what pass 2 and the latent module need).

    Attributes:
        hidden (torch.Tensor): last-layer states of the history positions, shape [B, L, D].
        mask (torch.Tensor): True at real history positions, shape [B, L].
        cache (tuple): per layer (keys, values) of the prefix and history, batch B; never modified.
        norms (torch.Tensor): norm of each input embedding, 0 on padding, shape [B, L] (see :attr:`input_norm`).
        last (torch.Tensor): state of the last real position (z_0), shape [B, D].
        attention_mask (torch.Tensor): 1 at the cached prefix and real history positions, shape [B, P + L].
        thought_position (torch.Tensor): position id of the thought token (P + item_seq_len), shape [B].
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    cache: tuple
    norms: torch.Tensor
    last: torch.Tensor
    attention_mask: torch.Tensor
    thought_position: torch.Tensor

    @property
    def input_norm(self):
        r"""Mean norm of the real input embeddings, shape [B]: the norm the latent thought is scaled to."""
        return self.norms.sum(1) / self.mask.sum(1).clamp_min(1)

    @property
    def prefix_norm(self):
        r"""Mean norm of the input embeddings up to each position (:attr:`input_norm` of every prefix), shape [B, L]."""
        return self.norms.cumsum(1) / torch.arange(1, self.mask.size(1) + 1, device=self.mask.device)

    def thought_masks(self, group=None):
        r"""Where pass 2's thought tokens sit and what they see, for :meth:`DecoderBackbone.extend`.

        Args:
            group (int, optional): G thoughts per history, each seeing the prefix and the whole history, at position
                id P + item_seq_len; None: one thought per history position t, seeing the prefix and the history
                positions <= t, at position id P + t + 1 (``train_all_positions``).

        Returns:
            tuple: which cached positions each thought sees, bool [B, T, P + L], and their position ids [B, T]
            (T = G, or L).
        """
        if group is not None:
            sees = self.attention_mask.bool()[:, None, :].expand(-1, group, -1)  # [B G P+L]
            return sees, self.thought_position[:, None].expand(-1, group)
        batch, length = self.mask.shape
        n_prompt = self.attention_mask.size(1) - length
        causal = torch.ones(length, length, dtype=torch.bool, device=self.mask.device).tril()
        prompt = self.attention_mask[:, None, :n_prompt].bool().expand(-1, length, -1)  # [B L P]
        sees = torch.cat([prompt, causal[None] & self.mask[:, None, :]], dim=-1)  # [B L P+L]: history <= t
        return sees, (n_prompt + 1 + torch.arange(length, device=self.mask.device))[None].expand(batch, -1)


class DecoderBackbone(nn.Module):
    r"""A decoder-only transformer body with a prefill (pass 1) and a one-token step (pass 2) interface.

    Args:
        body (nn.Module): a transformers base model (e.g. ``Qwen2Model``) that accepts ``inputs_embeds``.
        tokenizer: the pretrained model's tokenizer, or None for the embedded backbone.
        pretrained (bool): whether ``body`` holds frozen pretrained weights (only LoRA adapters train).
    """

    def __init__(self, body, tokenizer=None, pretrained=False):
        super().__init__()
        self.body = body
        self.tokenizer = tokenizer
        self.pretrained = pretrained
        self.hidden_size = body.config.hidden_size
        params = inspect.signature(body.forward).parameters
        # transformers 5 renamed ``past_key_values`` to ``cache`` (the old name is deprecated)
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # the instruction prefix's token ids (:meth:`set_prompt`), read before every history
        self.register_buffer("prompt_ids", torch.zeros(0, dtype=torch.long), persistent=False)

    def set_prompt(self, text):
        r"""Read ``text`` (the ``llm_prompt``, tokenised by the LLM's own tokenizer) before every history."""
        prompt = self.tokenizer(text)["input_ids"]
        self.prompt_ids = torch.tensor(prompt, dtype=torch.long, device=self.prompt_ids.device)

    @property
    def dtype(self):
        return next(self.body.parameters()).dtype

    def prefill(self, inputs_embeds, mask):
        r"""Pass 1 over ``[prompt][inputs]`` (the prompt of :meth:`set_prompt`, none by default).

        Args:
            inputs_embeds (torch.Tensor): shape [B, L, D].
            mask (torch.Tensor): True at real tokens, False at padding, shape [B, L].

        Returns:
            tuple: last-layer states of the inputs [B, L, D] (float32), the KV cache of the prompt and the inputs as
            a tuple of (keys, values) per layer, and its attention mask [B, P + L] (1 at the prompt and real tokens).
        """
        batch, length = mask.shape
        n_prompt = self.prompt_ids.numel()
        if n_prompt:
            prompt = self.embed_token_ids(self.prompt_ids)[None].expand(batch, -1, -1)  # [B P D]
            inputs_embeds = torch.cat([prompt, inputs_embeds], dim=1)
        attention_mask = torch.cat([mask.new_ones(batch, n_prompt), mask], dim=1).long()  # [B P+L]
        position_ids = torch.arange(n_prompt + length, device=mask.device)[None].expand(batch, -1)
        out = self.body(
            inputs_embeds=inputs_embeds.to(self.dtype),
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
        )
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        hidden = out["last_hidden_state"].float()[:, n_prompt:]  # [B L D]
        return hidden, tuple((layer.keys, layer.values) for layer in cache.layers), attention_mask

    def extend(self, cache, inputs_embeds, position_ids, sees_cache):
        r"""Pass 2: T more tokens per row after a :meth:`prefill` cache, which is left unchanged. Each new token
        attends to the cached positions ``sees_cache`` allows and to itself, never to the other new tokens (so T
        thoughts of one history cost one copy of its cache, not T).

        ``DynamicCache.update`` concatenates into new tensors held by a fresh cache object, so the (keys, values)
        tensors of ``cache`` are never written to and pass 2 can be repeated on the same pass 1.

        Args:
            cache (tuple): per layer (keys, values) from :meth:`prefill`, batch B, S cached positions.
            inputs_embeds (torch.Tensor): the new tokens, shape [B, T, D].
            position_ids (torch.Tensor): their position ids, shape [B, T].
            sees_cache (torch.Tensor): bool, which cached positions each new token sees, shape [B, T, S].

        Returns:
            torch.Tensor: the new tokens' last-layer states, shape [B, T, D] (float32).
        """
        batch, length = sees_cache.shape[:2]
        itself = torch.eye(length, dtype=torch.bool, device=sees_cache.device)[None].expand(batch, -1, -1)  # [B T T]
        allowed = torch.cat([sees_cache, itself], dim=-1)  # [B T S+T]
        additive = torch.zeros(allowed.shape, dtype=self.dtype, device=inputs_embeds.device)
        additive = additive.masked_fill(~allowed, torch.finfo(self.dtype).min)[:, None]  # [B 1 T S+T]
        out = self.body(
            inputs_embeds=inputs_embeds.to(self.dtype),
            attention_mask=additive,
            position_ids=position_ids,
            use_cache=True,
            **{self._cache_arg: DynamicCache(ddp_cache_data=cache)},
        )
        return out["last_hidden_state"].float()

    def frozen_keys(self):
        r"""The state-dict keys of the frozen pretrained weights (none for a backbone trained from scratch)."""
        if not self.pretrained:
            return set()
        return {key for key, value in self.state_dict(keep_vars=True).items() if not value.requires_grad}

    def embed_titles(self, titles, device):
        r"""Item titles embedded by :meth:`embed_texts`, rescaled to mean norm 1 (empty titles stay 0): a real LLM's
        pooled states have norms in the tens (SmolLM2-135M: ~40), which made the text part swamp the ID embedding
        and start the cross-entropy far above log(n_items).

        Returns:
            torch.Tensor: shape [len(titles), D], float32 on the CPU.
        """
        features = self.embed_texts(titles, device)
        norms = features.norm(dim=-1)
        return features / (norms[norms > 0].mean() if (norms > 0).any() else 1.0)

    def embed_token_ids(self, token_ids):
        r"""The LLM's own input embeddings of token ids (for the instruction prefix), float32."""
        return self.body.get_input_embeddings()(token_ids).float()

    @torch.no_grad()
    def embed_texts(
        self, texts, device, pooling="mean", max_tokens=MAX_TITLE_TOKENS, batch_size=TEXT_BATCH_SIZE, progress=False
    ):
        r"""Pooled last-layer state of each text under the frozen LLM; an empty text gives a zero vector.

        Args:
            texts (list[str]): one text per row.
            device (torch.device): where to run.
            pooling (str): ``mean`` over the text's tokens, or the ``last`` token's state.
            max_tokens (int): texts longer than this many tokens are cut.
            batch_size (int): texts per forward pass (sorted by length, so a batch pads little).
            progress (bool): show a progress bar.

        Returns:
            torch.Tensor: shape [len(texts), D], float32 on the CPU.
        """
        from tqdm import tqdm

        was_training = self.body.training
        self.body.eval()
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        ids = [row[:max_tokens] for row in ids]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: little padding
        out = torch.zeros(len(texts), self.hidden_size)
        starts = range(0, len(ids), batch_size)
        for start in tqdm(starts, desc="item texts", unit="batch", disable=not progress, ncols=100):
            index = order[start : start + batch_size]
            rows = [ids[i] for i in index]
            width = max(1, max(map(len, rows)))
            tokens = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for i, row in enumerate(rows):
                tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
                mask[i, : len(row)] = 1
            tokens, mask = tokens.to(device), mask.to(device)
            mask[:, 0] = 1  # an empty text still needs one visible key; its pooled vector is zeroed below
            hidden = self.body(input_ids=tokens, attention_mask=mask, use_cache=False)["last_hidden_state"].float()
            lengths = torch.tensor([len(row) for row in rows], device=device)
            valid = (torch.arange(width, device=device)[None] < lengths[:, None]).float()  # [n W]
            if pooling == "last":
                last = hidden[torch.arange(len(rows), device=device), (lengths - 1).clamp_min(0)]
                pooled = last * (lengths > 0).float()[:, None]
            else:
                pooled = (hidden * valid[..., None]).sum(1) / lengths.clamp_min(1)[:, None]
            out[torch.tensor(index)] = pooled.cpu()
        self.body.train(was_training)
        return out


class SASRecEncoderBackbone(nn.Module):
    r"""RecBole's SASRec encoder as FLR's embedded backbone (``llm_arch: sasrec``): learned absolute positions added
    to the inputs, LayerNorm, dropout, then SASRec's post-LayerNorm transformer blocks (GELU, hidden and attention
    dropout) under a causal and padding mask, exactly as :class:`~recbole.model.sequential_recommender.sasrec.SASRec`
    encodes a history.

    It has pass 1 only (no KV cache to decode a thought token on): FLR uses it with ``user_vector: last_state`` or
    ``latent_state``. It is initialised with FLR's heads (normal(0, initializer_range), as SASRec is).
    """

    pretrained = False
    tokenizer = None
    dtype = torch.float32
    own_input_dropout = True  # dropout after its LayerNorm, as SASRec; FLR adds none before it

    def __init__(
        self, hidden_size, n_layers, n_heads, inner_size, hidden_dropout_prob, attn_dropout_prob, max_positions
    ):
        super().__init__()
        from recbole.model.layers import TransformerEncoder

        self.hidden_size = hidden_size
        self.position_embedding = nn.Embedding(max_positions, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.encoder = TransformerEncoder(
            n_layers=n_layers,
            n_heads=n_heads,
            hidden_size=hidden_size,
            inner_size=inner_size,
            hidden_dropout_prob=hidden_dropout_prob,
            attn_dropout_prob=attn_dropout_prob,
            hidden_act="gelu",
            layer_norm_eps=1e-12,
        )

    def prefill(self, inputs_embeds, mask):
        r"""Pass 1 (see :meth:`DecoderBackbone.prefill`): the last-layer states [B, L, D], no cache, the mask."""
        batch, length = mask.shape
        position_ids = torch.arange(length, device=mask.device)[None].expand(batch, -1)
        x = self.dropout(self.LayerNorm(inputs_embeds + self.position_embedding(position_ids)))
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        allowed = causal[None] & mask[:, None, :]  # [B L L]
        extended = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, -10000.0)
        return self.encoder(x, extended[:, None], output_all_encoded_layers=True)[-1], None, mask.long()

    def frozen_keys(self):
        r"""None of its weights is frozen (see :meth:`DecoderBackbone.frozen_keys`)."""
        return set()


def build_embedded_backbone(settings, max_positions):
    r"""A small transformer, randomly initialised; nothing downloaded: a decoder-only model from a transformers
    config, or RecBole's SASRec encoder (``llm_arch: sasrec``, which also takes ``hidden_dropout_prob``).

    Args:
        settings: FLR.yaml's backbone keys as attributes (``llm_arch``, ``hidden_size``, ``n_layers``, ``n_heads``,
            ``inner_size``, ``attn_dropout_prob``, ``hidden_dropout_prob``, ``initializer_range``): the FLR model.
        max_positions (int): the longest input, in positions.

    Returns:
        DecoderBackbone or SASRecEncoderBackbone: the backbone (no tokenizer).
    """
    llm_arch, hidden_size, n_heads = settings.llm_arch, settings.hidden_size, settings.n_heads
    if llm_arch not in EMBEDDED_ARCHS:
        raise UserInputError(f"llm_arch='{llm_arch}' is not supported: valid values are {list(EMBEDDED_ARCHS)}.")
    if hidden_size % n_heads != 0:
        raise UserInputError(f"hidden_size ({hidden_size}) must be a multiple of n_heads ({n_heads}).")
    if llm_arch == "sasrec":
        return SASRecEncoderBackbone(
            hidden_size,
            settings.n_layers,
            n_heads,
            settings.inner_size,
            settings.hidden_dropout_prob,
            settings.attn_dropout_prob,
            max_positions,
        )
    config = AutoConfig.for_model(
        llm_arch,
        vocab_size=1,  # inputs are always inputs_embeds; the token table is unused
        hidden_size=hidden_size,
        num_hidden_layers=settings.n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        intermediate_size=settings.inner_size,
        attention_dropout=float(settings.attn_dropout_prob),  # transformers refuses an int (`0`)
        initializer_range=float(settings.initializer_range),
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    body = AutoModel.from_config(config)
    body.get_input_embeddings().weight.requires_grad_(False)
    return DecoderBackbone(body)


def resolve_llm_path(llm_path):
    r"""Check that ``llm_path`` is an existing local directory or looks like a hub id (``org/name``)."""
    path = os.path.expanduser(str(llm_path))
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or not _HUB_ID.match(str(llm_path)) or str(llm_path).startswith((".", "~")):
        raise UserInputError(
            f"llm_path='{llm_path}' does not exist: give a local directory holding a causal LM saved with "
            "save_pretrained, a .gguf file, or a hub id such as 'Qwen/Qwen2.5-0.5B' (or ~ for the embedded backbone)."
        )
    return str(llm_path)


def gguf_available():
    r"""Whether transformers can read GGUF files (the ``gguf`` package, at the version transformers requires)."""
    from transformers.utils import is_gguf_available

    return is_gguf_available()


def _gguf_files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(GGUF_SUFFIX)) if os.path.isdir(folder) else []


def resolve_checkpoint(llm_path, llm_gguf_file=None):
    r"""Where the pretrained LLM is: ``(directory or hub id, GGUF file name or None)``.

    A GGUF checkpoint is given either as ``llm_path`` pointing at the ``.gguf`` file itself, or as ``llm_path`` (a
    directory or hub repo) plus ``llm_gguf_file``, a file name inside it or an absolute path.

    Raises:
        ValueError: naming ``llm_gguf_file`` (or ``llm_path``) when the file is absent, when both keys name different
            files, or when the ``gguf`` package is missing.
    """
    path = os.path.expanduser(str(llm_path))
    if os.path.isfile(path) and path.endswith(GGUF_SUFFIX):
        folder, name = os.path.split(os.path.abspath(path))
        if llm_gguf_file and os.path.basename(os.path.expanduser(str(llm_gguf_file))) != name:
            raise UserInputError(
                f"llm_gguf_file='{llm_gguf_file}' contradicts llm_path='{llm_path}', which is already a GGUF file: "
                "set llm_gguf_file: ~ (or llm_path to the directory holding llm_gguf_file)."
            )
        llm_gguf_file = name
    elif not llm_gguf_file:
        folder = resolve_llm_path(llm_path)
        found = _gguf_files(folder)
        if found and not os.path.exists(os.path.join(folder, "config.json")):
            raise UserInputError(
                f"llm_path='{llm_path}' holds GGUF files {found} but no config.json: set llm_gguf_file to one of "
                "them, or llm_path to the .gguf file itself."
            )
        return folder, None
    else:
        folder = resolve_llm_path(llm_path)
        wanted = os.path.expanduser(str(llm_gguf_file))
        local = os.path.isdir(folder)
        if os.path.isabs(wanted) or local:
            target = os.path.join(folder, wanted) if local else wanted  # join keeps an absolute ``wanted``
            if not os.path.isfile(target):
                listed = f"; GGUF files in llm_path: {_gguf_files(folder)}" if local else ""
                raise UserInputError(
                    f"llm_gguf_file='{llm_gguf_file}' does not exist (looked for {target}){listed}. Give a .gguf file "
                    "name inside llm_path, an absolute .gguf path, or ~ for a save_pretrained directory."
                )
            folder, llm_gguf_file = os.path.split(os.path.abspath(target))
    if not gguf_available():
        raise UserInputError(
            f"the GGUF checkpoint '{llm_gguf_file}' (llm_gguf_file, or llm_path ending in .gguf) needs the gguf "
            "package, version >= 0.10.0: pip install gguf"
        )
    return folder, llm_gguf_file


def linear_module_names(model):
    r"""Short names of the ``nn.Linear`` modules in ``model`` (what LoRA ``target_modules`` match)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)})


def load_pretrained_backbone(llm_path, device, llm_gguf_file=None):
    r"""Load a pretrained causal LM and its tokenizer; keep the decoder body, frozen.

    bf16 on CUDA, float32 otherwise. The vocabulary-sized LM head is dropped (tied weights stay with the
    input embeddings that the body keeps). A GGUF checkpoint (see :func:`resolve_checkpoint`) is read by
    transformers' GGUF loader, which de-quantises its weights to ``dtype``; its tokenizer comes from the same file.

    Returns:
        DecoderBackbone: the frozen backbone with its tokenizer (LoRA is added by :func:`add_lora`).
    """
    path, gguf_file = resolve_checkpoint(llm_path, llm_gguf_file)
    on_cuda = torch.device(device).type == "cuda"
    dtype = torch.bfloat16 if on_cuda else torch.float32
    source = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **source)
        tokenizer = AutoTokenizer.from_pretrained(path, **source)
    except (OSError, ValueError, KeyError) as error:  # what transformers raises for a folder it cannot read
        raise UserInputError(
            f"llm_path={llm_path!r} is not a causal LM with a tokenizer that transformers can load "
            f"(a folder written by save_pretrained, a .gguf file, or a hub id): {str(error).splitlines()[0]}"
        ) from None
    body = lm.get_decoder().to(device)
    del lm
    body.requires_grad_(False)
    where = os.path.join(path, gguf_file) if gguf_file else path
    getLogger().info(f"Loaded pretrained backbone from {where} ({dtype}, hidden size {body.config.hidden_size}).")
    return DecoderBackbone(body, tokenizer=tokenizer, pretrained=True)


def add_lora(backbone, lora_r, lora_alpha, lora_dropout, lora_target_modules):
    r"""Insert LoRA adapters (peft) into the frozen body in place; only the adapters train.

    Raises:
        ValueError: ``lora_target_modules`` names modules that the model does not have.
    """
    from peft import LoraConfig, get_peft_model

    targets = lora_target_modules
    if isinstance(targets, str) and targets != "all-linear":
        targets = [targets]
    available = linear_module_names(backbone.body)
    if targets != "all-linear":
        missing = [t for t in targets if t not in available]
        if not targets or missing:
            raise UserInputError(
                f"lora_target_modules {missing or targets} not found in the model at llm_path; "
                f"nn.Linear modules that exist: {available} (or 'all-linear')."
            )
    lora_config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets)
    get_peft_model(backbone.body, lora_config)  # injects the adapters into backbone.body in place
    return backbone
