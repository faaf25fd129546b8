"""Throughput of FLR's training and inference steps against the bare backbone, with MFU against the card's own
measured matmul rate, and (with ``--dataset``) how busy RecBole's data pipeline leaves the device.

The backbone is a Qwen2.5-0.5B-shaped body (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864; random weights:
speed does not depend on them) built from a config, saved with ``save_pretrained`` to a temporary folder and loaded
through FLR's own ``llm_path`` code path (frozen body, LoRA adapters through peft), or a real checkpoint with
``--llm_path`` (a folder, or a .gguf file). Its token table is cut to a small tokenizer's vocabulary: FLR feeds the
body ``inputs_embeds``, so the 151,936-row table of the real model would only be a frozen lookup.

Timed, each on the same batch of ``--batch`` histories of ``--length`` items (every history full length):
    bare_train   the bare body (with the same LoRA adapters): forward + backward of a dummy loss on its states
    bare_infer   the bare body's forward, no grad
    flr_sft      sum(FLR.calculate_loss(batch)).backward(): pass 1, latent reasoning, pass 2, CE over all items
    flr_grpo     FLRTrainer's own GRPO loss with G = ``--generations`` (pass 1 once under no_grad, G thoughts per
                 history through pass 2 and the item scores), backward; trains the latent module, as grpo_trainable
                 'latent' does
    flr_infer    FLR.full_sort_predict(batch): the scores of all items, no grad
No optimizer step in any of them (the same for all: LoRA and the heads are small next to the body).

FLOPs use the 6N convention of the reference figures (PaLM's MFU; N = the body's parameters without the token table,
frozen and trained alike, T = tokens): training 6*N*T, inference 2*N*T. For FLR, T counts the thought token of
pass 2 (L + 1 per history; G per history for GRPO's pass 2) and the item scores add 6*D*n_items per history (2* without
grad). The latent module and attention's T^2 terms are left out (under 1% here). With LoRA the card does about 4*N*T
of real work in training (the frozen weights get no gradient), so 6N-MFU overstates its useful work by 1.5x; it is
kept because the reference figures use it. MFU divides by the card's measured dense matmul rate in ``--dtype``.

    python benchmarks/throughput.py --device cuda                              # H100: the reference setting
    python benchmarks/throughput.py --device cuda --dataset ml-1m --data_path ../shared/datasets
    python benchmarks/throughput.py --device cpu --shape tiny --batch 32 --length 16 --steps 5   # smoke

Prints a table and writes benchmarks/results/throughput-<device>-<shape>[-<dataset>].json.
"""

import argparse
import json
import os
import platform
import re
import string
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: common.py
from common import RESULTS  # noqa: E402

SHAPES = {
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    ),
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=1024,
    ),
}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
TARGETS = {"sft_over_bare": 0.75, "grpo_over_sft": 1.5}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_matmul_rate(device, dtype, n=None, iters=None):
    r"""Dense matmul FLOP/s of this device in ``dtype``: an n x n x n matmul in a loop, 2 n^3 FLOPs each."""
    n = n or (8192 if device.type == "cuda" else 1024)
    iters = iters or (100 if device.type == "cuda" else 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - start)


def write_llm(folder, shape, dtype):
    r"""A causal LM of ``shape`` with random weights and a tiny byte-level BPE tokenizer, saved to ``folder``."""
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(["<|endoftext|>"] + list(string.ascii_letters + string.digits) + ["Ġ"])}
    Qwen2Tokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    config = AutoConfig.for_model("qwen2", vocab_size=len(vocab), tie_word_embeddings=True, **SHAPES[shape])
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=dtype).save_pretrained(folder)
    return folder


class _Items:
    r"""What FLR reads from a RecBole dataset when ``item_text_field`` is ~: the number of items."""

    item_feat = None

    def __init__(self, n_items):
        self.n_items = n_items

    def num(self, field):
        return self.n_items


