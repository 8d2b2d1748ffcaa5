from .inference import inference_referring, init_referring_model

__all__ = ['init_referring_model', 'inference_referring']
