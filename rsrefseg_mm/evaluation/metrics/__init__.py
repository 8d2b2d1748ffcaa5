from .referring_iou_metric import ReferringIoUMetric

__all__ = ['ReferringIoUMetric']
