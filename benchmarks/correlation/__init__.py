"""Correlation of CLIP-S, RefCLIP-S, I0T-S and Ref-I0T-S with human judgments of captions."""
