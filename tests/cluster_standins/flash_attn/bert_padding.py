"""Names imported by openrlhf.models.ring_attn_utils; packing samples needs the real kernels."""


def _needs_gpu(name):
    def call(*args, **kwargs):
        raise RuntimeError(f"flash_attn.bert_padding.{name} needs flash-attn on a GPU (--ds.packing_samples)")

    return call


index_first_axis = _needs_gpu("index_first_axis")
pad_input = _needs_gpu("pad_input")
rearrange = _needs_gpu("rearrange")
unpad_input = _needs_gpu("unpad_input")
