"""Hyperparameter sweeps: a spec (YAML), an Optuna study on RDB storage, and a controller that
dispatches trials to trainer workers over gRPC.

``spec`` (what to search) -> ``study`` (Optuna sampler/pruner/storage) -> ``controller`` (dispatch,
retries, pruning, restarts) -> ``results`` (trials.csv, MLflow parent/child runs); ``local`` starts
a controller and workers on 127.0.0.1 for the embedded demo.
"""