def flr_config(args, device, dataset="throughput", **extra):
    from recbole_flr import Config

    config_dict = {
        "llm_path": args.llm_path,
        "llm_gguf_file": args.llm_gguf_file,
        "item_text_field": None,
        "MAX_ITEM_LIST_LENGTH": args.length,
        "lora_r": args.lora_r,
        "n_factors": args.n_factors,
        "latent_steps": args.latent_steps,
        "gpu_id": "0" if device.type == "cuda" else "",
        "state": "ERROR",
        "show_progress": False,
        "train_batch_size": args.batch,
        "seed": 2020,
        "reproducibility": False,
        "grpo_num_generations": args.generations,
        # one loss per history, as the FLOP counts below assume (and as the stand-in dataset allows: it has no
        # training rows to pick all-positions windows from); train_all_positions is timed in docs/research_log.md
        "train_all_positions": False,
        **extra,
    }
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config would read this script's --key=value flags too
    try:
        config = Config(model="FLR", dataset=dataset, config_dict=config_dict)
    finally:
        sys.argv = argv
    config["device"] = device
    return config


def build_flr(args, device, dtype, n_items):
    from recbole_flr.model import FLR

    config = flr_config(args, device)
    model = FLR(config, _Items(n_items)).to(device)
    model.backbone.body.to(dtype)  # FLR picks bf16 on CUDA, float32 on CPU; --dtype may ask otherwise
    return model, config


def grpo_loss_fn(model, config):
    r"""FLRTrainer's GRPO loss as the trainer runs it (``trainer.grpo.loss``), without the KL reference."""
    from recbole_flr.trainer import FLRTrainer

    config["grpo_beta"] = 0.0
    # every timed step draws a rollout and updates once: a GRPO step at full cost
    config["grpo_updates_per_rollout"] = 1
    return FLRTrainer(config, model).grpo.loss


def synthetic_batch(model, batch, length, n_items, device):
    from recbole.data.interaction import Interaction

    generator = torch.Generator().manual_seed(0)
    return Interaction(
        {
            model.ITEM_SEQ: torch.randint(1, n_items, (batch, length), generator=generator),
            model.ITEM_SEQ_LEN: torch.full((batch,), length, dtype=torch.long),
            model.ITEM_ID: torch.randint(1, n_items, (batch,), generator=generator),
        }
    ).to(device)


