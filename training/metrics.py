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


# --- FaceInstruct (Face-LLaVA) ---
# Face-LLaVA is scored by generating an answer text and parsing the label it states
# (`parse_answer`), then comparing the parsed labels with the shard rows' `label` objects
# (`face_metrics`): expression UAR and WAR, AU F1 per AU and its mean, attribute mean
# accuracy, age MAE in years, deepfake accuracy (Face-LLaVA, section 5.2.1).  The label
# shapes are the `label` column's (README, "The FaceInstruct pipeline"):
# {"expression": <official class name>}, {"aus": [active AU numbers]}, {"attributes":
# [positive CelebA names]}, {"age": <int>}, {"fake": bool, "method": str | None}.
# The vocabularies are the pipeline's own (`schemas.faceinstruct`).
import json

from schemas.faceinstruct import AU_NAMES, CELEBA_ATTRIBUTES, EMOTION_OF
from schemas.faceinstruct import TASKS as FACE_TASKS

__all__ += ["FACE_TASKS", "f1_per_label", "face_metrics", "mean_absolute_error", "parse_answer", "uar",
            "war"]

# Both a parsed answer and a reference are compared as emotion nouns (`EMOTION_OF`), so
# RAF-DB's "Anger" and DFEW's "Angry" are one class, as are the describer's "happiness" and
# DFEW's "Happy".

# --------------------------------------------------------------------------- metric blocks


def _check_lengths(pred: Sequence[Any], true: Sequence[Any]) -> None:
    if len(pred) != len(true):
        raise ValueError(f"{len(pred)} predictions but {len(true)} references")


def war(pred: Sequence[Any], true: Sequence[Any]) -> float | None:
    """Weighted average recall = overall accuracy: the share of positions with
    `pred[i] == true[i]` (each class's recall weighted by its share of the references).
    A prediction of None (unparsed) is never right.  None for no samples."""
    _check_lengths(pred, true)
    if not true:
        return None
    return sum(p is not None and p == t for p, t in zip(pred, true, strict=True)) / len(true)


def uar(pred: Sequence[Any], true: Sequence[Any]) -> float | None:
    """Unweighted average recall: the mean, over the classes present in `true`, of each
    class's recall (share of its samples predicted as it), so every class weighs the same
    however many samples it has.  A predicted class absent from `true` only lowers the
    recall of the class it was mistaken for; None (unparsed) is never right.  None for no
    samples."""
    _check_lengths(pred, true)
    if not true:
        return None
    hits: dict[Any, int] = {}
    totals: dict[Any, int] = {}
    for p, t in zip(pred, true, strict=True):
        totals[t] = totals.get(t, 0) + 1
        hits[t] = hits.get(t, 0) + (p is not None and p == t)
    return math.fsum(hits[c] / totals[c] for c in totals) / len(totals)


def f1_per_label(pred_sets: Sequence[Iterable[Any]], true_sets: Sequence[Iterable[Any]],
                 labels: Iterable[Any]) -> dict[Any, float | None]:
    """Binary F1 of each label over samples, each sample a set of labels present:
    F1 = 2·TP / (2·TP + FP + FN) (the harmonic mean of precision and recall, 0 when either
    is 0), counting TP, FP, FN over the samples.  A label that is neither present nor
    predicted in any sample has no F1 (None).  Labels outside `labels` are ignored."""
    _check_lengths(pred_sets, true_sets)
    preds = [set(p) for p in pred_sets]
    trues = [set(t) for t in true_sets]
    out: dict[Any, float | None] = {}
    for label in labels:
        tp = sum(label in p and label in t for p, t in zip(preds, trues, strict=True))
        fp = sum(label in p and label not in t for p, t in zip(preds, trues, strict=True))
        fn = sum(label not in p and label in t for p, t in zip(preds, trues, strict=True))
        out[label] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return out


def mean_absolute_error(pred: Sequence[float], true: Sequence[float]) -> float | None:
    """MAE = mean of |pred[i] - true[i]| (in the values' unit: years for ages); None for no
    samples."""
    _check_lengths(pred, true)
    if not true:
        return None
    return math.fsum(abs(float(p) - float(t)) for p, t in zip(pred, true, strict=True)) / len(true)


