"""oIoU / mIoU / Pr@X (and gIoU / N-acc / T-acc) for referring segmentation."""
import os.path as osp
from collections import OrderedDict, defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dist import is_main_process
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.utils import mkdir_or_exist
from mmseg.registry import METRICS
from PIL import Image

try:
    from prettytable import PrettyTable
except ImportError:  # pragma: no cover - prettytable comes with mmseg
    PrettyTable = None


def _get(sample: Any, key: str, default=None):
    """Read ``key`` from a dict or a data element (SegDataSample)."""
    if isinstance(sample, dict):
        return sample.get(key, default)
    return getattr(sample, key, default) if hasattr(sample, key) \
        else default


def _seg_data(sample: Any, key: str) -> Optional[torch.Tensor]:
    seg = _get(sample, key)
    if seg is None:
        return None
    data = seg['data'] if isinstance(seg, dict) else seg.data
    return torch.as_tensor(data).squeeze()


@METRICS.register_module()
class ReferringIoUMetric(BaseMetric):
    """Referring-segmentation metrics: oIoU, mIoU and Pr@X.

    For every expression *i*, with the binary prediction :math:`P_i` and the
    ground truth :math:`G_i` compared at the original image resolution
    (pixels where the ground truth equals ``ignore_index`` are excluded):

    - ``IoU_i = |P_i ∩ G_i| / |P_i ∪ G_i|``; an empty union scores
      ``empty_union_iou`` (1.0 by default: a correctly empty prediction.
      LAVT / RMSIN code counts it as 0; RRSIS-D has no empty targets, so
      the choice does not change RRSIS-D numbers);
    - ``oIoU`` (overall / cumulative IoU, "cIoU") =
      ``Σ|P_i ∩ G_i| / Σ|P_i ∪ G_i|``, equal to mmseg ``IoUMetric``'s
      IoU of the foreground class on the same predictions;
    - ``mIoU`` (mean IoU, "gIoU") = mean of ``IoU_i`` over expressions;
    - ``Pr@X`` = share of expressions with ``IoU_i >= X`` (``inclusive``;
      LAVT / RMSIN use ``>=``, RSRefSeg's released code uses ``>``, set
      ``inclusive=False`` to reproduce it).

    With ``generalized=True`` (generalized referring, `GRES
    <https://arxiv.org/abs/2306.00968>`_: an expression may refer to no
    object, or to several), an expression whose ground truth has no target
    pixel is a *no-target* expression and an empty prediction means "not
    in this image":

    - ``gIoU`` = mean of ``IoU_i`` where a no-target expression scores 1 if
      its prediction is empty and 0 otherwise (whatever
      ``empty_union_iou`` says);
    - ``N-acc`` = share of no-target expressions predicted empty
      (TN / (TN + FP), a non-empty prediction being a positive);
    - ``T-acc`` = share of target expressions predicted non-empty
      (TP / (TP + FN)).

    ``oIoU`` keeps summing over every expression, so the pixels predicted
    on no-target expressions count in its union (as in GRES's cIoU).
    ``N-acc`` (``T-acc``) is left out when there is no no-target (target)
    expression.

    All values are percentages, returned as ``<prefix>/oIoU``,
    ``<prefix>/mIoU``, ``<prefix>/Pr@0.5`` ... (prefix ``refer`` by
    default). When samples carry a ``category`` (RRSIS-D, synthetic data),
    a per-category table is logged and ``<prefix>/oIoU/<category>``,
    ``<prefix>/mIoU/<category>`` are returned as well.

    Predictions come from mmseg's ``postprocess_result`` (``pred_sem_seg``
    at ``ori_shape``, 1 = target); the ground truth must be at the original
    size too (``LoadReferringAnnotations`` after ``Resize`` in the test
    pipeline). ``eval_size=(480, 480)`` resizes both (nearest) before
    scoring, as LAVT / RMSIN do, to compare with their numbers.

    ``process`` keeps only per-expression counts (intersection, union,
    category, ids), so results gather cheaply across ranks.

    Args:
        ignore_index (int): Ground-truth label excluded from scoring.
            Defaults to 255.
        empty_union_iou (float): IoU of an expression whose prediction and
            target are both empty. Defaults to 1.0.
        pr_thresholds (Sequence[float]): IoU thresholds of ``Pr@X``.
            Defaults to (0.5, 0.6, 0.7, 0.8, 0.9).
        inclusive (bool): ``Pr@X`` counts ``IoU >= X`` (True) or ``IoU > X``
            (False). Defaults to True.
        eval_size (tuple[int, int], optional): (h, w) to resize prediction
            and ground truth to (nearest) before scoring. Defaults to None
            (original size).
        per_category (bool): Report per-category scores when categories are
            known. Defaults to True.
        output_dir (str, optional): Write each prediction as a PNG (0 / 255)
            named ``<image stem>_ref<ref_id>_sent<sent_id>.png``.
        format_only (bool): Only write predictions (no ground truth needed,
            no scores). Requires ``output_dir``. Defaults to False.
        generalized (bool): Also report ``gIoU``, ``N-acc`` and ``T-acc``
            (see above). Defaults to False.
        collect_device (str): ``'cpu'`` or ``'gpu'``. Defaults to ``'cpu'``.
        prefix (str, optional): Metric-name prefix. Defaults to ``'refer'``.
    """
    default_prefix = 'refer'

    def __init__(self,
                 ignore_index: int = 255,
                 empty_union_iou: float = 1.0,
                 pr_thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9),
                 inclusive: bool = True,
                 eval_size: Optional[Tuple[int, int]] = None,
                 per_category: bool = True,
                 output_dir: Optional[str] = None,
                 format_only: bool = False,
                 generalized: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not 0.0 <= empty_union_iou <= 1.0:
            raise ValueError('empty_union_iou must be in [0, 1], got '
                             f'{empty_union_iou}')
        if any(not 0.0 <= t <= 1.0 for t in pr_thresholds):
            raise ValueError(f'pr_thresholds must be in [0, 1], got '
                             f'{pr_thresholds}')
        if eval_size is not None:
            eval_size = tuple(int(v) for v in eval_size)
            if len(eval_size) != 2 or min(eval_size) <= 0:
                raise ValueError(f'eval_size must be (h, w), got {eval_size}')
        if format_only and not output_dir:
            raise ValueError('format_only=True needs output_dir')
        self.ignore_index = ignore_index
        self.empty_union_iou = float(empty_union_iou)
        self.pr_thresholds = tuple(float(t) for t in pr_thresholds)
        self.inclusive = inclusive
        self.eval_size = eval_size
        self.per_category = per_category
        self.output_dir = output_dir
        self.format_only = format_only
        self.generalized = bool(generalized)
        if output_dir and is_main_process():
            mkdir_or_exist(output_dir)

    # --------------------------------------------------------------- utils
    @staticmethod
    def _name(sample: Any) -> str:
        parts = []
        for key in ('img_path', 'image_id', 'ref_id', 'sent_id'):
            val = _get(sample, key)
            if val is not None:
                parts.append(f'{key}={val}')
        return ', '.join(parts) or 'sample'

    def _resize(self, seg: torch.Tensor) -> torch.Tensor:
        if self.eval_size is None or tuple(seg.shape) == self.eval_size:
            return seg
        out = F.interpolate(
            seg[None, None].float(), size=self.eval_size, mode='nearest')
        return out[0, 0].to(seg.dtype)

    def _output_path(self, sample: Any) -> str:
        img_path = _get(sample, 'img_path')
        stem = osp.splitext(osp.basename(img_path))[0] if img_path else \
            f'image{_get(sample, "image_id", "")}'
        ids = ''.join(f'_{tag}{_get(sample, key)}'
                      for tag, key in (('ref', 'ref_id'), ('sent', 'sent_id'))
                      if _get(sample, key) is not None)
        return osp.join(self.output_dir, f'{stem}{ids}.png')

    def compute_intersection_union(
            self, pred: torch.Tensor,
            gt: torch.Tensor) -> Tuple[int, int, int, int]:
        """Foreground pixel counts of one expression.

        Args:
            pred (torch.Tensor): (H, W) prediction, 1 = target.
            gt (torch.Tensor): (H, W) ground truth, 1 = target,
                ``ignore_index`` excluded.

        Returns:
            tuple[int, int, int, int]: Intersection, union, predicted and
            target pixel counts.
        """
        valid = gt != self.ignore_index
        p = (pred == 1) & valid
        g = (gt == 1) & valid
        return (int((p & g).sum()), int(
            (p | g).sum()), int(p.sum()), int(g.sum()))

    # ---------------------------------------------------------- interface
    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Score each expression of a batch.

        Args:
            data_batch: Unused.
            data_samples (Sequence[dict | SegDataSample]): Model outputs with
                ``pred_sem_seg`` (1, H, W) and, unless ``format_only``,
                ``gt_sem_seg`` (1, H, W), both at the original image size.
        """
        for sample in data_samples:
            pred = _seg_data(sample, 'pred_sem_seg')
            if pred is None:
                raise KeyError(f'{self._name(sample)}: no pred_sem_seg')
            if pred.ndim != 2:
                raise ValueError(f'{self._name(sample)}: pred_sem_seg must '
                                 f'be one (H, W) map, got {tuple(pred.shape)}')
            if self.output_dir:
                mkdir_or_exist(self.output_dir)  # also on non-main ranks
                out = (pred.cpu().numpy() == 1).astype(np.uint8) * 255
                Image.fromarray(out).save(self._output_path(sample))
            if self.format_only:
                continue
            gt = _seg_data(sample, 'gt_sem_seg')
            if gt is None:
                raise KeyError(f'{self._name(sample)}: no gt_sem_seg (use '
                               'format_only=True to only write predictions)')
            gt = gt.to(pred.device)
            if gt.shape != pred.shape:
                raise ValueError(
                    f'{self._name(sample)}: prediction {tuple(pred.shape)} '
                    f'and ground truth {tuple(gt.shape)} differ in size; the '
                    'test pipeline must keep the ground truth at the '
                    'original size (LoadReferringAnnotations after Resize)')
            inter, union, pred_px, target_px = \
                self.compute_intersection_union(
                    self._resize(pred), self._resize(gt))
            self.results.append(
                dict(
                    intersection=inter,
                    union=union,
                    pred_px=pred_px,
                    target_px=target_px,
                    category=_get(sample, 'category'),
                    ref_id=_get(sample, 'ref_id'),
                    sent_id=_get(sample, 'sent_id')))

    def _scores(self, inter: np.ndarray, union: np.ndarray,
                pred_px: np.ndarray, target_px: np.ndarray) -> Dict:
        ious = np.where(union > 0, inter / np.maximum(union, 1),
                        self.empty_union_iou)
        total_u = union.sum()
        scores = OrderedDict(
            oIoU=100.0 *
            (inter.sum() / total_u if total_u > 0 else self.empty_union_iou),
            mIoU=100.0 * ious.mean())
        for t in self.pr_thresholds:
            hit = ious >= t if self.inclusive else ious > t
            scores[f'Pr@{t:g}'] = 100.0 * hit.mean()
        if self.generalized:
            no_target, predicted = target_px == 0, pred_px > 0
            # union 0 only when both are empty: a correct "not here"
            giou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
            scores['gIoU'] = 100.0 * giou.mean()
            if no_target.any():
                scores['N-acc'] = 100.0 * (~predicted[no_target]).mean()
            if (~no_target).any():
                scores['T-acc'] = 100.0 * predicted[~no_target].mean()
        return scores

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Aggregate per-expression counts into the metrics.

        Args:
            results (list[dict]): Gathered outputs of :meth:`process`.

        Returns:
            dict[str, float]: ``oIoU``, ``mIoU``, ``Pr@X`` (percent),
            ``gIoU``, ``N-acc``, ``T-acc`` when ``generalized``, and
            ``oIoU/<category>``, ``mIoU/<category>`` when categories exist.
        """
        if self.format_only:
            print_log(
                f'predictions written to {self.output_dir}', logger='current')
            return OrderedDict()
        if not results:
            raise ValueError('ReferringIoUMetric got no results to score')
        counts = {
            key: np.array([r[key] for r in results], np.float64)
            for key in ('intersection', 'union', 'pred_px', 'target_px')
        }
        overall = self._scores(*counts.values())
        metrics = OrderedDict(
            (k, round(float(v), 4)) for k, v in overall.items())

        rows = [('all', len(results), overall)]
        if self.per_category:
            groups = defaultdict(list)
            for i, r in enumerate(results):
                if r.get('category') is not None:
                    groups[str(r['category'])].append(i)
            for cat in sorted(groups):
                idx = np.array(groups[cat])
                scores = self._scores(*(c[idx] for c in counts.values()))
                rows.append((cat, len(idx), scores))
                metrics[f'oIoU/{cat}'] = round(float(scores['oIoU']), 4)
                metrics[f'mIoU/{cat}'] = round(float(scores['mIoU']), 4)
        print_log('\n' + self.format_table(rows), logger='current')
        return metrics

    @staticmethod
    def format_table(rows: List[Tuple[str, int, Dict]]) -> str:
        """Format (category, count, scores) rows as a text table."""
        keys = list(dict.fromkeys(k for row in rows for k in row[2]))
        header = ['category', 'count'] + keys
        body = [[name, str(n)] +
                [f'{s[k]:.2f}' if k in s else '-' for k in keys]
                for name, n, s in rows]
        if PrettyTable is not None:
            table = PrettyTable(header)
            for row in body:
                table.add_row(row)
            return table.get_string()
        widths = [
            max(len(r[i]) for r in [header] + body)  # pragma: no cover
            for i in range(len(header))
        ]
        return '\n'.join(  # pragma: no cover
            '  '.join(c.rjust(w) for c, w in zip(r, widths))
            for r in [header] + body)
