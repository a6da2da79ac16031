"""spelltransfer: does LoRA-tuning a small LM on spelling transfer to letter position and counting?

Data flow: ``data`` (task sets) -> ``models`` (base model, prompts) -> ``train`` (LoRA)
-> ``evaluate`` (greedy generation, exact match) -> ``analyse`` (gains, intervals, plots);
``services/`` are thin gRPC/HTTP layers over these.
"""

__version__ = "0.1.0"