# --------------------------------------------------------------------------- answer parsing
# Negation: a mention is negated when one of the (at most) 4 words before it, within its
# clause, is a negator ("does not show AU12", "no sign of manipulation", "neither ... nor",
# "without glasses", "isn't", "except AU4"), or when its clause goes on "is not" / "is
# absent" ("AU4 (Brow Lowerer) is not active").  A clause ends at . , ; : ! ? ) or at
# "but", "while", "whereas", "although", "though", "however", "yet".  "no doubt", "no
# question", "not only" and the attribute "no beard" negate nothing.
_NEGATOR = re.compile(r"\b(?:no|not|never|without|neither|nor|none|cannot|lacks?|lacking|except|absence"
                      r"|free of|rather than|instead of)\b|n't\b")
_NOT_A_NEGATOR = re.compile(r"\b(?:no|without) (?:doubt|question)\b|\bnot only\b|\bno beard\b")
_CLAUSE_BREAK = re.compile(r"[.,;:!?)\[\]\n]|\b(?:but|while|whereas|although|though|however|yet)\b")
_NEGATED_AFTER = re.compile(
    r"^\s*\)?\s*(?:\([^)]*\)\s*)?(?:(?:is|are|was|were|appears?|seems?|remains?)(?:\s+\w+ly)?\s+(?:not|absent|inactive)\b"
    r"|(?:isn't|aren't|wasn't|weren't)\b|(?:absent|inactive)\b)")
_WINDOW_WORDS = 4


def _normalise(text: str) -> str:
    """Lower case, typographic apostrophes and dashes plain, underscores as spaces (so
    "No_Beard" reads as "no beard"); the same length as `text`, so offsets carry over."""
    return text.lower().translate(str.maketrans({"\u2019": "'", "\u2018": "'", "\u2013": "-", "\u2014": "-",
                                                  "_": " "}))


def _negated(low: str, start: int, end: int) -> bool:
    """Whether the mention `low[start:end]` of a normalised text is negated (rule above)."""
    clause = _CLAUSE_BREAK.split(low[:start])[-1]
    clause = _NOT_A_NEGATOR.sub(" ", clause)
    window = " ".join(re.findall(r"[\w']+", clause)[-_WINDOW_WORDS:])
    if _NEGATOR.search(window):
        return True
    return _NEGATED_AFTER.match(low[end:]) is not None


def _words(*alternatives: str) -> re.Pattern:
    """One pattern for whole-word alternatives (regex syntax allowed inside each)."""
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")


def _phrase(name: str) -> str:
    """Regex for a multi-word name, its words apart by spaces, hyphens or nothing."""
    return r"[\s-]*".join(re.escape(w) for w in name.lower().replace("_", " ").split())


# expression: emotion noun -> the words that state it.
_EXPRESSION_WORDS: dict[str, re.Pattern] = {
    "happiness": _words("happy", "happiness", "joy", "joyful", "joyous", "cheerful"),
    "sadness": _words("sad", "sadness", "sorrow", "sorrowful", "unhappy", "unhappiness"),
    "neutral": _words("neutral", "neutrality", "expressionless"),
    "anger": _words("anger", "angry", "angered", "furious", "fury", "rage"),
    "surprise": _words("surprise", "surprised", "astonished", "astonishment"),
    "disgust": _words("disgust", "disgusted"),
    "fear": _words("fear", "fearful", "afraid", "scared", "frightened", "terrified"),
    "contempt": _words("contempt", "contemptuous", "disdain"),
    "anxiety": _words("anxiety", "anxious"),
    "helplessness": _words("helpless", "helplessness"),
    "disappointment": _words("disappointment", "disappointed"),
}
# au: "AU12", "AU 12", "au-12", "action unit 12"; "AUs 6, 12 and 25"; the FACS names.
_AU_NUMBER = re.compile(r"\b(?:au|action unit)\s*-?\s*(\d{1,2})\b")
_AU_LIST = re.compile(r"\b(?:aus|action units)\s*(\d{1,2}(?:\s*(?:,|and|&|\+|or)\s*\d{1,2})*)\b")
_AU_NAME: dict[int, re.Pattern] = {au: re.compile(r"\b" + _phrase(name) + r"\b")
                                   for au, name in AU_NAMES.items()}
