"""Packed multi-trial training (CPU, tiny model): a packed trial is the same trial trained alone.

Tolerance: fp32 on CPU, per-step losses within 1e-4 absolute (observed ~1e-7: only the order
of floating-point sums differs between packed and alone).
"""

from __future__ import annotations

import pytest
import torch

from spelltransfer.errors import ConfigError
from spelltransfer.train.packed import PackedTrainer, TrialSpec, generate_for_trials, sample_seed_grid

LOSS_TOL = 1e-4
WORDS = ["garden", "cat", "strawberry", "apple", "moon", "river", "pencil", "orange", "table", "window",
         "yellow", "dog", "house", "music", "tiger", "cloud"]


def records(n: int = 24) -> list[dict]:
    out = []
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        sep = "-" if i % 2 else " "
        out.append({"task": "spelling", "word": word, "prompt": f"Spell {word} with '{sep}' between letters.",
                    "answer": sep.join(word), "template_id": "t", "split": "train"})
    return out


TRIALS = [
    TrialSpec(trial_id="a", seed=11, r=4, alpha=8, lr=1e-3, batch_size=4, grad_accum=1, max_steps=5),
    TrialSpec(trial_id="b", seed=22, r=8, alpha=32, lr=5e-3, batch_size=8, grad_accum=2, max_steps=4,
              weight_decay=0.01, max_grad_norm=0.05),
    TrialSpec(trial_id="c", seed=33, r=16, alpha=16, lr=2e-3, batch_size=6, grad_accum=3, max_steps=5, max_grad_norm=None),
]


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tokenizer


def train_packed(path, trials, layout="varlen", max_chunk_tokens=4096):
    model, tokenizer = load(path)
    trainer = PackedTrainer(model, tokenizer, records(), trials, layout=layout, max_chunk_tokens=max_chunk_tokens,
                            base_model_path=path)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def packed(tiny_model_path):
    return train_packed(tiny_model_path, TRIALS)


def test_init_matches_peft(tiny_model_path):
    """A packed trial starts from exactly the A matrices PEFT draws after torch.manual_seed(seed)."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load(tiny_model_path)
    trainer = PackedTrainer(model, tokenizer, records(), TRIALS[:2], base_model_path=tiny_model_path)
    for k, trial in enumerate(TRIALS[:2]):
        base, _ = load(tiny_model_path)
        torch.manual_seed(trial.seed)
        peft_model = get_peft_model(base, LoraConfig(r=trial.r, lora_alpha=trial.alpha, target_modules=trainer.target_modules,
                                                     lora_dropout=0.0, task_type="CAUSAL_LM"))
        state = trainer.weights.trial_state(k)
        for name, module in peft_model.base_model.model.named_modules():
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                assert torch.equal(module.lora_A["default"].weight, state[f"{name}.lora_A"]), name
                assert torch.count_nonzero(state[f"{name}.lora_B"]) == 0


@pytest.mark.parametrize("layout", ["varlen", "padded"])
def test_packed_trial_equals_alone(tiny_model_path, packed, layout):
    """Each trial's loss at every step, packed with others, equals the trial trained alone."""
    # varlen (the GPU layout) for every trial; padded for the trial that exercises the most
    for k, trial in enumerate(TRIALS) if layout == "varlen" else [(1, TRIALS[1])]:
        alone = train_packed(tiny_model_path, [trial], layout=layout, max_chunk_tokens=200)
        assert len(packed.history.losses[k]) == trial.max_steps
        got, want = packed.history.losses[k], alone.history.losses[0]
        assert max(abs(a - b) for a, b in zip(got, want)) < LOSS_TOL, (trial.trial_id, got, want)
        for key, value in alone.weights.trial_state(0).items():
            torch.testing.assert_close(packed.weights.trial_state(k)[key], value, atol=1e-5, rtol=1e-4)


def test_losses_fall_and_padding_stays_zero(packed):
    assert packed.weights.padding_is_zero()
    for k, losses in enumerate(packed.history.losses):
        assert losses[-1] < losses[0], (k, losses)


