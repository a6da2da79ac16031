"""Generation-based evaluation: engines, answer extraction, interval maths, the evaluator.

    from spelltransfer.evaluate import evaluate_model
    result = evaluate_model("smollm2-135m", examples, limit=100, out="results/base.json")
    result.tasks["count"].accuracy, result.tasks["count"].ci95
"""

from spelltransfer.evaluate.answers import Extraction, extract
from spelltransfer.evaluate.compare import Comparison, compare_results
from spelltransfer.evaluate.evaluator import EvalResult, Prediction, TaskMetrics, evaluate_model
from spelltransfer.evaluate.generation import GenerationEngine, HFGenerationEngine, OpenAICompletionsEngine
from spelltransfer.evaluate.stats import PairedComparison, compare_paired, wilson_interval

__all__ = [
    "Comparison", "EvalResult", "Extraction", "GenerationEngine", "HFGenerationEngine", "OpenAICompletionsEngine",
    "PairedComparison", "Prediction", "TaskMetrics", "compare_paired", "compare_results", "evaluate_model", "extract", "wilson_interval",
]
