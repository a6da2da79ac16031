"""CPU training speed of the bundled SmolLM2-135M with LoRA: fp32 vs bf16 autocast, and the
output head over every position (``model(**batch).loss``) vs over answer positions only
(``spelltransfer.train.loss.answer_only_loss``, what the hf backend trains with).

    .venv/bin/python benchmarks/train_cpu_speed.py [--steps 6] [--batch 16] [--threads 2]

Times the real training step of ``spelltransfer.train`` (same tokenization, TRL padding
collator, loss on the answer only) on spelling examples; the first step is warm-up and not
counted. Prints s/step for each variant and its speed-up over the baseline (fp32, full logits). Numbers depend on how busy
the machine is: compare them only within one invocation.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--random-weights-tokenizer", type=str, default=None,
                        help="Time a random-weight Llama of SmolLM2-135M's exact shape around this tokenizer folder "
                             "(for machines without the bundled model; speed does not depend on the weights).")
    args = parser.parse_args()

    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from spelltransfer.data import make_examples
    from spelltransfer.models import PromptFormat
    from spelltransfer.train.backends.hf import HFBackend
    from spelltransfer.train.dataset import tokenize_example
    from spelltransfer.train.model_config import LoraSettings, ModelConfig
    from spelltransfer.train.optim import OptimizerConfig, build_optimizer

    torch.set_num_threads(args.threads)
    model_name = "smollm2-135m"
    if args.random_weights_tokenizer:
        import importlib.util
        import tempfile
        from pathlib import Path

        spec = importlib.util.spec_from_file_location("gpu_bench", Path(__file__).with_name("train_backends_gpu.py"))
        gpu_bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gpu_bench)
        model_name = str(gpu_bench.build_model(Path(args.random_weights_tokenizer), Path(tempfile.mkdtemp()) / "model"))
    loaded = HFBackend().load(ModelConfig(name=model_name, dtype="float32", lora=LoraSettings(r=args.rank, alpha=2 * args.rank)), seed=0)
    model, tokenizer = loaded.model, loaded.tokenizer
    fmt = PromptFormat.from_tokenizer(tokenizer)
    words = ["garden", "planet", "candle", "yellow", "silver", "rocket", "winter", "castle", "marble", "bottle",
             "pencil", "butter", "forest", "dragon", "orange", "guitar"]
    examples = [tokenize_example(e.to_dict(), tokenizer, fmt, 128) for e in make_examples("spelling", words, args.batch, 0)]
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    batch = collator([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    optimizer = build_optimizer(model.parameters(), OptimizerConfig())
    print(f"batch {args.batch} x {batch['input_ids'].shape[1]} tokens, LoRA r{args.rank}, {args.threads} threads", flush=True)
    from spelltransfer.train.loss import answer_only_loss, full_logits_loss

    results = {}
    variants = {"fp32 full-logits": ("fp32", full_logits_loss), "fp32 answer-only": ("fp32", answer_only_loss),
                 "bf16 full-logits": ("bf16", full_logits_loss), "bf16 answer-only": ("bf16", answer_only_loss)}
    for name, (precision, loss_fn) in variants.items():
        times = []
        for _ in range(args.steps + 1):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - started)
        results[name] = statistics.median(times[1:])
        baseline = results["fp32 full-logits"]
        print(f"{name}: {results[name]:.2f} s/step (median of {args.steps}; all: {', '.join(f'{t:.2f}' for t in times)}) "
              f"-> {baseline / results[name]:.2f}x vs fp32 full-logits", flush=True)


if __name__ == "__main__":
    main()
