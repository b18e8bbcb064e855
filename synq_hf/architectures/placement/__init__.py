"""Quantizer placement mechanics used by the architecture specs (``synq_hf.architectures``).

``cnn`` holds the two CNN placements (after-ReLU, layer inputs), ``timm_vit`` and ``_hf_attention``
the PSAQ-ViT placements of timm and transformers ViT/DeiT/Swin. Which model gets which placement is
decided by its ``ArchSpec``, not here.
"""
