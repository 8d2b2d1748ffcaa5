from .referring_visualization_hook import ReferringVisualizationHook

__all__ = ['ReferringVisualizationHook']
