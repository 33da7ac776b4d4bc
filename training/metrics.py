"""FiFa-Bench metrics, numpy only: detection (accuracy, AUC, ACER), category accuracy,
mask IoU (mIoU and cumulative IoU), a METEOR score, and concept mentions of a text against
the flagged FICT concepts.

The paper reports ACER for detection, METEOR for the explanation texts (TOE, AGE) and mIoU
for masks (AGE, Loc) (../shared/references/fifa.md, section 6).  Every function scores plain
Python/numpy values, so the same code serves a test, a notebook and `training/evaluate.py`;
per-sample dicts are averaged with `aggregate`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fict.mentions import matcher_for
from fict.tree import ConceptTree, load_tree
from schemas.common import RleMask
from schemas.masks import decode_mask

__all__ = ["aggregate", "category_accuracy", "concept_mentions", "cumulative_iou", "detection_metrics",
           "mask_iou", "mean_iou", "meteor"]


# --------------------------------------------------------------------------- detection
def _roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Mann-Whitney: (sum of the positives' ranks - n1(n1+1)/2) / (n1·n0), tied scores
    sharing the mean of their ranks, which counts a tied (positive, negative) pair as half."""
    n1 = int(labels.sum())
    n0 = labels.size - n1
    if n1 == 0 or n0 == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct score's first copy
    ranks = (first + (counts + 1) / 2)[inverse]  # 1-based mean rank of each score's tie group
    return float((ranks[labels == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def detection_metrics(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray,
                      threshold: float = 0.5) -> dict[str, Any]:
    """Real/fake detection figures; label 1 = fake (the attack class), 0 = real.

    `scores` are the predicted probabilities (or any monotone score) of *fake*; a sample is
    classified fake when its score is >= `threshold` (hard 0/1 predictions work as scores).

    * `accuracy` = share of samples classified as labelled;
    * `auc` = ROC AUC of the scores, by the rank (Mann-Whitney U) formula
      AUC = (R1 - n1(n1+1)/2) / (n1·n0), R1 the sum of the fakes' ranks among all scores,
      tied scores taking the mean of their ranks (a tied fake/real pair counts half);
      None when only one class is present;
    * `apcer` = share of fakes classified real (attack presentation classification error
      rate), None without fakes;
    * `bpcer` = share of reals classified fake (bona fide presentation classification error
      rate), None without reals;
    * `acer` = (APCER + BPCER) / 2 (ISO/IEC 30107-3), None unless both are defined;
    * `n` = number of samples.

    Rates are fractions in [0, 1] (the paper prints percentages).  No samples: every figure
    is None and `n` is 0.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    y = y.astype(np.int64)
    n = int(y.size)
    if n == 0:
        return {"accuracy": None, "auc": None, "apcer": None, "bpcer": None, "acer": None, "n": 0}
    fake_pred = s >= threshold
    fakes, reals = y == 1, y == 0
    apcer = float(np.mean(~fake_pred[fakes])) if fakes.any() else None
    bpcer = float(np.mean(fake_pred[reals])) if reals.any() else None
    return {
        "accuracy": float(np.mean(fake_pred == fakes)),
        "auc": _roc_auc(s, y),
        "apcer": apcer,
        "bpcer": bpcer,
        "acer": (apcer + bpcer) / 2 if apcer is not None and bpcer is not None else None,
        "n": n,
    }


def category_accuracy(predicted: Sequence[Any], target: Sequence[Any]) -> float | None:
    """Share of positions where `predicted[i] == target[i]` (exact equality: normalise the
    answers, e.g. to forgery-category names, first); None for empty input."""
    if len(predicted) != len(target):
        raise ValueError(f"{len(predicted)} predictions but {len(target)} targets")
    if not target:
        return None
    return sum(p == t for p, t in zip(predicted, target, strict=True)) / len(target)


# --------------------------------------------------------------------------- masks
MaskLike = np.ndarray | Mapping | RleMask


def _as_mask(value: MaskLike) -> np.ndarray:
    """A bool (h, w) mask from an array or a COCO RLE (a dict or an `RleMask`)."""
    if isinstance(value, RleMask):
        return decode_mask({"size": value.size, "counts": value.counts})
    if isinstance(value, Mapping):
        return decode_mask(value)
    return np.asarray(value).astype(bool, copy=False)


def _intersection_union(pred: MaskLike, gt: MaskLike) -> tuple[int, int]:
    p, g = _as_mask(pred), _as_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: predicted {p.shape}, ground truth {g.shape}")
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def mask_iou(pred: MaskLike, gt: MaskLike) -> float:
    """|pred ∩ gt| / |pred ∪ gt| of two masks of one shape (bool arrays or COCO RLEs).

    Both empty: 1.0 (the prediction rightly finds nothing); exactly one empty: 0.0."""
    inter, union = _intersection_union(pred, gt)
    return inter / union if union else 1.0


def mean_iou(pairs: Iterable[tuple[MaskLike, MaskLike]]) -> float | None:
    """mIoU: the mean over (predicted, ground-truth) pairs of each pair's `mask_iou`, so every
    mask weighs the same whatever its size (LISA's "gIoU"; the paper's mIoU over masks).
    None for no pairs.

    The pairs are already matched: a caller scoring several [SEG] masks per answer pairs them
    first (GLaMM's GCG evaluation pairs greedily by highest IoU and averages per image)."""
    ious = [mask_iou(p, g) for p, g in pairs]
    return float(np.mean(ious)) if ious else None


def cumulative_iou(pairs: Iterable[tuple[MaskLike, MaskLike]]) -> float | None:
    """cIoU: the sum of the pairs' intersections over the sum of their unions, so large
    masks weigh more (LISA's / RefCOCO's "cIoU").  1.0 when every mask is empty, None for
    no pairs."""
    counts = [_intersection_union(p, g) for p, g in pairs]
    if not counts:
        return None
    inter, union = (sum(c) for c in zip(*counts, strict=True))
    return inter / union if union else 1.0


# --------------------------------------------------------------------------- METEOR
_WORD = re.compile(r"\w+")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _align(hyp: list[str], ref: list[str]) -> list[tuple[int, int]]:
    """Exact unigram alignment as (hypothesis index, reference index) pairs, sorted.

    Greedy against fragmentation: repeatedly take the longest run of identical words that
    is contiguous in both texts and unaligned in both (ties: earliest in the hypothesis,
    then in the reference).  Runs of one word are the last to go, so every word that can
    be matched is: the number of matches is the maximum, sum over words of
    min(count in hypothesis, count in reference)."""
    vocab: dict[str, int] = {}
    h = np.array([vocab.setdefault(w, len(vocab)) for w in hyp], dtype=np.int64)
    r = np.array([vocab.get(w, -1) for w in ref], dtype=np.int64)
    same = h[:, None] == r[None, :]
    pairs: list[tuple[int, int]] = []
    run = np.zeros((h.size + 1, r.size + 1), dtype=np.int64)
    while True:
        # run[i+1, j+1] = length of the common unaligned run ending at hyp[i], ref[j]
        for i in range(h.size):
            run[i + 1, 1:] = (run[i, :-1] + 1) * same[i]
        k = int(run.max())
        if k == 0:
            return sorted(pairs)
        end_h, end_r = np.unravel_index(int(run.argmax()), run.shape)  # first maximum, row-major
        start_h, start_r = end_h - k, end_r - k
        pairs += [(int(start_h) + t, int(start_r) + t) for t in range(k)]
        same[start_h:end_h, :] = False
        same[:, start_r:end_r] = False


def _chunks(alignment: list[tuple[int, int]]) -> int:
    """Maximal runs of aligned words adjacent, in the same order, in both texts."""
    return sum(1 for a, b in zip([(-2, -2), *alignment], alignment, strict=False)
               if (b[0], b[1]) != (a[0] + 1, a[1] + 1))


def _meteor_one(hyp: list[str], ref: list[str], alpha: float, beta: float, gamma: float) -> float:
    alignment = _align(hyp, ref) if hyp and ref else []
    matches = len(alignment)
    if matches == 0:
        return 0.0
    precision, recall = matches / len(hyp), matches / len(ref)
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    penalty = gamma * (_chunks(alignment) / matches) ** beta
    return fmean * (1 - penalty)


def meteor(candidate: str, references: Sequence[str], alpha: float = 0.9, beta: float = 3.0,
           gamma: float = 0.5) -> float:
    """METEOR with exact unigram matching only: the best score over `references`.

    Against one reference, with the texts lower-cased and split into word-character tokens
    (`\\w+`, punctuation dropped):

    * align identical unigrams one-to-one, greedily taking the longest common run first so
      the alignment has few chunks (see `_align`); m = number of aligned unigrams;
    * P = m / len(candidate), R = m / len(reference),
      Fmean = P·R / (alpha·P + (1 - alpha)·R)  (alpha = 0.9 weighs recall ~9x precision);
    * chunks = the fewest runs of aligned unigrams adjacent in both texts in the same order;
      penalty = gamma · (chunks / m) ** beta;
    * score = Fmean · (1 - penalty); 0.0 when nothing matches (or a text has no words).

    This is METEOR without its stemming and WordNet-synonym stages: Banerjee & Lavie (2005),
    "METEOR: An Automatic Metric for MT Evaluation with Improved Correlation with Human
    Judgments", with the parametrised form and defaults alpha = 0.9, beta = 3, gamma = 0.5 of
    Lavie & Agarwal (2007), "METEOR: An Automatic Metric for MT Evaluation with High Levels
    of Correlation with Human Judgments"; nltk's `meteor_score` uses the same formula, and
    with its stemmer and WordNet matching disabled scores the same exact matches (nltk
    aligns repeated words right to left rather than by longest run, so where a word repeats
    it may count more chunks).  Nothing is downloaded.  Scores are therefore lower than a
    full METEOR (e.g. pycocoevalcap's Meteor 1.5 jar), which also credits stems, synonyms
    and paraphrases: compare numbers only with numbers from this function.  A perfect match
    of n words scores 1 - gamma·(1/n)**beta, just under 1.
    """
    if not references:
        raise ValueError("meteor needs at least one reference")
    hyp = _tokens(candidate)
    return max(_meteor_one(hyp, _tokens(ref), alpha, beta, gamma) for ref in references)


# --------------------------------------------------------------------------- concepts
def concept_mentions(text: str, flagged: Iterable[str], tree: ConceptTree | None = None) -> dict[str, Any]:
    """The FICT concepts a text names, scored against the concepts flagged as altered.

    `named` are the node ids that `fict.mentions` finds in the text (names, aliases,
    `[[node_id]]` references), unique, in order of first mention.  `flagged` may be the
    analysis's full flagged set (upward-closed: the pipeline flags every ancestor of a
    flagged node) or only the most specific flagged nodes (a shard's grounded concepts);
    both give the same figures.  The rules:

    * A named concept is **correct** when it is a flagged node or an ancestor of one:
      "the lips are blurred" is true when only the left upper lip was altered, since the
      lips contain it.  A *descendant* of a flagged node that is not flagged itself is not
      correct: the analysis found no artifact in it ("the upper lip" when only "lips" is
      flagged claims more than was measured).  Ids the tree does not know are never correct.
      On an upward-closed `flagged`, the incorrect names are exactly the pipeline's
      hallucinated concepts (`ConceptMatcher.hallucinated`).
    * The **targets** are the most specific flagged nodes: those with no flagged descendant
      (the grounded leaves the describer's texts name).  A target is **recalled** only when
      the text names it exactly.  Naming an ancestor earns precision but not recall: "the
      face looks fake" is true of every face artifact but says nowhere where it is, and
      crediting ancestors would give that sentence full recall.  Naming a descendant does
      not recall it either (it is not correct, see above).

    Returns `named`, `correct`, `incorrect` (named but not correct), `targets`, `recalled`
    (id lists in mention / tree order) and
    `precision` = len(correct) / len(named) (None when nothing is named) and
    `recall` = len(recalled) / len(targets) (None when nothing is flagged).
    Raises ValueError for a flagged id the tree does not know.
    """
    tree = tree or load_tree()
    flagged_ids = set(flagged)
    unknown = sorted(flagged_ids - tree.by_id.keys())
    if unknown:
        raise ValueError(f"flagged ids not in the concept tree: {', '.join(unknown)}")
    # Every flagged node with its ancestors; the strict ancestors alone rule out targets.
    supported: set[str] = set()
    above: set[str] = set()
    for node_id in flagged_ids:
        chain = [n.id for n in tree.path(node_id)]
        supported.update(chain)
        above.update(chain[:-1])
    targets = sorted(flagged_ids - above, key=tree.node_index.__getitem__)

    named = matcher_for(tree).mentioned(text)
    correct = [n for n in named if n in supported]
    named_set = set(named)
    recalled = [t for t in targets if t in named_set]
    return {
        "named": named,
        "correct": correct,
        "incorrect": [n for n in named if n not in supported],
        "targets": targets,
        "recalled": recalled,
        "precision": len(correct) / len(named) if named else None,
        "recall": len(recalled) / len(targets) if targets else None,
    }


# --------------------------------------------------------------------------- aggregation
def aggregate(rows: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """Mean of each numeric field over per-sample dicts (keys in first-seen order).

    None values and missing keys are left out of a field's mean (a sample with no flagged
    concept has no recall and does not count as 0); a field that is None everywhere maps
    to None.  Booleans count as 0/1; non-numeric values (lists, strings) are skipped, and a
    field with no numeric value at all is left out."""
    values: dict[str, list[float]] = {}
    keys: dict[str, None] = {}  # fields with a number or None somewhere, in first-seen order
    other: set[str] = set()  # fields with a non-numeric value somewhere
    for row in rows:
        for key, value in row.items():
            if value is None:
                keys.setdefault(key)
            elif isinstance(value, (bool, int, float, np.integer, np.floating, np.bool_)):
                keys.setdefault(key)
                values.setdefault(key, []).append(float(value))
            else:
                other.add(key)
    out: dict[str, float | None] = {}
    for key in keys:
        nums = values.get(key)
        if nums:
            out[key] = math.fsum(nums) / len(nums)
        elif key not in other:
            out[key] = None
    return out
