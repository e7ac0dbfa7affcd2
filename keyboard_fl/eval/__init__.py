"""Evaluation: n-gram baseline, top-k accuracy, perplexity, keystroke savings (DESIGN.md §3)."""

from keyboard_fl.eval.ksr import keystroke_savings, type_message
from keyboard_fl.eval.metrics import (
    TopKCounter,
    UserCounts,
    evaluate_topk,
    perplexity,
    summarize_topk,
    topk_hits,
)
from keyboard_fl.eval.ngram import KneserNeyTrigram, evaluate_ngram, modified_kn_discounts

__all__ = [
    "KneserNeyTrigram",
    "TopKCounter",
    "UserCounts",
    "evaluate_ngram",
    "evaluate_topk",
    "keystroke_savings",
    "modified_kn_discounts",
    "perplexity",
    "summarize_topk",
    "topk_hits",
    "type_message",
]