_NO_AU = re.compile(r"\b(?:no|zero|none of the)\s+(?:\w+\s+){0,2}(?:action units?|aus?)\b"
                    r"|\b(?:action units?|aus?)\W{0,3}(?:none|nothing)\b")
# attribute: name -> (words stating it present, words stating it absent).
_ATTRIBUTE_EXTRA: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "5_o_Clock_Shadow": (("five o clock shadow", "5 o'clock shadow", "five o'clock shadow", "stubble"), ()),
    "Arched_Eyebrows": (("arched brows",), ()),
    "Bags_Under_Eyes": (("bags under the eyes",), ()),
    "Bangs": (("fringe",), ()),
    "Big_Lips": (("large lips", "full lips"), ()),
    "Big_Nose": (("large nose",), ()),
    "Black_Hair": (("black haired",), ()),
    "Blond_Hair": (("blonde hair", "blond haired", "blonde haired"), ()),
    "Blurry": (("blurred",), ()),
    "Brown_Hair": (("brown haired",), ()),
    "Bushy_Eyebrows": (("bushy brows",), ()),
    "Eyeglasses": (("glasses", "sunglasses", "spectacles"), ()),
    "Gray_Hair": (("grey hair", "gray haired", "grey haired"), ()),
    "Heavy_Makeup": (("heavy make up",), ()),
    "Male": (("man", "he", "him", "his"), ("female", "woman", "girl", "lady", "she", "her", "hers")),
    "Mouth_Slightly_Open": (("mouth is slightly open",), ()),
    "Mustache": (("moustache",), ()),
    "No_Beard": (("clean shaven", "beardless"), ("(?<!no )beard",)),
    "Pale_Skin": (("pale skinned",), ()),
    "Pointy_Nose": (("pointed nose",), ()),
    "Smiling": (("smile", "smiles"), ()),
    "Wearing_Earrings": (("earrings", "earring"), ()),
    "Wearing_Hat": (("hat",), ()),
    "Wearing_Lipstick": (("lipstick",), ()),
    "Wearing_Necklace": (("necklace",), ()),
    "Wearing_Necktie": (("necktie", "neck tie"), ()),
    "Young": (("youthful",), ("elderly",)),
}


def _attribute_patterns(name: str) -> tuple[re.Pattern, re.Pattern | None]:
    present, absent = _ATTRIBUTE_EXTRA.get(name, ((), ()))
    words = [_phrase(name)] + [w if "(?" in w else _phrase(w) for w in present]
    no_words = [w if "(?" in w else _phrase(w) for w in absent]
    return _words(*words), (_words(*no_words) if no_words else None)


_ATTRIBUTE_WORDS: dict[str, tuple[re.Pattern, re.Pattern | None]] = {
    a: _attribute_patterns(a) for a in CELEBA_ATTRIBUTES}
_NO_ATTRIBUTE = re.compile(r"\bnone of the\s+(?:[\w-]+\s+){0,3}(?:attributes|40)\b"
                           r"|\bno\s+(?:[\w-]+\s+){0,2}attributes\b|\battributes\W{0,3}none\b")
# age: "30-35" / "30 to 35" / "between 30 and 35" (midpoint), "(early|mid|late) 30s", a number.
_AGE = re.compile(
    r"\bbetween\s+(?P<b1>\d{1,3}(?:\.\d+)?)\s+and\s+(?P<b2>\d{1,3}(?:\.\d+)?)\b"
    r"|\b(?P<r1>\d{1,3}(?:\.\d+)?)\s*(?:-|to)\s*(?P<r2>\d{1,3}(?:\.\d+)?)\b(?!\s*%)"
    r"|\b(?:(?P<part>early|mid|late)[\s-]*)?(?P<decade>\d?\d0)'?s\b"
    r"|\b(?P<n>\d{1,3}(?:\.\d+)?)\b(?!\s*%)")
_DECADE_OFFSET = {"early": 2, None: 5, "mid": 5, "late": 8}
AGE_RANGE = (0.0, 120.0)
# deepfake: words that state fake, and words that state real.
_FAKE_WORDS = _words(r"fake[ds]?", r"deep\s?-?fake[ds]?", r"manipulat\w*", "forged", "forgery", "forgeries",
                     "synthetic", r"synthesi[sz]ed", r"tamper\w*", "doctored", "altered", r"face\s?-?swap\w*",
                     r"spoof\w*", "counterfeit", r"ai\s?-?generated")
