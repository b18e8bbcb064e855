"""Integrations with other libraries (registered on ``import synq_hf``)."""