def test_alone_matches_plain_peft_loop(tiny_model_path):
    """A trial alone in the packed trainer reproduces the single-trial loop (PEFT, AdamW, LambdaLR, clipping)."""
    from peft import LoraConfig, get_peft_model
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from spelltransfer.models import PromptFormat
    from spelltransfer.train.dataset import BatchOrder, tokenize_example
    from spelltransfer.train.optim import OptimizerConfig, SchedulerConfig, build_optimizer, build_scheduler

    trial = TRIALS[1]  # grad accumulation, weight decay and clipping all active
    packed = train_packed(tiny_model_path, [trial])
    model, tokenizer = load(tiny_model_path)
    torch.manual_seed(trial.seed)
    model = get_peft_model(model, LoraConfig(r=trial.r, lora_alpha=trial.alpha, lora_dropout=0.0,
                                             target_modules=packed.target_modules, task_type="CAUSAL_LM"))
    fmt = PromptFormat.from_tokenizer(tokenizer)
    examples = [tokenize_example(r, tokenizer, fmt, 128) for r in records()]
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    order = BatchOrder(len(examples), trial.batch_size, trial.seed)
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(lr=trial.lr, weight_decay=trial.weight_decay,
                                                                    max_grad_norm=trial.max_grad_norm))
    scheduler = build_scheduler(optimizer, SchedulerConfig(), trial.max_steps)
    losses = []
    for step in range(trial.max_steps):
        indices = order.batch(step)
        step_loss = 0.0
        for start in range(0, len(indices), trial.micro_batch):
            chunk = [examples[i] for i in indices[start:start + trial.micro_batch]]
            batch = collator([{"input_ids": e.input_ids, "labels": e.labels} for e in chunk])
            loss = model(**batch).loss / trial.grad_accum
            loss.backward()
            step_loss += float(loss)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], trial.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
    got = packed.history.losses[0]
    assert max(abs(a - b) for a, b in zip(got, losses)) < LOSS_TOL, (got, losses)


def test_exported_adapter_loads_in_peft_and_reproduces_logits(tiny_model_path, packed, tmp_path):
    from peft import PeftModel

    prompts = ["Spell cat.", "Spell moon please."]
    enc = packed.tokenizer(prompts, return_tensors="pt", padding=True)
    from spelltransfer.train.packed import attention

    attention.set_attention(packed.model, "sdpa")
    packed.model.eval()
    for k, trial in enumerate(TRIALS):
        folder = packed.export(k, tmp_path / trial.trial_id)
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        base, _ = load(tiny_model_path)
        peft_model = PeftModel.from_pretrained(base, str(folder)).eval()
        assert peft_model.peft_config["default"].r == trial.r
        counts = [0] * len(TRIALS)
        counts[k] = len(prompts)
        packed.routing.set_row_counts(counts)
        with torch.no_grad():
            want = peft_model(**enc).logits
            got = packed.model(**enc).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_generation_for_all_trials_matches_peft(tiny_model_path, packed, tmp_path):
    from peft import PeftModel

    from spelltransfer.models import PromptFormat

    fmt = PromptFormat.from_tokenizer(packed.tokenizer)
    prompts = [fmt.prompt(q) for q in ["Spell cat.", "Spell strawberry.", "Spell a."]]
    outs = generate_for_trials(packed.model, packed.tokenizer, packed.routing, [0, 2], prompts, max_new_tokens=6)
    for k in (0, 2):
        base, tokenizer = load(tiny_model_path)
        peft_model = PeftModel.from_pretrained(base, str(packed.export(k, tmp_path / f"g{k}"))).eval()
        tokenizer.padding_side = "left"
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = peft_model.generate(**enc, max_new_tokens=6, do_sample=False, eos_token_id=fmt.stop_token_ids(),
                                      pad_token_id=tokenizer.pad_token_id)
        want = [t.strip() for t in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
        assert outs[k] == want


def test_bad_trials_are_rejected(tiny_model_path):
    with pytest.raises(ValueError, match="divisible by grad_accum"):
        TrialSpec(trial_id="x", batch_size=6, grad_accum=4)
    model, tokenizer = load(tiny_model_path)
    with pytest.raises(ConfigError, match="unique"):
        PackedTrainer(model, tokenizer, records(), [TRIALS[0], TRIALS[0]])
    with pytest.raises(ConfigError, match="layout"):
        PackedTrainer(model, tokenizer, records(), [TRIALS[0]], layout="ragged")


def test_seed_grid_sample_is_valid_and_deterministic():
    a, b = sample_seed_grid(64, seed=3), sample_seed_grid(64, seed=3)
    assert a == b and len({t.trial_id for t in a}) == 64
    assert all(4 <= t.r <= 32 and 1e-4 <= t.lr <= 1e-3 and t.max_steps <= 1000 for t in a)
    assert {t.grad_accum for t in a} <= {1, 2, 4, 8}
