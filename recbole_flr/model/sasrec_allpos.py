"""
recbole_flr.model.sasrec_allpos
###############################
RecBole's SASRec trained on every position of a window in one pass, as the original SASRec is.
"""

import torch
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_flr.errors import UserInputError
from recbole_flr.model.all_positions import all_positions_loss, real_positions, register_training_windows
from recbole_flr.model.item_text import ItemTextProjection, load_item_text_features, resolve_text_field


class SASRecAllPos(SASRec):
    r"""RecBole's :class:`~recbole.model.sequential_recommender.sasrec.SASRec`, unchanged except for the loss:
    full cross-entropy at every real position of one window per user (Kang and McAuley, 2018, train SASRec this
    way), instead of one forward pass per RecBole prefix sample. Evaluation and scoring are SASRec's own.

    It is the baseline to set against FLR's ``train_all_positions`` mode: same training signal, same cost lever.
    Its defaults are RecBole's SASRec.yaml. With ``item_text_encoder`` it reads the same frozen pretrained-LM text
    features as FLR: its item table (input and scoring) becomes ID embedding + a learned projection of them.

    NOTE:
        RecBole's train loader yields every prefix row; rows that are not a kept window are skipped in the loss
        (see :mod:`recbole_flr.model.all_positions`), so an epoch still sees each training target once. Through
        ``run_recbole_flr`` the trainer gets a loader over the kept windows alone
        (:func:`~recbole_flr.model.all_positions.compact_train_data`).
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if self.loss_type != "CE":
            raise UserInputError(
                f"SASRecAllPos needs loss_type: CE (full cross-entropy at every position), got {self.loss_type!r}; "
                "use SASRec for BPR."
            )
        self.item_text_encoder = config["item_text_encoder"]
        self.item_text_only = bool(config["item_text_only"])
        if self.item_text_encoder:
            field = resolve_text_field(config["item_text_field"], dataset)
            self.item_text = ItemTextProjection(load_item_text_features(config, dataset, field), self.hidden_size)
            self.item_text.projection.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif self.item_text_only:
            raise UserInputError("item_text_only: True needs item_text_encoder (the text features items are made of).")
        register_training_windows(self, dataset)

    def item_vectors(self):
        r"""The item table [n_items, H] that both reads the histories and scores the items: SASRec's ID embedding,
        plus the projected text features with ``item_text_encoder`` (those alone with ``item_text_only``)."""
        if not self.item_text_encoder:
            return self.item_embedding.weight
        text = self.item_text()
        return text if self.item_text_only else self.item_embedding.weight + text

    def sequence_output(self, item_seq, table=None):
        r"""SASRec's last-layer states at every position (its ``forward`` without the final gather), [B, L, H];
        ``table`` is :meth:`item_vectors` when the caller has it already."""
        table = self.item_vectors() if table is None else table
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        position_embedding = self.position_embedding(position_ids.unsqueeze(0).expand_as(item_seq))
        # ids only: RecBole's own embedding lookup (the same gradients as SASRec's, summed in the same order)
        items = table[item_seq] if self.item_text_encoder else self.item_embedding(item_seq)
        input_emb = self.dropout(self.LayerNorm(items + position_embedding))
        extended_attention_mask = self.get_attention_mask(item_seq)  # causal and padding
        return self.trm_encoder(input_emb, extended_attention_mask, output_all_encoded_layers=True)[-1]

    def all_positions_forward(self, item_seq, item_seq_len, target):
        r"""(logits [N, n_items] of the N real positions, row-major over (b, t), and their next items [N])."""
        rows, steps, following = real_positions(item_seq, item_seq_len, target)
        table = self.item_vectors()  # once per step: the text projection is a matmul over the whole catalogue
        states = self.sequence_output(item_seq, table)[rows, steps]  # [N H]
        return torch.matmul(states, table.transpose(0, 1)), following

    def forward(self, item_seq, item_seq_len, table=None):
        r"""SASRec's ``forward`` (the state at the last real position), over :meth:`item_vectors`."""
        return self.gather_indexes(self.sequence_output(item_seq, table), item_seq_len - 1)

    def predict(self, interaction):
        table = self.item_vectors()
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], table)
        return (seq_output * table[interaction[self.ITEM_ID]]).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction):
        table = self.item_vectors()
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], table)
        return torch.matmul(seq_output, table.transpose(0, 1))  # [B n_items]

    def calculate_loss(self, interaction):
        return all_positions_loss(self, interaction)[0]
