"""Analysis of evaluation results: how much did tuning on spelling change each task?"""

from spelltransfer.analyse.transfer import TaskTransfer, TransferReport, compare_results

__all__ = ["TaskTransfer", "TransferReport", "compare_results"]