_REAL_WORDS = _words("real", "authentic", "genuine", "unaltered", "unmanipulated", "untampered", "pristine",
                     "bona fide")


def _expression(low: str) -> dict[str, Any] | None:
    """The emotion of the first emotion word that is not negated."""
    best: tuple[int, str] | None = None
    for emotion, pattern in _EXPRESSION_WORDS.items():
        for m in pattern.finditer(low):
            if best is not None and m.start() >= best[0]:
                break
            if not _negated(low, m.start(), m.end()):
                best = (m.start(), emotion)
                break
    return {"expression": best[1]} if best else None


def _au_mentions(low: str) -> list[tuple[int, int, int]]:
    """(AU, start, end) of every AU named by number, number list or FACS name."""
    found = [(int(m.group(1)), m.start(), m.end()) for m in _AU_NUMBER.finditer(low)]
    for m in _AU_LIST.finditer(low):
        found += [(int(n), m.start(), m.end()) for n in re.findall(r"\d{1,2}", m.group(1))]
    for au, pattern in _AU_NAME.items():
        found += [(au, m.start(), m.end()) for m in pattern.finditer(low)]
    return [f for f in found if f[0] >= 1]


def _aus(low: str) -> dict[str, Any] | None:
    """Active AUs: those with a mention that is not negated; [] when every mention is
    negated or the text says no AU is active; None when it names no AU at all."""
    mentions = _au_mentions(low)
    if not mentions and not _NO_AU.search(low):
        return None
    active = {au for au, start, end in mentions if not _negated(low, start, end)}
    return {"aus": sorted(active)}


def _attributes(low: str) -> dict[str, Any] | None:
    """Positive CelebA attributes: each attribute's first mention decides (see
    `parse_answer`); None when no attribute is mentioned and none is denied wholesale."""
    positive: list[str] = []
    stated = False
    for name, (present, absent) in _ATTRIBUTE_WORDS.items():
        hits = [(m.start(), m.end(), True) for m in present.finditer(low)]
        if absent is not None:
            hits += [(m.start(), m.end(), False) for m in absent.finditer(low)]
        if not hits:
            continue
        stated = True
        start, end, says_present = min(hits)
        if says_present != _negated(low, start, end):
            positive.append(name)
    if not stated and not _NO_ATTRIBUTE.search(low):
        return None
    return {"attributes": positive}


def _age(low: str) -> dict[str, Any] | None:
    """The first age-like expression whose value lies in `AGE_RANGE`."""
    lo, hi = AGE_RANGE
    for m in _AGE.finditer(low):
        if m.group("b1") is not None:
            value = (float(m.group("b1")) + float(m.group("b2"))) / 2
        elif m.group("r1") is not None:
            a, b = float(m.group("r1")), float(m.group("r2"))
            value = (a + b) / 2 if a <= b else a  # "30-25" is no range: its first number
        elif m.group("decade") is not None:
            value = int(m.group("decade")) + _DECADE_OFFSET[m.group("part")]
        else:
            value = float(m.group("n"))
        if lo <= value <= hi:
            return {"age": int(value) if float(value).is_integer() else value}
    return None


def _deepfake(low: str) -> dict[str, Any] | None:
    """The first fake or real word decides, flipped when negated."""
    hits = [(m.start(), m.end(), True) for m in _FAKE_WORDS.finditer(low)]
    hits += [(m.start(), m.end(), False) for m in _REAL_WORDS.finditer(low)]
    if not hits:
        return None
    start, end, says_fake = min(hits)
    return {"fake": says_fake != _negated(low, start, end)}


_PARSERS = {"expression": _expression, "au": _aus, "attribute": _attributes, "age": _age,
            "deepfake": _deepfake}


