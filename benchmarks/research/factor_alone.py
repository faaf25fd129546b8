r"""What each latent factor's thought ranks alone, against the deployed thought (the gate-weighted sum).

For an FLR checkpoint (``factor_aggregation: sum``, K >= 2), on the valid split: mean NDCG@10 of the deployed user
vector, of each item scored by its best factor (``factor_aggregation: max`` at inference), of each factor's own
thought LayerNorm(z_{T-1} + f_k) weighted by the gate (the expected reward of the gate policy, since removed) and
uniformly, of the best and the worst factor per user (picked with hindsight), and the gate's normalised entropy and
largest weight. The control for "best factor": the best and the mean of K random thoughts, each the deployed thought
plus Gaussian noise as far from it as the factors' thoughts are on average (if picking among those is worth as much,
the factors differ by noise, not by preference). Prints one JSON line and writes
benchmarks/results/factor_alone-<dataset><tag>.json. Example:

    python benchmarks/research/factor_alone.py saved/FLR-amazon-games-mini-<...>.pth --results_tag=-sft2020
"""

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common.py
from common import RESULTS  # noqa: E402

from recbole_flr.quick_start import load_data_and_model  # noqa: E402
from recbole_flr.trainer.grpo import reward_ndcg_at_k  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--results_tag", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config, model, _, _, valid_data, _ = load_data_and_model(args.checkpoint)
    model.eval()
    keys = ("deployed", "max_scores", "gate_weighted", "uniform", "best", "worst", "noise_mean", "noise_best")
    keys += ("entropy", "max_gate")
    sums = dict.fromkeys(keys, 0.0)
    generator = torch.Generator(device=config["device"]).manual_seed(0)
    users = 0
    with torch.no_grad():
        for batch in valid_data:
            interaction = batch[0].to(config["device"])
            target = interaction[model.ITEM_ID]
            pass1 = model.encode(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
            latent = model.reason(pass1, per_factor=True)
            rows, n_factors, dim = latent.factor_thoughts.shape
            deployed = model.item_scores(model.decode(pass1, latent.thought))
            alone = model.item_scores(model.decode(pass1, latent.factor_thoughts.reshape(-1, dim)))
            deployed[:, 0] = alone[:, 0] = -math.inf  # the padding item is never recommended
            ndcg = reward_ndcg_at_k(alone, target.repeat_interleave(n_factors)).view(rows, n_factors)
            sums["max_scores"] += reward_ndcg_at_k(alone.view(rows, n_factors, -1).amax(1), target).sum().item()
            distance = (latent.factor_thoughts - latent.thought[:, None]).norm(dim=-1).mean(1)  # [B]
            noise = torch.randn(rows, n_factors, dim, generator=generator, device=distance.device)
            noise = noise / noise.norm(dim=-1, keepdim=True) * distance[:, None, None]
            noised = model.item_scores(model.decode(pass1, (latent.thought[:, None] + noise).reshape(-1, dim)))
            noised[:, 0] = -math.inf
            noise_ndcg = reward_ndcg_at_k(noised, target.repeat_interleave(n_factors)).view(rows, n_factors)
            sums["noise_mean"] += noise_ndcg.mean(1).sum().item()
            sums["noise_best"] += noise_ndcg.max(1).values.sum().item()
            gates = latent.gates
            sums["deployed"] += reward_ndcg_at_k(deployed, target).sum().item()
            sums["gate_weighted"] += (gates * ndcg).sum().item()
            sums["uniform"] += ndcg.mean(1).sum().item()
            sums["best"] += ndcg.max(1).values.sum().item()
            sums["worst"] += ndcg.min(1).values.sum().item()
            sums["entropy"] += (-(gates * gates.clamp_min(1e-12).log()).sum(1) / math.log(n_factors)).sum().item()
            sums["max_gate"] += gates.max(1).values.sum().item()
            users += rows
    result = {key: round(value / users, 4) for key, value in sums.items()}
    result.update(
        users=users, checkpoint=args.checkpoint, command=" ".join([os.path.basename(sys.executable), *sys.argv])
    )
    print(json.dumps(result))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"factor_alone-{config['dataset']}{args.results_tag}.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
