"""Pretrained weights shipped with the package (package data); see ``MODEL_CARD.md`` here
and :mod:`n2s_eds.pretrained`."""