def time_step(fn, steps, warmup, device):
    r"""Seconds per call of ``fn`` (mean over ``steps`` after ``warmup``) and the peak device memory in GiB."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return seconds, peak


def body_parameters(body):
    r"""Parameters of the body without its token table (frozen and LoRA alike): N of the 6N convention."""
    table = body.get_input_embeddings().weight
    return sum(p.numel() for p in body.parameters() if p is not table)


def run_steps(args, model, config, device, dtype):
    B, L, G, D, n_items = args.batch, args.length, args.generations, model.hidden_size, model.n_items
    inter = synthetic_batch(model, B, L, n_items, device)
    body = model.backbone.body
    params = [p for p in model.parameters() if p.requires_grad]
    x = torch.randn(B, L, D, device=device, dtype=dtype)
    ones = torch.ones(B, L, dtype=torch.long, device=device)
    positions = torch.arange(L, device=device)[None].expand(B, -1)
    grpo_loss = grpo_loss_fn(model, config)

    def zero_grad():
        for p in params:
            p.grad = None

    def bare_train():
        model.train()
        hidden = body(inputs_embeds=x, attention_mask=ones, position_ids=positions, use_cache=False)
        hidden["last_hidden_state"].float().pow(2).mean().backward()
        zero_grad()

    @torch.no_grad()
    def bare_infer():
        model.eval()
        body(inputs_embeds=x, attention_mask=ones, position_ids=positions, use_cache=False)

    def flr_sft():
        model.train()
        sum(model.calculate_loss(inter)).backward()
        zero_grad()

    latent_only = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("latent.")]

    def flr_grpo():
        for p in latent_only:  # grpo_trainable: latent, as the trainer sets it
            p.requires_grad_(False)
        try:
            sum(grpo_loss(inter)).backward()
        finally:
            for p in latent_only:
                p.requires_grad_(True)
            zero_grad()

    @torch.no_grad()
    def flr_infer():
        model.eval()
        model.full_sort_predict(inter)

    N = body_parameters(body)
    flops = {
        "bare_train": 6 * N * B * L,
        "bare_infer": 2 * N * B * L,
        "flr_sft": 6 * N * B * (L + 1) + 6 * D * n_items * B,
        "flr_grpo": 2 * N * B * L + 2 * N * B * G + 2 * D * n_items * B * G,
        "flr_infer": 2 * N * B * (L + 1) + 2 * D * n_items * B,
    }
    steps = {
        "bare_train": bare_train,
        "bare_infer": bare_infer,
        "flr_sft": flr_sft,
        "flr_grpo": flr_grpo,
        "flr_infer": flr_infer,
    }
    results = {}
    for name, fn in steps.items():
        seconds, peak = time_step(fn, args.steps, args.warmup, device)
        results[name] = {
            "ms_per_step": 1e3 * seconds,
            "histories_per_s": B / seconds,
            "tflops": flops[name] / seconds / 1e12,
            "peak_mem_gib": peak,
        }
    return results, N


def run_pipeline(args, device, dtype):
    r"""RecBole's training data pipeline for ``--dataset``: build time, loader-only histories/s (with the copy to the
    device, as RecBole's trainer does it), then ``--pipeline_batches`` full SFT steps (optimizer included) fed by it,
    with the device's busy share of the wall time (CUDA events around each step; CPU: the step's share)."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_flr.model import FLR

    config = flr_config(
        args,
        device,
        dataset=args.dataset,
        data_path=args.data_path,
        worker=args.worker,
        load_col={"inter": ["user_id", "item_id", "timestamp"]},
    )
    init_seed(config["seed"], config["reproducibility"])
    start = time.perf_counter()
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    built = time.perf_counter() - start
    n_batches = args.pipeline_batches or len(train_data)

    def batches():
        for i, interaction in enumerate(train_data):
            if i == n_batches:
                return
            yield interaction.to(device)

    start = time.perf_counter()
    rows = sum(len(interaction) for interaction in batches())
    loader_s = time.perf_counter() - start

    model = FLR(config, train_data._dataset).to(device)
    model.backbone.body.to(dtype)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    busy, steps_rows = 0.0, 0
    sync(device)
    start = time.perf_counter()
    for interaction in batches():
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
        else:
            step_start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        sum(model.calculate_loss(interaction)).backward()
        optimizer.step()
        if device.type == "cuda":
            end.record()
            end.synchronize()  # RecBole's trainer reads the loss with .item() every step: the same sync
            busy += begin.elapsed_time(end) / 1e3
        else:
            busy += time.perf_counter() - step_start
        steps_rows += len(interaction)
    sync(device)
    wall = time.perf_counter() - start
    return {
        "dataset": args.dataset,
        "n_items": dataset.item_num,
        "train_histories_per_epoch": len(train_data.dataset),
        "batches_timed": n_batches,
        "build_s": built,
        "loader_histories_per_s": rows / loader_s,
        "end_to_end_histories_per_s": steps_rows / wall,
        "device_busy_fraction": busy / wall,
        "epoch_s_estimate": len(train_data.dataset) / (steps_rows / wall),
        "worker": args.worker,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    parser.add_argument("--llm_path", default=None, help="a real checkpoint instead of --shape (folder or .gguf)")
    parser.add_argument("--llm_gguf_file", default=None)
    parser.add_argument("--batch", type=int, default=256, help="histories per step")
    parser.add_argument("--length", type=int, default=64, help="items (tokens) per history: MAX_ITEM_LIST_LENGTH")
    parser.add_argument("--n_items", type=int, default=16859, help="items scored (default: amazon-games)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--generations", type=int, default=8, help="GRPO samples per history G")
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--n_factors", type=int, default=4)
    parser.add_argument("--latent_steps", type=int, default=2)
    parser.add_argument("--dataset", default=None, help="also time RecBole's data pipeline on this dataset")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--pipeline_batches", type=int, default=50, help="batches of the pipeline run (0: an epoch)")
    parser.add_argument("--worker", type=int, default=0, help="RecBole's DataLoader workers in the pipeline run")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or 'cpu'})"
    peak = measured_matmul_rate(device, dtype)
    with tempfile.TemporaryDirectory() as folder:
        if not args.llm_path:
            args.llm_path = write_llm(folder, args.shape, dtype)
            shape = args.shape
        else:
            shape = re.sub(r"\W+", "-", os.path.basename(args.llm_path.rstrip("/"))).lower()
        model, config = build_flr(args, device, dtype, args.n_items)
        results, N = run_steps(args, model, config, device, dtype)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        pipeline = run_pipeline(args, device, dtype) if args.dataset else None

    for row in results.values():
        row["mfu"] = row["tflops"] * 1e12 / peak
    ratios = {
        "sft_over_bare": results["flr_sft"]["histories_per_s"] / results["bare_train"]["histories_per_s"],
        "grpo_over_sft": results["flr_grpo"]["ms_per_step"] / results["flr_sft"]["ms_per_step"],
        "infer_over_bare": results["flr_infer"]["histories_per_s"] / results["bare_infer"]["histories_per_s"],
    }
    report = {
        "device": name,
        "dtype": str(dtype).replace("torch.", ""),
        "shape": shape,
        "body_params_N": N,
        "batch": args.batch,
        "length": args.length,
        "n_items": args.n_items,
        "generations": args.generations,
        "lora_r": args.lora_r,
        "n_factors": args.n_factors,
        "latent_steps": args.latent_steps,
        "steps": args.steps,
        "measured_matmul_tflops": peak / 1e12,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": results,
        "ratios": ratios,
        "targets": TARGETS,
        "pipeline": pipeline,
        "command": " ".join(["python"] + sys.argv),
    }

    print(
        f"{name}, {report['dtype']}, shape {shape} (N = {N / 1e6:.1f}M body parameters), batch {args.batch}, "
        f"length {args.length}, {args.n_items} items, LoRA r={args.lora_r}, G={args.generations}; "
        f"measured matmul rate {peak / 1e12:.2f} TFLOP/s"
    )
    print(f"{'step':<12}{'ms/step':>10}{'hist/s':>11}{'TFLOP/s':>10}{'MFU':>8}{'peak GiB':>10}")
    for step, row in results.items():
        mem = f"{row['peak_mem_gib']:.1f}" if row["peak_mem_gib"] is not None else "-"
        print(
            f"{step:<12}{row['ms_per_step']:>10.1f}{row['histories_per_s']:>11.1f}{row['tflops']:>10.3f}"
            f"{100 * row['mfu']:>7.1f}%{mem:>10}"
        )
    print(
        f"FLR SFT / bare train throughput: {ratios['sft_over_bare']:.2f} (target >= {TARGETS['sft_over_bare']}); "
        f"GRPO / SFT step time: {ratios['grpo_over_sft']:.2f} (target <= {TARGETS['grpo_over_sft']}); "
        f"FLR / bare inference throughput: {ratios['infer_over_bare']:.2f}"
    )
    if pipeline:
        print(
            f"pipeline {pipeline['dataset']}: build {pipeline['build_s']:.1f} s, loader alone "
            f"{pipeline['loader_histories_per_s']:.0f} hist/s, end to end "
            f"{pipeline['end_to_end_histories_per_s']:.0f} hist/s, device busy "
            f"{100 * pipeline['device_busy_fraction']:.0f}% of the wall, epoch of "
            f"{pipeline['train_histories_per_epoch']} histories ~ {pipeline['epoch_s_estimate']:.0f} s"
        )
    os.makedirs(args.out, exist_ok=True)
    tag = "cpu" if device.type == "cpu" else re.sub(r"\W+", "-", name).strip("-").lower()
    suffix = f"-{args.dataset}" if args.dataset else ""
    path = os.path.join(args.out, f"throughput-{tag}-{shape}{suffix}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
