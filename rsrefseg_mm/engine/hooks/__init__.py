from .compile_hot_paths_hook import CompileHotPathsHook
from .referring_visualization_hook import ReferringVisualizationHook

__all__ = ['CompileHotPathsHook', 'ReferringVisualizationHook']