def parse_answer(task: str, text: str, reference: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The label a generated answer states, shaped as the task's `label` JSON (only the
    keys a metric needs), or None when the text states none.

    Matching is case-insensitive on whole words; typographic apostrophes and dashes count
    as plain ones and underscores as spaces.  A mention is **negated** when one of the 4
    words before it in its clause is a negator (no, not, never, without, neither, nor,
    none, cannot, lack(s/ing), except, absence, free of, rather than, instead of, any
    "...n't"), or when the clause goes on "is/are/was/were/seems (...ly) not|absent|
    inactive" ("AU4 (Brow Lowerer) is not active"); clauses end at . , ; : ! ? ) and at
    but, while, whereas, although, though, however, yet; "no doubt", "no question", "not
    only" and "no beard" negate nothing.  The rules:

    * **expression** -> `{"expression": <emotion noun>}`: the first word naming an emotion
      that is not negated, as its emotion noun (`EMOTION_OF`'s values: happiness, sadness,
      neutral, anger, surprise, disgust, fear, contempt, anxiety, helplessness,
      disappointment).  Each has its adjective and a few synonyms (happy, joyful; sad,
      unhappy; angry, furious; surprised, astonished; disgusted; afraid, scared,
      frightened; contemptuous; anxious; helpless; disappointed; expressionless).  No such
      word, or only negated ones: None.  The noun, not the dataset's class name: the
      text cannot tell "Happy" from "Happiness" (`face_metrics` compares emotion nouns).
    * **au** -> `{"aus": [AU numbers, ascending]}`: every AU mentioned by number ("AU12",
      "AU 12", "action unit 12", "AUs 6, 12 and 25") or by its FACS name ("Lip Corner
      Puller") with at least one mention not negated is active.  `{"aus": []}` when every
      AU mention is negated or the text says none is active ("No facial action unit is
      clearly active", "active AUs: none").  No AU mentioned and no such statement: None.
    * **attribute** -> `{"attributes": [CelebA names, in CelebA order]}`: every one of the
      40 attributes is decided by its first mention: its name with spaces (or its listed
      synonyms: glasses, moustache, man, he/his, stubble, smile, ...) states it present,
      flipped when negated; a word of the opposite ("woman", "female", she/her for Male; "beard" not
      preceded by "no" for No_Beard; "elderly" for Young) states it absent, flipped when
      negated ("does not have a beard" -> No_Beard).  Unmentioned attributes are absent.
      `{"attributes": []}` for "none of the listed attributes"; None when no attribute
      word occurs and no such statement.
    * **age** -> `{"age": number}`: the first age expression with a value in 0..120 years:
      "between 30 and 35", "30-35" and "30 to 35" give the midpoint (32.5), "early/mid/late
      30s" 32/35/38 ("30s" 35), else a plain number (int or decimal; not one followed by
      %).  Integral values are ints.  Negation is not looked at.  None without such a
      number.
    * **deepfake** -> `{"fake": bool}`: the first word stating fake (fake, deepfake,
      manipulated/manipulation, forged, forgery, synthetic, synthesized, tampered,
      doctored, altered, face-swapped, spoofed, counterfeit, AI-generated) or real (real,
      authentic, genuine, unaltered, unmanipulated, untampered, pristine, bona fide)
      decides; negated, it says the opposite ("not fake" -> real, "no sign of
      manipulation" -> real, "not a real face" -> fake).  Neither: None.

    `reference` (the row's label) is accepted so that every caller can pass it; no rule
    needs it (an attribute answer is read against all 40 attributes, as a CelebA label
    decides all 40).
    """
    if task not in _PARSERS:
        raise ValueError(f"unknown task {task!r}; choose from {list(FACE_TASKS)}")
    del reference  # no rule needs it (see above)
    return _PARSERS[task](_normalise(text))


# --------------------------------------------------------------------------- face_metrics


def _emotion(value: Any) -> str:
    """An expression label (official class name or emotion noun) as its emotion noun."""
    name = str(value).strip().lower()
    return EMOTION_OF.get(name, name)


def _label(value: Mapping[str, Any] | str) -> Mapping[str, Any]:
    return json.loads(value) if isinstance(value, str) else value


def _expression_metrics(preds: list, refs: list) -> dict[str, Any]:
    true = [_emotion(r["expression"]) for r in refs]
    pred = [None if p is None else _emotion(p["expression"]) for p in preds]
    return {"uar": uar(pred, true), "war": war(pred, true)}


def _au_metrics(preds: list, refs: list, aus: Sequence[int] | None) -> dict[str, Any]:
    true = [{int(a) for a in r["aus"]} for r in refs]
    labels = sorted(set(aus) if aus is not None else set().union(*true))
    # Unparsed: every AU decision wrong (each active AU missed, each inactive one claimed).
    pred = [set(labels) - t if p is None else {int(a) for a in p["aus"]}
            for p, t in zip(preds, true, strict=True)]
    f1 = f1_per_label(pred, true, labels)
    scored = [v for v in f1.values() if v is not None]
    return {"f1_per_au": f1, "mean_f1": math.fsum(scored) / len(scored) if scored else None}


def _attribute_metrics(preds: list, refs: list) -> dict[str, Any]:
    true = [set(r["attributes"]) for r in refs]
    per: dict[str, float] = {}
    for name in CELEBA_ATTRIBUTES:
        # Unparsed: every attribute wrong.
        right = sum(p is not None and (name in p["attributes"]) == (name in t)
                    for p, t in zip(preds, true, strict=True))
        per[name] = right / len(refs)
    return {"mean_accuracy": math.fsum(per.values()) / len(per), "per_attribute": per}


def _age_metrics(preds: list, refs: list) -> dict[str, Any]:
    pairs = [(float(p["age"]), float(r["age"])) for p, r in zip(preds, refs, strict=True) if p is not None]
    return {"mae": mean_absolute_error([p for p, _ in pairs], [t for _, t in pairs])}


def _deepfake_metrics(preds: list, refs: list) -> dict[str, Any]:
    true = [bool(r["fake"]) for r in refs]
    pred = [None if p is None else bool(p["fake"]) for p in preds]
    return {"accuracy": war(pred, true)}


def face_metrics(rows: Iterable[Mapping[str, Any]], *, aus: Sequence[int] | None = None) -> dict[str, Any]:
    """Face-LLaVA's figures per task, from rows `{"task", "prediction", "reference"}`:
    `prediction` is `parse_answer(...)` (or None), `reference` the row's label (a dict, or
    the `label` column's JSON text).  Every task present gets `n` (its rows) and
    `unparsed` (rows whose prediction is None), and:

    * expression: `uar`, `war` (`uar` / `war`) over emotion nouns (`EMOTION_OF`: "Angry"
      and "Anger", "Happy" and "happiness" are one class); the classes are those present
      in the references;
    * au: `f1_per_au` {AU: F1} (`f1_per_label`) and `mean_f1`, their mean.  The AUs
      scored are `aus` if given (a dataset's evaluated set, e.g. DISFA's), else every AU
      active in some reference; an AU never active and never predicted has F1 None and is
      left out of the mean.  A row's AUs not in the label count as inactive, so score
      DISFA and BP4D rows apart (their coded AUs differ);
    * attribute: `per_attribute` {name: accuracy} over all 40 CelebA attributes (a label
      lists the positive ones, the rest are negative) and `mean_accuracy`, their mean;
    * age: `mae` in years over the parsed answers only (None if none parsed): an age has
      no "wrong class" to count an unparsed answer as, so check `unparsed` beside it;
    * deepfake: `accuracy` of real/fake.

    An unparsed prediction is never dropped: for expression and deepfake it is a class
    that is never right; for au every AU decision is wrong (each active AU missed, each
    other scored AU claimed); for attribute all 40 decisions are wrong; for age it is left
    out of the MAE and counted in `unparsed`.  Raises ValueError for an unknown task.
    """
    grouped: dict[str, tuple[list, list]] = {}
    for row in rows:
        task = row["task"]
        if task not in FACE_TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {list(FACE_TASKS)}")
        preds, refs = grouped.setdefault(task, ([], []))
        prediction = row.get("prediction")
        preds.append(None if prediction is None else _label(prediction))
        refs.append(_label(row["reference"]))
    out: dict[str, Any] = {}
    for task in FACE_TASKS:
        if task not in grouped:
            continue
        preds, refs = grouped[task]
        if task == "expression":
            figures = _expression_metrics(preds, refs)
        elif task == "au":
            figures = _au_metrics(preds, refs, aus)
        elif task == "attribute":
            figures = _attribute_metrics(preds, refs)
        elif task == "age":
            figures = _age_metrics(preds, refs)
        else:
            figures = _deepfake_metrics(preds, refs)
        out[task] = {**figures, "n": len(refs), "unparsed": sum(p is None for p in preds)}
    return out
