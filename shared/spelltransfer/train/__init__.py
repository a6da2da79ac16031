"""LoRA training: validated configs, hf/unsloth backends, atomic checkpoints with resume, early stopping.

    from spelltransfer.train import load_training_config, run_training
    config = load_training_config("configs/training/config.yaml", ["training.max_steps=100"])
    result = run_training(config, "checkpoints/demo/run1", resume=False, on_event=print)
    result.adapter_dir  # a PEFT adapter; result.metrics_path: final/best metrics, stop step and reason
"""

from spelltransfer.train.config import RunConfig, TrainingConfig, load_training_config, validate_config
from spelltransfer.train.trainer import TrainResult, default_output_dir, run_training

__all__ = ["RunConfig", "TrainResult", "TrainingConfig", "default_output_dir", "load_training_config", "run_training", "validate_config"]
