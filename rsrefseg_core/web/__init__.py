"""Housekeeping of a web server that runs for weeks (``demo/web_demo.py``):
a folder of its own per request, of which the last few are kept, and the
sweep of the empty entries Gradio's file cache leaves behind."""
from .cache_sweeper import CacheSweeper
from .result_folders import ResultFolders

__all__ = ['CacheSweeper', 'ResultFolders']
