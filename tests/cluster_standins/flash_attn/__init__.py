"""flash-attn stand-in: the names `openrlhf.models.ring_attn_utils` imports (CUDA kernels in
the real package; reached only with --ds.packing_samples, which the rehearsal does not use)."""

__version__ = "2.8.3"
